"""The explain stage: run directory -> attributions/<explainer>.safetensors + <explainer>.json.

The safetensors file is self-contained (inputs, targets, indices, attributions, for classifiers
``correct`` -- whether the model's prediction on the clean input equals the label -- and, for
explainers that draw baselines from the training data, the ``background`` they drew from), so
``score`` and ``report`` never need the dataset.

Sample choice (deterministic, documented): ``selection=stratified`` (default for classifiers)
takes the test split in its stored order and picks classes round-robin -- the first sample of
each class, then the second of each, ... -- until ``n``; ``first`` takes the first ``n``;
``random`` a permutation seeded by ``seed``. Indices are stored sorted; a larger ``n`` with
``stratified`` or ``first`` contains the smaller one's samples.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.base import get_dataset
from xairobust.data.selection import select_indices
from xairobust.devices import pick_device
from xairobust.errors import ConfigError
from xairobust.explain.base import Explainer, sample_seeds, wants_background
from xairobust.layout import RunLayout
from xairobust.progress import make_progress
from xairobust.provenance import git_commit, versions
from xairobust.registry import EXPLAINERS
from xairobust.runs import WEIGHTS, load_run, read_json, require_run, save_tensors
from xairobust.runtime import prepare_model, usual_layout
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, config_identity, not_identity
from xairobust.stages.options import RuntimeOptions

FORMAT = 1


@dataclass
class ExplainConfig(RuntimeOptions):
    """Keys of ``xairobust explain --config``."""

    explainer: str = "ig"
    params: dict = field(default_factory=dict)  # the explainer's Params (e.g. n_steps)
    n: int = 200
    target: str = "pred"  # pred | label | an output index
    selection: Literal["stratified", "first", "random"] = "stratified"
    seed: int = 0
    background_size: int = 200  # training inputs for data-baseline explainers
    batch_size: int = not_identity(32)  # samples per explainer call (memory only; results do not depend on it)
    # model points per explainer pass (IG: samples x n_steps); 0 = from a memory budget
    # (xairobust.metrics.native.default_points_per_pass). Speed/memory only.
    points_per_pass: int = not_identity(0)
    data_dir: str | None = not_identity(None)

    def __post_init__(self) -> None:
        self.check_runtime("explain")
        require(self.n >= 1, f"explain: --n must be >= 1, got {self.n}")
        require(self.batch_size >= 1, f"explain: --batch-size must be >= 1, got {self.batch_size}")
        require(self.points_per_pass >= 0, f"explain: --points-per-pass must be >= 0 (0 = auto), got {self.points_per_pass}")
        require(self.background_size >= 1, f"explain: --background-size must be >= 1, got {self.background_size}")
        t = str(self.target)
        require(
            t in ("pred", "label") or t.isdigit(),
            f"explain: --target must be pred, label or an output index (0, 1, ...), got '{self.target}'",
        )
        self.target = t

    def identity(self, explainer_params: dict[str, Any]) -> dict[str, Any]:
        """What determines the attributions: the counting fields, params validated."""
        return {**config_identity(self), "params": explainer_params}


def build_explainer(name: str, params: dict[str, Any], background: Tensor | None = None) -> Explainer:
    cls = EXPLAINERS.get(name)
    return cls(cfg.build(cls.Params, params, f"explainer '{name}'"), background)


def resolve_targets(mode: str, outputs: Tensor, labels: Tensor, task: str, num_outputs: int) -> Tensor:
    """Explained output per sample: predicted class, label, or a fixed output index."""
    if mode.isdigit():
        k = int(mode)
        if k >= num_outputs:
            raise ConfigError(f"explain: --target {k} is out of range; the model has {num_outputs} outputs (0..{num_outputs - 1})")
        return torch.full((len(outputs),), k, dtype=torch.int64)
    if task == "regression":
        if num_outputs == 1:
            return torch.zeros(len(outputs), dtype=torch.int64)
        raise ConfigError(
            f"explain: a regression model has no predicted class; give --target INDEX (0..{num_outputs - 1}), the output to explain"
        )
    if mode == "pred":
        return outputs.argmax(1).to(torch.int64)
    return labels.to(torch.int64)


def attribution_paths(run_dir: Path, explainer: str) -> tuple[Path, Path]:
    return RunLayout(run_dir).attribution(explainer)


def _summary(values: Tensor) -> dict[str, float]:
    v = values.double().abs()
    return {"mean_abs": float(v.mean()), "median_abs": float(v.median()), "max_abs": float(v.max())}


@STAGES.register("explain")
class ExplainStage(Stage, name="explain", Config=ExplainConfig, format=FORMAT, per="explainer", after="train",
                          order=2, hint_options=("explainer",), explainer_params="params"):
    """run directory -> attributions/<explainer>.safetensors + .json (see the module docstring)."""

    def inputs(self, run_dir: Path, conf: ExplainConfig) -> dict[str, Path]:
        found = {"weights": require_run(run_dir) / WEIGHTS}
        cls = EXPLAINERS.get(conf.explainer)
        hook = getattr(cls, "stage_inputs", None)  # e.g. the blur control's auto sigma reads stored maps
        if hook is not None:
            found.update(hook(cfg.build(cls.Params, conf.params, f"explainer '{conf.explainer}'"), Path(run_dir)))
        return found

    def planned_inputs(self, run_dir: Path, conf: ExplainConfig) -> dict[str, Path]:
        cls = EXPLAINERS.get(conf.explainer)
        hook = getattr(cls, "planned_inputs", None)  # e.g. the blur control's base and match maps
        if hook is None:
            return {}
        return hook(cfg.build(cls.Params, conf.params, f"explainer '{conf.explainer}'"), Path(run_dir))

    def identity(self, run_dir: Path, conf: ExplainConfig) -> dict[str, Any]:
        explainer_cls = EXPLAINERS.get(conf.explainer)
        params = cfg.build(explainer_cls.Params, conf.params, f"explainer '{conf.explainer}'")
        return conf.identity(cfg.to_dict(params))

    def outputs(self, run_dir: Path, conf: ExplainConfig) -> list[Path]:
        return list(attribution_paths(Path(run_dir), conf.explainer))

    def compute(self, run_dir: Path, conf: ExplainConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _explain(run_dir, conf, resolved, quiet)


def explain(run_dir: str | Path, conf: ExplainConfig, quiet: bool = False) -> Path:
    """Write the attributions of ``conf.n`` test samples; no-op when they are current.
    Returns the attributions' safetensors file."""
    ExplainStage().run(Path(run_dir), conf, quiet)
    return attribution_paths(Path(run_dir), conf.explainer)[0]


