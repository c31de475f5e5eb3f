"""The tune-lambda stage: NsLoss's lambda for a standard run by the paper's protocol (Moshe et al., sec. 4.4).

1. NsLoss_0 = mean NsLoss of the standard model over 10 random training and 10 random
   validation batches (the test split stands in where a dataset has no validation split:
   NsLoss uses no labels, so nothing about test labels leaks into the choice).
2. lambda_0 = log2(C) / NsLoss_0.
3. Binary search (geometric, as lambda is a scale) within one order of magnitude of lambda_0:
   each candidate fine-tunes a fresh copy of the standard model for one epoch; the candidate
   is too high when the training cross-entropy reaches log2(C), the cross-entropy of a random
   guess. log2(C) is that value in bits, so the cross-entropy is compared in bits too
   (CE_nats / ln 2): compared in nats, a model that collapsed to a uniform guess sits at
   ln(C) < log2(C) and would never count as too high. "Reaches" is read on the mean over a
   sliding window of batches (``--window``), so that one noisy batch does not decide, and
   ``--tolerance`` (default 0) optionally counts CE >= (1 - tol) * log2(C) as reached.

The chosen lambda is the largest candidate that was not too high. Writes a JSON file with
the chosen value and the whole search trace.

The computation lives here (the command ``xairobust tune-lambda`` only parses options and
prints); its candidates train with the one training loop (``stages.train.train_epoch``).
``TuneLambdaStage`` gives it the contract's shape, so a zoo can run it per run
(``tune-lambda: {eps_ns: 0.5}``) and its JSON carries the provenance of the weights it was
computed from.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xairobust import config as cfg
from xairobust.layout import RunLayout
from xairobust.runs import WEIGHTS, require_run
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, not_identity


@dataclass
class TuneLambdaConfig:
    """The options of ``xairobust tune-lambda`` (``nsloss``: NsLoss parameters such as eps_ns, layers)."""

    nsloss: dict = field(default_factory=dict)
    lr: float = 1e-4
    optimizer: str = "sgd"
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    batches: int = 10
    iterations: int = 5
    window: int = 5
    tolerance: float = 0.0
    seed: int = 0
    device: str = not_identity("auto")
    data_dir: str | None = not_identity(None)
    out: str | None = not_identity(None)

    def options(self) -> dict[str, Any]:
        d = cfg.to_dict(self)
        return {**d.pop("nsloss"), **{k: v for k, v in d.items() if v is not None}}


@STAGES.register("tune-lambda")
class TuneLambdaStage(Stage, name="tune-lambda", Config=TuneLambdaConfig, per="run", after="train", order=1.2):

    def inputs(self, run_dir: Path, conf: TuneLambdaConfig) -> dict[str, Path]:
        return {"weights": require_run(run_dir) / WEIGHTS}

    def identity(self, run_dir: Path, conf: TuneLambdaConfig) -> dict[str, Any]:
        # What tune_lambda() records as its identity (below).
        from xairobust.training.nsloss import NsLossParams

        params = cfg.to_dict(cfg.build(NsLossParams, {"lam": 1.0, **conf.nsloss}, "tune-lambda"))
        params.pop("lam")
        training = {"lr": conf.lr, "optimizer": conf.optimizer, "batch_size": conf.batch_size,
                    "momentum": conf.momentum, "weight_decay": conf.weight_decay, "window": conf.window,
                    "batches": conf.batches, "iterations": conf.iterations, "seed": conf.seed}
        return {"nsloss_params": params, "training": training, "tolerance": conf.tolerance}

    def outputs(self, run_dir: Path, conf: TuneLambdaConfig) -> list[Path]:
        return [Path(conf.out) if conf.out else RunLayout(run_dir).tune_lambda]

    def hint(self, run_dir: Path, conf: TuneLambdaConfig | None = None) -> str:
        return f"xairobust tune-lambda --run {run_dir}"

    def compute(self, run_dir: Path, conf: TuneLambdaConfig, resolved: StageIdentity, quiet: bool) -> Written:
        result, identity, _ = _search(require_run(run_dir), conf.options(), quiet)
        assert identity == resolved.identity, "tune-lambda: the stage and the search disagree on the identity"
        return Written(result)


def _nsloss0(model, splits, params, batches: int, batch_size: int, gen: torch.Generator, device) -> dict[str, Any]:
    from xairobust.training.nsloss import nsloss_value

    values: dict[str, list[float]] = {}
    model.eval()  # the standard model as it is used: running batch-norm statistics
    for name, split in splits.items():
        values[name] = []
        for _ in range(batches):
            idx = torch.randperm(len(split), generator=gen)[:batch_size]
            values[name].append(nsloss_value(model, split.inputs(idx, device), params, gen))
    every = [v for vs in values.values() for v in vs]
    return {"nsloss0": sum(every) / len(every), "per_batch": values}


def _one_epoch(model, method, split, conf, ctx, data_gen, window: int) -> dict[str, Any]:
    """Train one epoch with the shared training loop; return per-batch CE and the maximum windowed mean CE."""
    from xairobust.stages.train import _optimizer, train_epoch

    opt = _optimizer(conf, model)
    ces: list[float] = []
    result = train_epoch(model, method, split, conf, ctx, opt, data_gen,
                         on_batch=lambda logs: ces.append(logs["task_loss"]), nonfinite="stop")
    if result.get("nonfinite"):
        ces.append(math.inf)  # the candidate diverged: too high
    w = min(window, len(ces))
    windowed = [sum(ces[i : i + w]) / w for i in range(len(ces) - w + 1)]
    bits = 1 / math.log(2)
    return {
        "ce_per_batch_nats": ces,
        "max_window_ce_nats": max(windowed),
        "max_window_ce_bits": max(windowed) * bits,
        "final_window_ce_bits": windowed[-1] * bits,
    }


def tune_lambda(run: str, options: dict[str, Any], quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run the protocol for standard run ``run`` (always: the command's own call); returns (json path, result)."""
    from xairobust.runs import WEIGHTS, read_json, require_run
    from xairobust.stages.contract import StageIdentity, Written, stamp_inputs, write_document

    run_dir = require_run(run)
    result, identity, out = _search(run_dir, options, quiet)
    resolved = StageIdentity("tune-lambda", 1, identity, stamp_inputs({"weights": run_dir / WEIGHTS}, run_dir))
    path = Path(out) if out else RunLayout(run_dir).tune_lambda
    write_document(path, Written(result), resolved)
    return path, read_json(path)


