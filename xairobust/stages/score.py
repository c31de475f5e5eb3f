"""The score stage: attributions/<explainer>.safetensors -> scores/<explainer>.csv + .json.

Reads only the run's model and the self-contained attribution file (no dataset). Sensitivity
metrics re-explain perturbed inputs with the explainer and parameters recorded in
attributions/<explainer>.json. The CSV has one row per sample x metric:
``index,target,metric,value`` (index into the test split; NaN = dropped, see the JSON).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xairobust import config as cfg
from xairobust.config import require
from xairobust.devices import pick_device
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics._quantus import QuantusMetric
from xairobust.metrics.base import Metric, MetricInput
from xairobust.metrics.presets import resolve_metrics
from xairobust.progress import make_progress
from xairobust.provenance import config_hash, git_commit, versions
from xairobust.registry import METRICS
from xairobust.runs import file_sha256, load_run, read_json, write_json_atomic, write_text_atomic
from xairobust.stages.explain import attribution_paths, build_explainer, load_attributions
from xairobust.validate import check_attributions, score_finite_rows

FORMAT = 1


@dataclass
class ScoreConfig:
    """Keys of ``xairobust score --config``."""

    explainer: str = "ig"
    metrics: str | list[str] = "paper"  # a preset (paper, quick) or metric names (list or comma-separated)
    metric_params: dict = field(default_factory=dict)  # {metric: {param: value}} over the preset
    drop_changed: bool | None = None  # sets drop_changed of every sensitivity metric
    n: int | None = None  # score only the first n attributed samples
    seed: int = 0
    batch_size: int = 64  # samples per Quantus call (speed only: scores do not depend on it)
    device: str = "auto"
    # Score attributions holding NaN/inf: the affected samples are skipped (NaN rows, counted in
    # the JSON); without it such a file is refused (xairobust.validate.check_attributions).
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"score: --batch-size must be >= 1, got {self.batch_size}")
        require(self.n is None or self.n >= 1, f"score: --n must be >= 1, got {self.n}")
        if not isinstance(self.metrics, str):
            self.metrics = ",".join(self.metrics)
        for name, params in self.metric_params.items():
            require(isinstance(params, dict), f"score: metric_params.{name} must be a mapping of parameter: value")


def build_metrics(conf: ScoreConfig) -> tuple[str | None, dict[str, Metric]]:
    """The metrics to compute, with validated params (preset, then metric_params, then flags)."""
    preset, chosen = resolve_metrics(conf.metrics)
    for name in conf.metric_params:
        if name not in chosen:
            METRICS.get(name)  # did-you-mean for typos
            raise ConfigError(f"score: metric_params for '{name}', which is not among --metrics ({', '.join(chosen)})")
    out: dict[str, Metric] = {}
    for name, params in chosen.items():
        cls = METRICS.get(name)
        merged = {**params, **conf.metric_params.get(name, {})}
        if conf.drop_changed is not None and "drop_changed" in {f for f in cls.Params.__dataclass_fields__}:
            merged["drop_changed"] = conf.drop_changed
        metric = cls(cfg.build(cls.Params, merged, f"metric '{name}'"))
        if isinstance(metric, QuantusMetric):
            metric.batch_size = conf.batch_size
        out[name] = metric
    return preset, out


def make_explain(model_device: torch.device, explainer: Any, base_seed: int, score_seed: int) -> Callable[..., np.ndarray]:
    """``MetricInput.explain``: the scored explainer on numpy inputs, seeded per sample and draw.

    ``draw=0`` reproduces the stored attributions' seeds; for a stochastic explainer, draw k > 0
    (the k-th re-explanation inside a metric) uses seeds from (explain seed, score seed, k), so
    it gets fresh, reproducible draws for every perturbation. A deterministic explainer always
    uses the stored seeds (IG's uniform-noise baseline stays the sample's own baseline).
    """
    stochastic = bool(type(explainer).stochastic)

    def explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, indices: np.ndarray, draw: int = 0) -> np.ndarray:
        seed = base_seed
        if stochastic and draw:
            seed = int(np.random.default_rng([base_seed, score_seed, draw]).integers(0, 2**62))
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=model_device)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=model_device)
        a = explainer.attribute(model, x, t, sample_seeds(seed, torch.as_tensor(np.asarray(indices))))
        return a.detach().float().cpu().numpy()

    explain.stochastic = stochastic  # type: ignore[attr-defined]
    return explain


def score_paths(run_dir: Path, explainer: str) -> tuple[Path, Path]:
    base = Path(run_dir) / "scores"
    return base / f"{explainer}.csv", base / f"{explainer}.json"


def _csv(indices: np.ndarray, targets: np.ndarray, results: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "target", "metric", "value"])
    for name, values in results.items():
        for i, t, v in zip(indices, targets, values, strict=True):
            w.writerow([int(i), int(t), name, repr(float(v))])
    return buf.getvalue()


def _run_metrics(metrics: dict[str, Metric], inp: MetricInput, quiet: bool, what: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every metric on ``inp``, with a progress bar each: (values per metric, JSON report)."""
    results: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {}
    n = len(inp.x)
    with make_progress(quiet) as progress:
        for name, metric in metrics.items():
            task = progress.add_task(f"{what}{name}", total=n, info="")
            if isinstance(metric, QuantusMetric):
                metric.on_chunk = lambda k, task=task: progress.advance(task, k)
            start = time.perf_counter()
            values = metric.score(inp)
            progress.update(task, completed=n)
            results[name] = values
            m = METRICS.meta(name)
            finite = np.isfinite(values).any()
            report[name] = {
                "params": cfg.to_dict(metric.params),
                "category": m.get("category"),
                "direction": m.get("direction"),
                "label": m.get("label"),
                "mean": float(np.nanmean(values)) if finite else None,
                "std": float(np.nanstd(values)) if finite else None,
                "wall_time_s": round(time.perf_counter() - start, 3),
                "diagnostics": metric.diagnostics(),
            }
    return results, report


