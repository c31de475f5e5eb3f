"""The attack stage: robust accuracy of a trained run under PGD and AutoAttack -> robustness.json.

``runs/<run>/robustness.json`` keeps one entry per (attack, norm, eps); re-running one attack
replaces only its entry, and re-running it with the same settings on the same weights is a
no-op. The headline ``robust_accuracy`` is AutoAttack's when it was run, else PGD's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.attacks.pgd import pgd_worst_of_restarts
from xairobust.config import require
from xairobust.data.base import DataSplit, get_source, resolve_data_dir
from xairobust.errors import ConfigError
from xairobust.evaluation import mean_pearson
from xairobust.progress import make_progress
from xairobust.runs import load_run, read_json, require_run, write_json_atomic

ROBUSTNESS_JSON = "robustness.json"


@dataclass
class AttackConfig:
    """Keys of ``xairobust attack --config``; radii live in the model's input space."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    autoattack: bool = True  # also run AutoAttack (standard version); classifiers with inputs in [0, 1]
    n: int | None = 1000  # first n samples of the split (None: all)
    split: str = "test"
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        require(self.norm in ("linf", "l2"), f"attack: --norm must be linf or l2, got '{self.norm}'")
        require(self.eps > 0, f"attack: --eps must be > 0, got {self.eps}")
        require(self.steps >= 1, f"attack: --steps must be >= 1, got {self.steps}")
        require(self.step_size is None or self.step_size > 0, f"attack: --step-size must be > 0, got {self.step_size}")
        require(self.restarts >= 1, f"attack: --restarts must be >= 1, got {self.restarts}")
        require(self.n is None or self.n >= 1, f"attack: --n must be >= 1, got {self.n}")
        require(self.batch_size >= 1, f"attack: --batch-size must be >= 1, got {self.batch_size}")

    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


