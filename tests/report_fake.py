"""Fake run directories in the shared formats, for report tests (no training, no Quantus).

The metric registry used here is a local one, so the real METRICS registry (and the tests
that loop over it) never sees these fake metrics.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xairobust.registry import Registry
from xairobust.runs import file_sha256, save_tensors
from xairobust.stages.contract import StageIdentity, stamp_inputs


def provenance(run: Path, stage: str, inputs: dict[str, Path], **identity) -> dict:
    """The provenance block a real stage would write for these input files."""
    return StageIdentity(stage, 1, dict(identity), stamp_inputs(inputs, run)).block()


class _FakeMetric:
    pass


# name -> (category, direction, label): the shapes of the NsLoss paper's columns.
FAKE_METRICS = {
    "max_sens": ("sensitivity", "lower", "Max"),
    "faith_corr": ("faithfulness", "higher", "Corr"),
    "sparse": ("complexity", "higher", "Spr"),
}


def fake_registry() -> Registry:
    reg: Registry = Registry("metric")
    for name, (category, direction, label) in FAKE_METRICS.items():
        reg.register(name, category=category, direction=direction, label=label)(_FakeMetric)
    return reg


def write_run(
    root: Path,
    name: str,
    *,
    label: str,
    seed: int,
    scores: dict[str, dict[str, np.ndarray]] | None = None,
    indices: np.ndarray | None = None,
    clean: float | None = 0.9,
    robust: float | None = None,
    method: str | None = None,
    dataset: str = "digits",
    model: str = "digits_cnn",
    attributions: list[str] = (),
    epoch_scores: dict[int, dict[str, np.ndarray]] | None = None,
    history: list[dict] | None = None,
    correct: np.ndarray | None = None,
    params: dict | None = None,
) -> Path:
    """A run directory with run.json, optional robustness.json, scores/<explainer>.csv, ...

    ``scores`` maps explainer -> {metric: per-sample values}; ``indices`` the samples' indices.
    ``correct`` (bools, one per scored sample): the attribution files then hold the scored samples'
    indices and the per-sample ``correct`` tensor that ``explain`` records. ``params``: method params.
    """
    run = root / name
    run.mkdir(parents=True)
    weights = run / "model.safetensors"  # stand-in weights: the provenance chain starts here
    save_tensors(weights, {"w": torch.full((2,), float(seed)), "tag": torch.tensor([zlib.crc32(name.encode()) % 1000])})
    meta = {"format": 1, "label": label, "method": {"name": method or label, "params": params or {}}, "seed": seed,
            "dataset": {"name": dataset}, "model": {"name": model}, "clean_accuracy": clean,
            "weights_sha256": file_sha256(weights)}
    (run / "run.json").write_text(json.dumps(meta))
    if robust is not None:
        (run / "robustness.json").write_text(json.dumps(
            {"clean_accuracy": clean, "robust_accuracy": robust, "headline": "pgd", "results": [],
             "provenance": provenance(run, "attack", {"weights": weights})}))
    rng = np.random.default_rng(seed + 100)
    for explainer in {*attributions, *(scores or {})}:
        n = 8 if correct is None else len(correct)
        x = torch.from_numpy(rng.random((n, 1, 8, 8), dtype=np.float32))
        tensors = {
            "inputs": x, "targets": torch.zeros(n, dtype=torch.int64),
            "indices": torch.arange(n, dtype=torch.int64) * 3,
            "attributions": torch.from_numpy(rng.standard_normal((n, 1, 8, 8)).astype(np.float32)),
        }
        if correct is not None:
            tensors["indices"] = torch.as_tensor(np.arange(n) if indices is None else indices, dtype=torch.int64)
            tensors["correct"] = torch.as_tensor(np.asarray(correct, dtype=bool))
        save_tensors(run / "attributions" / f"{explainer}.safetensors", tensors)
        (run / "attributions" / f"{explainer}.json").write_text(json.dumps(
            {"explainer": explainer, "provenance": provenance(run, "explain", {"weights": weights}, explainer=explainer)}))
    for explainer, per_metric in (scores or {}).items():
        n = len(next(iter(per_metric.values())))
        idx = np.arange(n) if indices is None else indices
        write_scores(run / "scores" / f"{explainer}.csv", idx, per_metric)
        attr = run / "attributions" / f"{explainer}.safetensors"
        (run / "scores" / f"{explainer}.json").write_text(json.dumps(
            {"explainer": explainer, "provenance": provenance(run, "score", {"weights": weights, "attributions": attr})}))
    for epoch, per_metric in (epoch_scores or {}).items():
        n = len(next(iter(per_metric.values())))
        csv_path = run / "scores" / "epochs" / f"ig_epoch_{epoch:03d}.csv"
        write_scores(csv_path, np.arange(n), per_metric)
        ckpt = run / "checkpoints" / f"epoch_{epoch:03d}.safetensors"
        save_tensors(ckpt, {"w": torch.full((2,), float(epoch))})
        csv_path.with_suffix(".json").write_text(json.dumps(
            {"epoch_scores": {"epoch": epoch, "checkpoint_sha256": file_sha256(ckpt)}}))
    if history is not None:
        pd.DataFrame(history).to_csv(run / "history.csv", index=False)
    return run


def write_scores(path: Path, indices: np.ndarray, per_metric: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"index": int(i), "target": 0, "metric": m, "value": float(v)}
            for m, values in per_metric.items() for i, v in zip(indices, values, strict=True)]
    pd.DataFrame(rows).to_csv(path, index=False)


def zoo(root: Path, n: int = 20, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Three methods x seeds with known per-sample scores; returns them keyed by (label, seed).

    'nsloss' is best on max_sens (lower) and sparse (higher), 'pgd' best on faith_corr.
    """
    shift = {"standard": (1.0, 0.0, 0.50), "nsloss": (0.2, 0.2, 0.70), "pgd": (0.5, 0.4, 0.60)}
    out = {}
    for label, (s, f, c) in shift.items():
        for seed in seeds:
            rng = np.random.default_rng(1000 * seed + len(label))
            values = {
                "max_sens": s + 0.1 * rng.standard_normal(n),
                "faith_corr": f + 0.1 * rng.standard_normal(n),
                "sparse": c + 0.05 * rng.standard_normal(n),
            }
            out[(label, seed)] = values
            write_run(root, f"{label}_s{seed}", label=label, seed=seed, scores={"ig": values},
                      clean=0.95 - 0.05 * len(label) / 6 + 0.01 * seed, robust=0.1 * len(label) / 6,
                      attributions=["ig"])
    return out