def _prepare(run_dir: Path, conf: ScoreConfig, metrics: dict[str, Metric]):
    """(model, run meta, device, attribution tensors and meta, explainer, n) for a score run."""
    tensors, attr_meta = load_attributions(run_dir, conf.explainer)
    model, meta = load_run(run_dir)
    if meta["dataset"]["info"]["task"] == "regression" and any(
        getattr(m.params, "drop_changed", False) for m in metrics.values()
    ):
        raise ConfigError("score: --drop-changed compares predicted classes; it has no meaning for a regression model")
    device = pick_device(conf.device)
    model.to(device).eval()
    n = len(tensors["indices"]) if conf.n is None else min(conf.n, len(tensors["indices"]))
    background = tensors.get("background")
    explainer = build_explainer(conf.explainer, attr_meta["params"], None if background is None else background.to(device))
    if hasattr(explainer, "chunk_size"):
        explainer.chunk_size = conf.batch_size
    return model, meta, device, tensors, attr_meta, explainer, n


def _metric_input(model, meta, device, tensors, attr_meta, explainer, n, conf: ScoreConfig, a: np.ndarray) -> MetricInput:
    value_range = meta["dataset"]["info"].get("value_range")
    return MetricInput(
        model=model,
        x=tensors["inputs"][:n].numpy(),
        y=tensors["targets"][:n].numpy(),
        a=a,
        indices=tensors["indices"][:n].numpy(),
        explain=make_explain(device, explainer, int(attr_meta["seed"]), conf.seed),
        seed=conf.seed,
        device=device,
        value_range=tuple(value_range) if value_range else None,
    )


def _identity(run_dir: Path, conf: ScoreConfig, metrics: dict[str, Metric]) -> dict[str, Any]:
    tensors_path, _ = attribution_paths(run_dir, conf.explainer)
    if not tensors_path.is_file():
        load_attributions(run_dir, conf.explainer)  # the RunError that says how to make them
    return {
        "explainer": conf.explainer,
        "metrics": {name: cfg.to_dict(m.params) for name, m in metrics.items()},
        "n": conf.n,
        "seed": conf.seed,
        "attributions_sha256": file_sha256(tensors_path),
    }


def _doc(conf: ScoreConfig, preset, report, attr_meta, explainer, n, device, identity, run_dir: Path, **more) -> dict[str, Any]:
    tensors_path, _ = attribution_paths(run_dir, conf.explainer)
    return {
        "format": FORMAT,
        "explainer": conf.explainer,
        "explainer_params": attr_meta["params"],
        "explainer_stochastic": bool(type(explainer).stochastic),
        "preset": preset,
        "metrics": report,
        "seed": conf.seed,
        "n": n,
        "batch_size": conf.batch_size,
        "normalisation": "per sample: a / max|a| of that sample (Quantus' default divides by the batch max)",
        "device": str(device),
        "attributions": {"path": str(tensors_path), "sha256": identity["attributions_sha256"]},
        **more,
        "config_hash": config_hash(identity),
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def score(run_dir: str | Path, conf: ScoreConfig, quiet: bool = False) -> Path:
    """Score the stored attributions; no-op when the scores exist for this config and file."""
    run_dir = Path(run_dir)
    preset, metrics = build_metrics(conf)
    identity = _identity(run_dir, conf, metrics)
    csv_path, json_path = score_paths(run_dir, conf.explainer)
    if csv_path.is_file() and json_path.is_file() and read_json(json_path).get("config_hash") == config_hash(identity):
        return csv_path
    model, meta, device, tensors, attr_meta, explainer, n = _prepare(run_dir, conf, metrics)
    skip = [i for i in check_attributions(tensors, meta, attr_meta, attribution_paths(run_dir, conf.explainer)[0], conf.allow_nonfinite) if i < n]
    inp = _metric_input(model, meta, device, tensors, attr_meta, explainer, n, conf, tensors["attributions"][:n].numpy())
    results, report = score_finite_rows(_run_metrics, metrics, inp, quiet, skip)
    write_text_atomic(csv_path, _csv(inp.indices, inp.y, results))
    write_json_atomic(json_path, _doc(conf, preset, report, attr_meta, explainer, n, device, identity, run_dir))
    return csv_path
