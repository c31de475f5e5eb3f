"""Regression robustness of one run: BIM before/after metrics into robustness.json.

For a regression run (e.g. an ``a2e`` on ``soundtracks``) this attacks the test split with
``bim-regression`` and records, per the shared format, a ``results`` entry with
``mae_before, mae_after, delta_mae, corr_before, corr_after, snr_db`` (+ details), and the
per-sample predictions in ``attacks/<tag>.safetensors`` (for scatter plots and t-tests):
``indices`` (into the split), ``targets``, ``pred_clean``, ``pred_adv``, ``iterations``,
``stopped_early``, ``linf``, ``l2``, ``snr_db``.

MAE is over all samples x outputs; correlation is the mean over outputs of Pearson's r across
samples (Table 1's "Avg. Corr."). SNR is per sample, 10 log10(signal power / perturbation power),
in the dataset's physical domain when it defines ``to_signal`` (Soundtracks: the filtered
magnitude spectrogram, i.e. standardisation and log undone), else in the input space; the
entry reports the mean over samples whose perturbation is non-zero.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xairobust import config as cfg
from xairobust.attacks.bim_regression import NAME, BIMRegressionParams, BIMResult, bim_regression_attack, snr_db
from xairobust.data.base import DataSplit, get_source, resolve_data_dir
from xairobust.errors import ConfigError
from xairobust.evaluation import predict, score_outputs
from xairobust.progress import make_progress
from xairobust.runs import WEIGHTS, load_run, read_run_meta, require_run, save_tensors
from xairobust.stages.attack import (
    FORMAT,
    ROBUSTNESS_JSON,
    current_entries,
    entry_identity,
    find_current,
    write_robustness,
)
from xairobust.stages.contract import PROVENANCE_KEY, STAGES, Stage, StageIdentity, not_identity, stamp_inputs

ROBUSTNESS = ROBUSTNESS_JSON


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _same_tag(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("tag") is not None and a.get("tag") == b.get("tag")


def _identity(params: BIMRegressionParams, split: str, n: int | None) -> dict[str, Any]:
    return {"attack": NAME, "tag": params.tag(), "params": cfg.to_dict(params), "split": split, "n_requested": n}


def merge_robustness(run_dir: Path, entry: dict[str, Any], clean_accuracy: float | None) -> dict[str, Any]:
    """Add ``entry`` to robustness.json (replacing one with the same ``tag``), keeping other
    attacks' entries computed on the same weights (see :func:`xairobust.stages.attack.write_robustness`)."""
    weights = {"weights": entry[PROVENANCE_KEY]["inputs"]["weights"]}
    kept = current_entries(run_dir, weights)
    summary = {"clean_accuracy": clean_accuracy, "robust_accuracy": None, "headline": entry["attack"]}
    if any(e.get("attack") != NAME for e in kept):  # a classifier's PGD entries keep their headline
        from xairobust.runs import read_json

        old = read_json(Path(run_dir) / ROBUSTNESS)
        summary = {k: old.get(k) for k in ("clean_accuracy", "robust_accuracy", "headline", "headline_norm",
                                           "headline_eps", "task") if k in old}
    return write_robustness(Path(run_dir), weights, [entry], _same_tag, summary)