def _explain(run_dir: Path, conf: ExplainConfig, resolved: StageIdentity, quiet: bool) -> Written:
    model, meta = load_run(run_dir)
    explainer_cls = EXPLAINERS.get(conf.explainer)
    params = cfg.build(explainer_cls.Params, conf.params, f"explainer '{conf.explainer}'")
    params_dict = cfg.to_dict(params)
    tensors_path, json_path = attribution_paths(run_dir, conf.explainer)

    info = meta["dataset"]["info"]
    task, num_outputs = info["task"], int(info["num_outputs"])
    if conf.target == "label" and task == "regression":
        raise ConfigError("explain: --target label needs a classifier; give --target INDEX for a regression model")
    device = pick_device(conf.device)
    model.to(device)
    ds_name, ds_kwargs = meta["dataset"]["name"], meta["dataset"].get("kwargs", {})
    test = get_dataset(ds_name, "test", conf.data_dir, **ds_kwargs)
    labels = test.y if task == "classification" else None
    indices = select_indices(labels, len(test), conf.n, conf.selection, conf.seed)
    x = test.inputs(indices)
    y = test.targets(indices)
    prepare_model(model, tuple(x.shape[1:]), conf.precision, conf.channels_last)

    background = None
    if wants_background(conf.explainer, params):
        train = get_dataset(ds_name, "train", conf.data_dir, **ds_kwargs)
        g = torch.Generator().manual_seed(conf.seed)
        bidx = torch.randperm(len(train), generator=g)[: conf.background_size].sort().values
        background = train.inputs(bidx)

    start = time.perf_counter()
    explainer = explainer_cls(params, None if background is None else background.to(device))
    prepare = getattr(explainer, "prepare", None)
    if prepare is not None:  # e.g. the blur control resolves its auto sigma (recorded in params)
        prepare(run_dir)
        params_dict = cfg.to_dict(explainer.params)
    from xairobust.metrics.native import cap_explainer, default_points_per_pass

    model.eval()
    ppp = conf.points_per_pass or default_points_per_pass(model, tuple(x.shape[1:]), device)
    cap_explainer(explainer, ppp)  # every model pass <= ppp points (IG: chunk x n_steps)
    with torch.no_grad():
        outputs = torch.cat([model(x[s : s + 256].to(device)).float().cpu() for s in range(0, len(x), 256)])
    targets = resolve_targets(conf.target, outputs, y, task, num_outputs)
    seeds = sample_seeds(conf.seed, indices)

    attributions, extras = _attribute_all(model, explainer, x, targets, seeds, conf.batch_size, device, quiet)
    wall = time.perf_counter() - start

    tensors = {"inputs": x, "targets": targets, "indices": indices, "attributions": attributions}
    if task == "classification":
        # Per sample: does this model classify the clean input correctly? Recorded here, the one
        # stage that has the prediction and the label, so reports can restrict a comparison to the
        # samples every model gets right (`report --common-correct`, issue 19) without the dataset.
        tensors["correct"] = outputs.argmax(1) == y
    tensors.update({f"extra.{k}": v for k, v in extras.items()})
    if background is not None:
        tensors["background"] = background
    save_tensors(tensors_path, tensors)
    zero = int((attributions.flatten(1).abs().sum(1) == 0).sum())
    if zero:  # e.g. LIME's Lasso dropping every segment, Grad-CAM's ReLU on negative evidence
        hint = f"; {explainer_cls.zero_hint}" if explainer_cls.zero_hint else ""
        print(f"warning: {conf.explainer}: {zero} of {len(attributions)} samples have all-zero attributions"
              f" (metrics that rank features cannot score them){hint}", file=sys.stderr)
    doc = {
        "format": FORMAT,
        "explainer": conf.explainer,
        "all_zero_attributions": zero,
        "params": params_dict,
        **({"details": explainer.details} if getattr(explainer, "details", None) else {}),
        "stochastic": bool(explainer_cls.stochastic),
        "seed": conf.seed,
        "seeds": "per sample: sample_seeds(seed, index) = (index * 1000003 + seed) mod 2^62",
        "target": conf.target,
        "n": int(len(indices)),
        "split_size": int(len(test)),  # score checks the stored indices against it
        "selection": conf.selection,
        "split": "test",
        "background_size": None if background is None else int(len(background)),
        "task": task,
        "prediction_matches_label": (
            float((outputs.argmax(1) == y).float().mean()) if task == "classification" else None
        ),
        "extras": {k: _summary(v) for k, v in extras.items()},
        "batch_size": conf.batch_size,
        "precision": conf.precision,
        "device": str(device),
        "wall_time_s": round(wall, 3),
        "run": {"path": str(run_dir), "weights_sha256": meta.get("weights_sha256")},
        "config_hash": resolved.hash[:8],
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Written(doc, (tensors_path,))  # the contract writes the document last


def _attribute_all(
    model: nn.Module,
    explainer: Explainer,
    x: Tensor,
    targets: Tensor,
    seeds: Tensor,
    batch_size: int,
    device: torch.device,
    quiet: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Attributions in chunks of ``batch_size`` samples, on CPU, with a progress bar."""
    outs: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    with make_progress(quiet) as progress:
        task = progress.add_task("explain", total=len(x), info="")
        for s in range(0, len(x), batch_size):
            sl = slice(s, s + batch_size)
            a = explainer.attribute(model, x[sl].to(device), targets[sl].to(device), seeds[sl])
            outs.append(usual_layout(a.detach().float().cpu()))
            for k, v in explainer.extras().items():
                extras.setdefault(k, []).append(v.detach().float().cpu())
            progress.advance(task, len(x[sl]))
    return torch.cat(outs), {k: torch.cat(v) for k, v in extras.items()}


def load_attributions(run_dir: str | Path, explainer: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, metadata) of a finished explain stage, or a RunError saying how to make it."""
    from xairobust.errors import RunError
    from xairobust.runs import load_tensors

    tensors_path, json_path = attribution_paths(Path(run_dir), explainer)
    if not json_path.is_file() or not tensors_path.is_file():
        raise RunError(
            f"no attributions for explainer '{explainer}' in {run_dir}; run"
            f" `xairobust explain --run {run_dir} --explainer {explainer}` first"
        )
    from xairobust.validate import check_attribution_doc

    doc = read_json(json_path)
    check_attribution_doc(doc, json_path)
    return load_tensors(tensors_path), doc
