"""The score stage: attributions/<explainer>.safetensors -> scores/<explainer>.csv + .json.

Reads only the run's model and the self-contained attribution file (no dataset), after
``verify_chain`` on attributions/<explainer>.json (refuses attributions of a replaced model).
Sensitivity metrics re-explain perturbed inputs with the explainer and parameters recorded in
that JSON. The CSV has one row per sample x metric: ``index,target,metric,value`` (index into
the test split; NaN = dropped, see the JSON).

Engines: ``native`` (default; xairobust.metrics.native: torch on the model's device, capped
passes, shared draws) and ``quantus`` (the reference path through Quantus 0.6). The engine is
part of the identity: the two draw their perturbations from different streams.

Resume: each metric's values and report are written to scores/<explainer>.partial/<metric>.json
as soon as it finishes, stamped with the run's identity hash; a re-run with the same identity
skips finished metrics, and the partial folder is removed once the final CSV and JSON are written.
"""

from __future__ import annotations

import csv
import io
import sys
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
from xairobust.explain.base import reexplain_note, sample_seeds
from xairobust.layout import RunLayout
from xairobust.metrics._quantus import QuantusMetric
from xairobust.metrics.base import Metric, MetricInput
from xairobust.metrics.native import cap_explainer, default_points_per_pass
from xairobust.metrics.presets import resolve_metrics
from xairobust.progress import make_progress
from xairobust.provenance import git_commit, versions
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.runs import WEIGHTS, load_run, read_json, require_run, write_json_atomic, write_text_atomic
from xairobust.runtime import prepare_model
from xairobust.stages.contract import (
    IF_SET,
    STAGES,
    Stage,
    StageIdentity,
    Written,
    config_identity,
    not_identity,
    verify_chain,
)
from xairobust.stages.explain import attribution_paths, build_explainer, load_attributions
from xairobust.stages.options import RuntimeOptions
from xairobust.validate import check_attributions, degenerate_rows, score_finite_rows

FORMAT = 2  # 2: provenance block, engines, per-metric partial results
ENGINES = ("native", "quantus")


@dataclass
class ScoreConfig(RuntimeOptions):
    """Keys of ``xairobust score --config``."""

    explainer: str = "ig"
    metrics: str | list[str] = "paper"  # a preset (paper, quick) or metric names (list or comma-separated)
    metric_params: dict = field(default_factory=dict)  # {metric: {param: value}} over the preset
    drop_changed: bool | None = None  # sets drop_changed of every sensitivity metric
    n: int | None = None  # score only the first n attributed samples
    seed: int = 0
    batch_size: int = not_identity(64)  # samples per chunk / Quantus call (speed only: scores do not depend on it)
    engine: str = "native"  # native (torch, default) | quantus (the reference path)
    # native: model points per pass (IG re-explanations: inputs x n_steps; faithfulness: inputs);
    # 0 = from a memory budget (metrics.native.default_points_per_pass). Speed only.
    points_per_pass: int = not_identity(0)
    # Score attributions holding NaN/inf: the affected samples are skipped (NaN rows, counted in
    # the JSON); without it such a file is refused (xairobust.validate.check_attributions).
    allow_nonfinite: bool = field(default=False, metadata=IF_SET)
    # Score all-zero / constant attributions (no ranking of features; sensitivity ratios become
    # inf): counted in the JSON; without it such a file is refused (check_attributions).
    allow_degenerate: bool = field(default=False, metadata=IF_SET)

    def __post_init__(self) -> None:
        self.check_runtime("score")
        require(self.batch_size >= 1, f"score: --batch-size must be >= 1, got {self.batch_size}")
        require(self.engine in ENGINES, f"score: --engine must be one of {', '.join(ENGINES)}, got '{self.engine}'")
        require(self.points_per_pass >= 0, f"score: --points-per-pass must be >= 0 (0 = auto), got {self.points_per_pass}")
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
            metric.engine = conf.engine
            metric.points_per_pass = conf.points_per_pass
        out[name] = metric
    shared: dict[Any, Any] = {}  # one run's shared draws (Max/Avg perturbations, noise floors)
    for metric in out.values():
        if isinstance(metric, QuantusMetric):
            metric.shared = shared
    for metric in out.values():  # e.g. RIS/ROS/RRS ask Max/Avg-Sensitivity's pass for their ratios
        declare = getattr(metric, "declare_shared", None)
        if declare is not None:
            declare(shared)
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
    # the native engine re-explains device tensors directly with the same seeds
    explain.explainer, explain.base_seed, explain.score_seed = explainer, int(base_seed), int(score_seed)  # type: ignore[attr-defined]
    return explain


def score_paths(run_dir: Path, explainer: str) -> tuple[Path, Path]:
    return RunLayout(run_dir).score(explainer)


def partial_dir(run_dir: Path, explainer: str) -> Path:
    return RunLayout(run_dir).score_partial(explainer)