def attack_regression_run(
    run_dir: str | Path,
    params: BIMRegressionParams,
    *,
    split: str = "test",
    n: int | None = None,
    batch_size: int = 36,
    device: str = "auto",
    data_dir: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Attack ``run_dir``'s model on ``split`` and record the result; returns the results entry.

    A no-op (returns the recorded entry) when the same attack already ran on the same weights,
    unless ``force``.
    """
    run_dir = Path(run_dir)
    _check_options(run_dir, batch_size, n)
    weights = stamp_inputs({"weights": require_run(run_dir) / WEIGHTS}, run_dir)
    wanted = entry_identity(NAME, FORMAT, _identity(params, split, n), weights)
    key = {"tag": params.tag(), "split": split, "weights_sha256": weights["weights"]["sha256"],
           "params": cfg.to_dict(params), "n_requested": n}
    if not force:
        done = find_current(current_entries(run_dir, weights), wanted)
        if done is not None and (run_dir / done.get("file", "")).is_file():
            return done

    from xairobust.devices import pick_device

    device = pick_device(device)  # "auto" -> cuda when available; bad names are a ConfigError
    model, meta = load_run(run_dir, device)
    source, to_signal, data = _attacked_split(meta, split, n, data_dir)
    t0 = time.perf_counter()
    res = _attack_batches(model, data, params, batch_size, device, quiet, f"{NAME} {run_dir.name}")
    wall = time.perf_counter() - t0
    tensors, measures = _measure(model, data, res.x_adv, to_signal, batch_size, device)

    file = f"attacks/{params.tag()}.safetensors"
    tensors.update(iterations=res.iterations, stopped_early=res.stopped_early.to(torch.uint8))
    save_tensors(run_dir / file, {k: tensors[k] for k in TENSORS})
    entry: dict[str, Any] = {
        "attack": NAME,
        "norm": "linf",
        "eps": params.eps,
        "steps": params.max_iter,
        "restarts": 0,
        "robust_accuracy": None,
        "n": len(data),
        **measures,
        "iterations_mean": float(res.iterations.float().mean()),
        "stopped_early_fraction": float(res.stopped_early.float().mean()),
        "unconstrained_reference": params.unconstrained_reference,
        "wall_time_s": wall,
        "file": file,
        **key,
        PROVENANCE_KEY: wanted.block(),
    }
    merge_robustness(run_dir, entry, meta.get("clean_accuracy"))
    return entry


# The per-sample file's tensors, in the order the module doc lists them.
TENSORS = ("indices", "targets", "pred_clean", "pred_adv", "iterations", "stopped_early", "linf", "l2", "snr_db")


def _check_options(run_dir: Path, batch_size: int, n: int | None) -> None:
    """One-line errors before anything is loaded: a classifier run, a bad batch size or n."""
    task = read_run_meta(run_dir).get("dataset", {}).get("info", {}).get("task")
    if task != "regression":
        raise ConfigError(
            f"attack: {NAME} attacks regression models, but {run_dir} is a {task} run; use --attack pgd"
        )
    if batch_size < 1:
        raise ConfigError(f"attack: --batch-size must be >= 1, got {batch_size}")
    if n is not None and n < 1:
        raise ConfigError(f"attack: --n must be >= 1, got {n}")


def _attacked_split(meta: dict[str, Any], split: str, n: int | None, data_dir: str | None):
    """(source, to_signal, the first ``n`` samples of ``split``) of the run's dataset; ``to_signal``
    maps inputs to the dataset's physical domain for the SNR (None: the input space)."""
    ds = meta["dataset"]
    source = get_source(ds["name"])
    if split not in source.splits:
        raise ConfigError(f"attack: dataset '{ds['name']}' has no split '{split}' (splits: {', '.join(source.splits)})")
    root = resolve_data_dir(data_dir)
    data = source.load(split, root, **ds.get("kwargs", {}))
    if n is not None and n < len(data):
        data = data.subset(torch.arange(n))
    signal = getattr(source, "to_signal", None)
    to_signal = None if signal is None else (lambda x: signal(x, root, **ds.get("kwargs", {})))
    return source, to_signal, data


def _attack_batches(model, data: DataSplit, params: BIMRegressionParams, batch_size: int, device, quiet: bool,
                    label: str) -> BIMResult:
    """BIM on every sample of ``data``, ``batch_size`` at a time (results on the CPU)."""
    indices = torch.arange(len(data))
    advs, iters, stopped = [], [], []
    with make_progress(quiet) as progress:
        task_id = progress.add_task(label, total=len(data), info="")
        for start in range(0, len(data), batch_size):
            idx = indices[start : start + batch_size]
            res = bim_regression_attack(
                model, data.inputs(idx, device), data.targets(idx, device).float(),
                eps=params.eps, step_size=params.step_size, max_iter=params.max_iter,
                corr_threshold=params.corr_threshold, mse_threshold=params.mse_threshold,
                unconstrained_reference=params.unconstrained_reference,
            )
            advs.append(res.x_adv.cpu())
            iters.append(res.iterations.cpu())
            stopped.append(res.stopped_early.cpu())
            progress.update(task_id, advance=len(idx))
    return BIMResult(torch.cat(advs), torch.cat(iters), torch.cat(stopped))


def _measure(model, data: DataSplit, x_adv, to_signal, batch_size: int, device) -> tuple[dict[str, Any], dict[str, Any]]:
    """(per-sample tensors, the entry's before/after measures) of the adversarial inputs ``x_adv``."""
    x = data.inputs()
    pred_clean = predict(model, data, batch_size, device)
    pred_adv = predict(model, DataSplit(x_adv, data.y, data.info), batch_size, device)
    y = data.y.float()
    before = score_outputs(pred_clean, y, "regression")
    after = score_outputs(pred_adv, y, "regression")
    delta = (x_adv - x).flatten(1)
    linf = delta.abs().max(1).values
    l2 = delta.norm(dim=1)
    if to_signal is not None:
        snr, domain = snr_db(to_signal(x), to_signal(x_adv)), "signal"
    else:
        snr, domain = snr_db(x, x_adv), "input"
    snr_input = snr_db(x, x_adv)
    tensors = {"indices": torch.arange(len(data)), "targets": y, "pred_clean": pred_clean, "pred_adv": pred_adv,
               "linf": linf, "l2": l2, "snr_db": torch.from_numpy(snr.astype(np.float64))}
    mean_snr = _finite_mean(snr)
    measures = {
        "mae_before": before["mae"],
        "mae_after": after["mae"],
        "delta_mae": after["mae"] - before["mae"],
        "corr_before": before["mean_pearson"],
        "corr_after": after["mean_pearson"],
        "mse_before": before["loss"],
        "mse_after": after["loss"],
        "snr_db": mean_snr if mean_snr is None or math.isfinite(mean_snr) else None,
        "snr_db_median": float(np.median(snr)) if snr.size else None,
        "snr_domain": domain,
        "snr_db_input": _finite_mean(snr_input),
        "linf_max": float(linf.max()) if len(linf) else 0.0,
        "l2_mean": float(l2.mean()) if len(l2) else 0.0,
    }
    return tensors, measures


# AttackConfig keys that mean nothing for BIM (it is L-inf, deterministic, zero-initialised).
_NOT_FOR_BIM = ("restarts", "random_start", "autoattack", "seed")


def attack_from_options(run: str | Path, options: dict[str, Any], extra: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """``xairobust attack --attack bim-regression``: map the attack command's options onto this stage.

    ``--eps``/``--step-size`` are BIM's; ``--steps`` is ``--max-iter``; BIM-only options
    (``--max-iter --corr-threshold --mse-threshold --unconstrained-reference``) arrive as extras.
    """
    opts = {k: v for k, v in options.items() if v is not None}
    if opts.get("norm", "linf") != "linf":
        raise ConfigError(f"attack: {NAME} is an L-inf attack; drop --norm {opts['norm']}")
    bad = [k for k in _NOT_FOR_BIM if k in opts]
    if bad:
        raise ConfigError(f"attack: --{bad[0].replace('_', '-')} does not apply to {NAME}")
    if "steps" in opts:
        opts["max_iter"] = opts.pop("steps")
    opts.pop("norm", None)
    conf = cfg.build(BIMAttackConfig, {**opts, **extra}, f"attack --attack {NAME}")
    return run_bim(run, conf, quiet=quiet)


@dataclass
class BIMAttackConfig(BIMRegressionParams):
    """The one config of the BIM regression attack (attack params + where to attack): used by
    ``attack --attack bim-regression``, ``mer-attack`` and the batch stage (``stages: {attack: bim-regression}``)."""

    split: str = "test"
    n: int | None = None
    batch_size: int = not_identity(36)
    device: str = not_identity("auto")
    data_dir: str | None = not_identity(None)


def _params(conf: BIMAttackConfig) -> BIMRegressionParams:
    names = [f.name for f in fields(BIMRegressionParams)]
    return BIMRegressionParams(**{k: getattr(conf, k) for k in names})


@STAGES.register(NAME)
class BIMRegressionStage(Stage, name=NAME, role="attack", Config=BIMAttackConfig, format=FORMAT, per="run",
                                after="train", order=1, report_input=True):
    """The attack stage of regression zoos (``stages: {attack: bim-regression}``): BIM -> robustness.json."""

    def inputs(self, run_dir: Path, conf: BIMAttackConfig) -> dict[str, Path]:
        return {"weights": require_run(run_dir) / WEIGHTS}

    def identity(self, run_dir: Path, conf: BIMAttackConfig) -> dict[str, Any]:
        return _identity(_params(conf), conf.split, conf.n)

    def outputs(self, run_dir: Path, conf: BIMAttackConfig) -> list[Path]:
        return [Path(run_dir) / ROBUSTNESS]

    def hint(self, run_dir: Path, conf: BIMAttackConfig | None = None) -> str:
        return f"xairobust attack --run {run_dir} --attack {NAME}"

    def is_current(self, run_dir: Path, conf: BIMAttackConfig, resolved: StageIdentity | None = None) -> bool:
        run_dir = Path(run_dir)
        weights = stamp_inputs(self.inputs(run_dir, conf), run_dir)
        wanted = entry_identity(NAME, FORMAT, self.identity(run_dir, conf), weights)
        done = find_current(current_entries(run_dir, weights), wanted)
        return done is not None and (run_dir / done.get("file", "")).is_file()

    def compute(self, run_dir: Path, conf: BIMAttackConfig, resolved: StageIdentity, quiet: bool) -> None:
        run_bim(run_dir, conf, quiet=quiet)  # merges its entry into the shared robustness.json


def run_bim(run_dir: str | Path, conf: BIMAttackConfig, *, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """The one BIM regression entry point: ``attack --attack bim-regression``, ``mer-attack`` and
    the batch stage all build a :class:`BIMAttackConfig` (one set of defaults) and call this."""
    return attack_regression_run(run_dir, _params(conf), split=conf.split, n=conf.n, batch_size=conf.batch_size,
                                 device=conf.device, data_dir=conf.data_dir, force=force, quiet=quiet)


def attack_stage(run_dir: str | Path, conf: BIMAttackConfig, quiet: bool = False) -> Path:
    """``attack(run_dir, conf)`` with the batch runner's signature; returns robustness.json."""
    return BIMRegressionStage().run(Path(run_dir), conf, quiet)