def _search(run_dir: Path, options: dict[str, Any], quiet: bool) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The protocol itself: (result document, its identity, the --out path given)."""
    from xairobust.data.base import get_source, resolve_data_dir
    from xairobust.devices import pick_device
    from xairobust.errors import ConfigError
    from xairobust.progress import make_progress
    from xairobust.runs import load_run
    from xairobust.stages.train import TrainConfig
    from xairobust.training.base import TrainContext
    from xairobust.training.nsloss import NsLoss, NsLossParams

    opts = dict(options)
    batches = int(opts.pop("batches", 10))
    iterations = int(opts.pop("iterations", 5))
    window = int(opts.pop("window", 5))
    tolerance = float(opts.pop("tolerance", 0.0))
    seed = int(opts.pop("seed", 0))
    out = opts.pop("out", None)
    device = pick_device(str(opts.pop("device", "auto")))
    data_dir = opts.pop("data_dir", None)
    if batches < 1 or iterations < 1 or window < 1:
        raise ConfigError("tune-lambda: --batches, --iterations and --window must be >= 1")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tune-lambda: --tolerance must be in [0, 1), got {tolerance}")
    train_keys = {"lr": 1e-4, "optimizer": "sgd", "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0}
    train_opts = {k: opts.pop(k, v) for k, v in train_keys.items()}
    opts.setdefault("lam", 1.0)  # replaced by each candidate; validated like `train --method nsloss`
    base_params = cfg.build(NsLossParams, opts, "tune-lambda")
    conf = cfg.build(TrainConfig, {**train_opts, "epochs": 1, "seed": seed}, "tune-lambda")

    model, meta = load_run(run_dir, device)
    info_task = meta["dataset"]["info"]["task"]
    if info_task != "classification":
        raise ConfigError("tune-lambda: the protocol compares cross-entropy with log2(classes); it needs a classifier")
    classes = int(meta["dataset"]["info"]["num_outputs"])
    source = get_source(meta["dataset"]["name"])
    root = resolve_data_dir(data_dir)
    kwargs = meta["dataset"].get("kwargs", {})
    train_split = source.load("train", root, **kwargs)
    held_name = "val" if "val" in source.splits else "test"
    splits = {"train": train_split, held_name: source.load(held_name, root, **kwargs)}
    NsLoss(base_params).prepare(model, None)  # unmatched --layers patterns fail before any work

    gen = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    base = _nsloss0(model, splits, base_params, batches, conf.batch_size, gen, device)
    if not base["nsloss0"] > 0:
        raise ConfigError("tune-lambda: NsLoss_0 is 0 (the measured layers do not react to perturbations); check --layers")
    threshold = math.log2(classes)
    lam0 = threshold / base["nsloss0"]
    lo, hi = lam0 / 10, lam0 * 10
    trace: list[dict[str, Any]] = []
    candidate = lam0
    with make_progress(quiet) as progress:
        task = progress.add_task("tune-lambda", total=iterations, info="")
        for step in range(iterations):
            trial = copy.deepcopy(model)
            method = NsLoss(NsLossParams(**{**cfg.to_dict(base_params), "lam": candidate}))
            ctx = TrainContext(task="classification", criterion=torch.nn.functional.cross_entropy,
                               num_outputs=classes, value_range=train_split.info.value_range,
                               generator=torch.Generator(device=device).manual_seed(seed + 1 + step),
                               device=device)
            method.prepare(trial, ctx)
            res = _one_epoch(trial, method, train_split, conf, ctx, torch.Generator().manual_seed(seed), window)
            too_high = res["max_window_ce_bits"] >= (1 - tolerance) * threshold
            trace.append({"step": step + 1, "lambda": candidate, "too_high": too_high, **res})
            if too_high:
                hi = candidate
            else:
                lo = candidate
            progress.update(task, advance=1, info=f"lambda {candidate:.4g}: {'too high' if too_high else 'ok'}")
            candidate = math.sqrt(lo * hi)
    ok = [t["lambda"] for t in trace if not t["too_high"]]
    result = {
        "run": str(run_dir),
        "protocol": "Moshe et al. sec. 4.4",
        "classes": classes,
        "threshold_ce_bits": threshold,
        "tolerance": tolerance,
        "threshold_note": "log2(C) bits = random-guess cross-entropy; training CE converted to bits",
        "nsloss0": base["nsloss0"],
        "nsloss0_batches": base["per_batch"],
        "lambda0": lam0,
        "search_interval": [lam0 / 10, lam0 * 10],
        "chosen_lambda": max(ok) if ok else None,
        "note": None if ok else "every candidate was too high; lower --lr or widen the search",
        "nsloss_params": {k: v for k, v in cfg.to_dict(base_params).items() if k != "lam"},
        "training": {**train_opts, "window": window, "batches": batches, "iterations": iterations, "seed": seed},
        "trace": trace,
        "wall_time_s": time.perf_counter() - start,
    }
    identity = {"nsloss_params": result["nsloss_params"], "training": result["training"], "tolerance": tolerance}
    return result, identity, out