def _csv(indices: np.ndarray, targets: np.ndarray, results: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "target", "metric", "value"])
    for name, values in results.items():
        for i, t, v in zip(indices, targets, values, strict=True):
            w.writerow([int(i), int(t), name, repr(float(v))])
    return buf.getvalue()


def _metric_report(name: str, metric: Metric, values: np.ndarray, wall: float) -> dict[str, Any]:
    m = METRICS.meta(name)
    finite = np.isfinite(values).any()
    # Counted here, whatever the metric reports: an inf (e.g. Max-Sensitivity of an all-zero map)
    # or NaN score is never a silent part of a mean.
    nonfinite = {"nan": int(np.isnan(values).sum()), "inf": int(np.isinf(values).sum())}
    return {
        "params": cfg.to_dict(metric.params),
        "category": m.get("category"),
        "direction": m.get("direction"),
        "label": m.get("label"),
        "mean": float(np.nanmean(values)) if finite else None,
        "std": float(np.nanstd(values)) if finite else None,
        "wall_time_s": round(wall, 3),
        "diagnostics": {**metric.diagnostics(), "nonfinite_scores": nonfinite},
    }


def _run_metrics(
    metrics: dict[str, Metric],
    inp: MetricInput,
    quiet: bool,
    what: str = "",
    partial: Path | None = None,
    stamp: str = "",
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every metric on ``inp``, with a progress bar each: (values per metric, JSON report).

    With ``partial``, a metric whose partial file carries ``stamp`` is read back instead of
    recomputed, and each computed metric is written there as soon as it finishes.
    """
    results: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {}
    n = len(inp.x)
    with make_progress(quiet) as progress:
        for name, metric in metrics.items():
            done = _read_partial(partial, name, stamp, n)
            if done is not None:
                results[name], report[name] = done
                continue
            task = progress.add_task(f"{what}{name}", total=n, info="")
            if isinstance(metric, QuantusMetric):
                metric.on_chunk = lambda k, task=task: progress.advance(task, k)
            start = time.perf_counter()
            values = metric.score(inp)
            progress.update(task, completed=n)
            results[name] = values
            report[name] = _metric_report(name, metric, values, time.perf_counter() - start)
            if partial is not None:
                write_json_atomic(
                    partial / f"{name}.json",
                    {"identity_hash": stamp, "values": [repr(float(v)) for v in values], "report": report[name]},
                )
    return results, report


def _read_partial(partial: Path | None, name: str, stamp: str, n: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    if partial is None:
        return None
    path = partial / f"{name}.json"
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except Exception:  # a torn or foreign file: recompute
        return None
    if doc.get("identity_hash") != stamp or len(doc.get("values", [])) != n:
        return None
    return np.array([float(v) for v in doc["values"]], dtype=np.float64), doc["report"]


def _prepare(run_dir: Path, conf: ScoreConfig, metrics: dict[str, Metric]):
    """(model, run meta, device, attribution tensors and meta, explainer, n) for a score run."""
    tensors, attr_meta = load_attributions(run_dir, conf.explainer)
    model, meta = load_run(run_dir)
    # Before any model pass (the pass-size probe below runs the model on the file's input shape).
    # A control explainer's map may be constant by design (the 'constant' control): counted, not refused.
    control = conf.explainer in EXPLAINERS and bool(EXPLAINERS.meta(conf.explainer).get("control"))
    skip = check_attributions(tensors, meta, attr_meta, attribution_paths(run_dir, conf.explainer)[0], conf.allow_nonfinite,
                              conf.allow_degenerate, allow_constant=control)
    if meta["dataset"]["info"]["task"] == "regression" and any(
        getattr(m.params, "drop_changed", False) for m in metrics.values()
    ):
        raise ConfigError("score: --drop-changed compares predicted classes; it has no meaning for a regression model")
    device = pick_device(conf.device)
    prepare_model(model.to(device).eval(), tuple(tensors["inputs"].shape[1:]), conf.precision, conf.channels_last)
    n = len(tensors["indices"]) if conf.n is None else min(conf.n, len(tensors["indices"]))
    background = tensors.get("background")
    explainer = build_explainer(conf.explainer, attr_meta["params"], None if background is None else background.to(device))
    ppp = conf.points_per_pass or default_points_per_pass(model, tuple(tensors["inputs"].shape[1:]), device)
    cap_explainer(explainer, ppp)  # both engines: no explainer pass above ppp points
    return model, meta, device, tensors, attr_meta, explainer, n, [i for i in skip if i < n]


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


def _explain_hint(run_dir: Path, explainer: str) -> str:
    return f"xairobust explain --run {run_dir} --explainer {explainer}"


@STAGES.register("score")
class ScoreStage(Stage, name="score", Config=ScoreConfig, format=FORMAT, per="explainer", after="explain", order=3,
                        report_input=True, hint_options=("explainer",)):
    """attributions/<explainer>.safetensors -> scores/<explainer>.csv + .json (module docstring)."""

    def inputs(self, run_dir: Path, conf: ScoreConfig) -> dict[str, Path]:
        tensors_path, json_path = attribution_paths(Path(run_dir), conf.explainer)
        if not tensors_path.is_file() or not json_path.is_file():
            load_attributions(run_dir, conf.explainer)  # the RunError that says how to make them
        return {"weights": require_run(run_dir) / WEIGHTS, "attributions": tensors_path}

    def identity(self, run_dir: Path, conf: ScoreConfig) -> dict[str, Any]:
        preset, metrics = build_metrics(conf)
        _, json_path = attribution_paths(Path(run_dir), conf.explainer)
        attr_meta = read_json(json_path) if json_path.is_file() else {}
        # metrics, metric_params and drop_changed are recorded resolved: the metrics' validated params
        return {
            **config_identity(conf, drop=("metrics", "metric_params", "drop_changed")),
            "explainer_params": attr_meta.get("params"),
            "preset": preset,
            "metrics": {name: cfg.to_dict(m.params) for name, m in metrics.items()},
        }

    def outputs(self, run_dir: Path, conf: ScoreConfig) -> list[Path]:
        return list(score_paths(Path(run_dir), conf.explainer))

    def compute(self, run_dir: Path, conf: ScoreConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _score(run_dir, conf, resolved, quiet)


def _score(run_dir: Path, conf: ScoreConfig, resolved: StageIdentity, quiet: bool) -> Written:
    _, attr_json = attribution_paths(run_dir, conf.explainer)
    # The attribution file itself is score's input (its sha256 goes into the scores' provenance,
    # and its structure is checked below); report refuses it when it differs from what explain wrote.
    verify_chain(attr_json, run_dir, _explain_hint(run_dir, conf.explainer), outputs=False)
    preset, metrics = build_metrics(conf)
    refuses = EXPLAINERS.meta(conf.explainer).get("quantus_refuses") if conf.explainer in EXPLAINERS else None
    if conf.engine == "quantus" and refuses:
        raise ConfigError(f"score: --engine quantus cannot score explainer '{conf.explainer}': {refuses}")
    start = time.perf_counter()
    model, meta, device, tensors, attr_meta, explainer, n, skip = _prepare(run_dir, conf, metrics)
    note = reexplain_note(conf.explainer, [m for m in metrics if METRICS.meta(m).get("category") == "sensitivity"])
    if note:  # like report's warnings: printed also with --quiet (batch logs keep it), and kept in the JSON
        print(note, file=sys.stderr)
    inp = _metric_input(model, meta, device, tensors, attr_meta, explainer, n, conf, tensors["attributions"][:n].numpy())
    ppp = conf.points_per_pass or default_points_per_pass(model, tuple(inp.x.shape[1:]), device)
    for metric in metrics.values():
        if isinstance(metric, QuantusMetric):
            metric.points_per_pass = ppp
    partial = partial_dir(run_dir, conf.explainer)
    results, report = score_finite_rows(_run_metrics, metrics, inp, quiet, skip, partial=partial, stamp=resolved.hash)
    csv_path, _ = score_paths(run_dir, conf.explainer)
    write_text_atomic(csv_path, _csv(inp.indices, inp.y, results))
    tensors_path, _ = attribution_paths(run_dir, conf.explainer)
    doc = {
        "format": FORMAT,
        "explainer": conf.explainer,
        "explainer_params": attr_meta["params"],
        "explainer_stochastic": bool(type(explainer).stochastic),
        "preset": preset,
        "engine": conf.engine,
        "metrics": report,
        "seed": conf.seed,
        "n": n,
        "batch_size": conf.batch_size,
        "points_per_pass": ppp,
        # the scores' precision and that of the attributions they score (report refuses to mix either)
        "precision": conf.precision,
        "explainer_precision": attr_meta.get("precision", "fp32"),
        "normalisation": "per sample: a / max|a| of that sample (Quantus' default divides by the batch max)",
        "device": str(device),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "attributions": {"path": str(tensors_path), "sha256": resolved.inputs["attributions"]["sha256"]},
        "degenerate_attributions": _degenerate(inp),
        **({"notes": [note]} if note else {}),
        "config_hash": resolved.hash[:8],
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _remove_partial(partial)  # the per-metric results are all in the CSV now
    return Written(doc, (csv_path,))  # a hand-edited CSV is refused on read


def _degenerate(inp: MetricInput) -> dict[str, Any]:
    """All-zero / constant attributions among the scored samples (scored only with --allow-degenerate)."""
    zero, constant = degenerate_rows(torch.from_numpy(np.asarray(inp.a)))
    return {"all_zero": len(zero), "constant": len(constant),
            "indices": [int(inp.indices[i]) for i in sorted(zero + constant)]}


def _remove_partial(partial: Path) -> None:
    if partial.is_dir():
        for f in partial.iterdir():
            f.unlink()
        partial.rmdir()


def score(run_dir: str | Path, conf: ScoreConfig, quiet: bool = False) -> Path:
    """Score the stored attributions; no-op when the scores are current for this config and inputs.
    Returns the scores' CSV."""
    ScoreStage().run(Path(run_dir), conf, quiet)
    return score_paths(Path(run_dir), conf.explainer)[0]