def _same_key(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["attack"] == b["attack"] and a["norm"] == b["norm"] and math.isclose(a["eps"], b["eps"], rel_tol=1e-9)


# Settings that must match for an existing entry to make a re-run a no-op.
_SETTINGS = ("steps", "step_size", "restarts", "random_start", "n", "split", "seed", "weights_sha256")


def _settings(conf: AttackConfig, attack: str, n: int, sha: str | None) -> dict[str, Any]:
    pgd = attack == "pgd"
    return {
        "attack": attack,
        "norm": conf.norm,
        "eps": conf.eps,
        "steps": conf.steps if pgd else None,
        "step_size": conf.resolved_step_size() if pgd else None,
        "restarts": conf.restarts if pgd else None,
        "random_start": conf.random_start if pgd else None,
        "n": n,
        "split": conf.split,
        "seed": conf.seed,
        "weights_sha256": sha,
    }


def _find(entries: list[dict[str, Any]], wanted: dict[str, Any]) -> dict[str, Any] | None:
    for entry in entries:
        if _same_key(entry, wanted):
            return entry
    return None


def _batches(split: DataSplit, n: int, batch_size: int, device: torch.device):
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        yield split.inputs(idx, device), split.targets(idx, device)


def _regression_fields(model: nn.Module, split: DataSplit, n: int, adv_all: Tensor, device) -> dict[str, Any]:
    """MAE / Pearson before and after, and the perturbation's SNR in dB (mean over samples)."""
    x = split.inputs(slice(0, n), device)
    y = split.targets(slice(0, n), device).float()
    with torch.no_grad():
        before, after = model(x).float(), model(adv_all).float()
    delta = (adv_all - x).flatten(1)
    snr = 10 * torch.log10(x.flatten(1).pow(2).sum(1) / delta.pow(2).sum(1).clamp_min(1e-30))
    yt = y.cpu().numpy().reshape(n, -1).astype(np.float64)
    b, a = before.cpu().numpy().reshape(n, -1), after.cpu().numpy().reshape(n, -1)
    mae_b, mae_a = float(np.abs(b - yt).mean()), float(np.abs(a - yt).mean())
    return {
        "robust_accuracy": None,
        "mae_before": mae_b,
        "mae_after": mae_a,
        "delta_mae": mae_a - mae_b,
        "corr_before": mean_pearson(b.astype(np.float64), yt),
        "corr_after": mean_pearson(a.astype(np.float64), yt),
        "snr_db": float(snr.mean()),
    }


def attack(run_dir: str | Path, conf: AttackConfig, quiet: bool = False) -> Path:
    """Attack run ``run_dir`` as ``conf`` says; merge the results into its robustness.json."""
    from xairobust.devices import pick_device

    run_dir = require_run(run_dir)
    device = pick_device(conf.device)
    model, meta = load_run(run_dir, device)
    ds = meta["dataset"]
    source = get_source(ds["name"])
    if conf.split not in source.splits:
        raise ConfigError(f"attack: dataset '{ds['name']}' has no split '{conf.split}' (splits: {', '.join(source.splits)})")
    split = source.load(conf.split, resolve_data_dir(conf.data_dir), **ds.get("kwargs", {}))
    info = split.info
    n = len(split) if conf.n is None else min(conf.n, len(split))
    sha = meta.get("weights_sha256")
    classification = info.task == "classification"

    out_path = run_dir / ROBUSTNESS_JSON
    existing = read_json(out_path) if out_path.is_file() else {"results": []}
    entries: list[dict[str, Any]] = list(existing.get("results", []))
    todo = ["pgd"] + (["autoattack"] if conf.autoattack and classification else [])
    if conf.autoattack and classification:
        from xairobust.attacks.autoattack import check_applicable

        check_applicable(tuple(info.input_shape), conf.norm, info.value_range, info.num_outputs)
    pending = []
    for name in todo:
        wanted = _settings(conf, name, n, sha)
        old = _find(entries, wanted)
        if old is None or any(old.get(k) != wanted[k] for k in _SETTINGS):
            pending.append(name)
    if not pending:
        return out_path  # same attacks on the same weights already recorded: nothing to do

    loss_fn = nn.functional.cross_entropy if classification else nn.functional.mse_loss
    generator = torch.Generator(device=device).manual_seed(conf.seed)
    clean_correct = 0
    correct = {name: 0 for name in pending}
    adv_reg: list[Tensor] = []
    seconds = {name: 0.0 for name in pending}
    batches = math.ceil(n / conf.batch_size)
    with make_progress(quiet) as progress:
        task = progress.add_task(f"attack {conf.norm} eps={conf.eps:g}", total=batches * len(pending), info="")
        for x, y in _batches(split, n, conf.batch_size, device):
            if classification:
                with torch.no_grad():
                    clean_correct += int((model(x).argmax(1) == y).sum())
            for name in pending:
                t0 = time.perf_counter()
                if name == "pgd":
                    adv = pgd_worst_of_restarts(
                        model, x, y, restarts=conf.restarts, task=info.task,
                        norm=conf.norm, eps=conf.eps, step_size=conf.resolved_step_size(), steps=conf.steps,
                        random_start=conf.random_start, loss_fn=loss_fn, value_range=info.value_range,
                        generator=generator,
                    )
                else:
                    from xairobust.attacks.autoattack import autoattack

                    adv = autoattack(model, x, y, norm=conf.norm, eps=conf.eps, num_classes=info.num_outputs,
                                     value_range=info.value_range, seed=conf.seed, batch_size=conf.batch_size,
                                     device=device)
                seconds[name] += time.perf_counter() - t0
                if classification:
                    with torch.no_grad():
                        correct[name] += int((model(adv).argmax(1) == y).sum())
                else:
                    adv_reg.append(adv)
                progress.advance(task)

    for name in pending:
        entry = _settings(conf, name, n, sha)
        if classification:
            entry["robust_accuracy"] = correct[name] / n
            entry["clean_accuracy"] = clean_correct / n
        else:
            entry.update(_regression_fields(model, split, n, torch.cat(adv_reg), device))
        entry["wall_time_s"] = seconds[name]
        entry["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        entries = [e for e in entries if not _same_key(e, entry)] + [entry]

    write_json_atomic(out_path, _summary(entries, conf, classification, clean_correct / n if classification else None))
    return out_path


def _summary(entries: list[dict[str, Any]], conf: AttackConfig, classification: bool, clean: float | None) -> dict[str, Any]:
    """The file: headline numbers for the (norm, eps) just attacked, plus every entry."""
    entries = sorted(entries, key=lambda e: (e["norm"], e["eps"], e["attack"]))
    here = [e for e in entries if e["norm"] == conf.norm and math.isclose(e["eps"], conf.eps, rel_tol=1e-9)]
    head = next((e for e in here if e["attack"] == "autoattack"), None) or next(e for e in here if e["attack"] == "pgd")
    return {
        "clean_accuracy": clean,
        "robust_accuracy": head.get("robust_accuracy"),
        "headline": head["attack"],
        "headline_norm": head["norm"],
        "headline_eps": head["eps"],
        "task": "classification" if classification else "regression",
        "results": entries,
    }
