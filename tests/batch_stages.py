"""Stub attack/explain/score/report stages for the batch tests, registered in STAGES.

They do real, deterministic work on the real trained models (FGSM, gradient x input, two simple
per-sample statistics, a mean +- std table), so resume and executor tests compare real numbers
while not depending on the other stages' implementations. Importing this module registers them
as ``stub-attack``, ``stub-explain``, ``stub-score`` and ``stub-report``; zoo files select them
by those names (``stages: {attack: stub-attack, ...}``) -- a zoo never names a module. `sleep`
makes a job slow enough to be killed mid-way.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xairobust.config import require
from xairobust.data.base import get_dataset
from xairobust.runs import load_run, load_tensors, read_run_meta, save_tensors, write_json_atomic, write_text_atomic
from xairobust.stages.contract import STAGES, Stage


def _test_batch(meta: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    split = get_dataset(meta["dataset"]["name"], "test", **meta["dataset"]["kwargs"])
    idx = torch.arange(min(n, len(split)))
    return split.inputs(idx, torch.device("cpu")), split.targets(idx, torch.device("cpu")), idx


@dataclass
class AttackConfig:
    eps: float = 0.1
    n: int = 64
    data_dir: str | None = None

    def __post_init__(self) -> None:
        require(self.eps > 0, f"attack: eps must be > 0, got {self.eps}")


def attack(run_dir: Path, conf: AttackConfig, quiet: bool = False) -> Path:
    model, meta = load_run(run_dir)
    x, y, _ = _test_batch(meta, conf.n)
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    x_adv = (x + conf.eps * grad.sign()).clamp(0, 1).detach()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    out = Path(run_dir) / "robustness.json"
    write_json_atomic(out, {"clean_accuracy": clean, "robust_accuracy": robust, "headline": "fgsm",
                            "results": [{"attack": "fgsm", "norm": "linf", "eps": conf.eps, "steps": 1,
                                         "restarts": 0, "robust_accuracy": robust, "n": len(y)}]})
    return out


@dataclass
class ExplainConfig:
    explainer: str
    n: int = 32
    sleep: float = 0.0  # seconds between writing the attributions and their .json
    fail: bool = False
    data_dir: str | None = None


def explain(run_dir: Path, conf: ExplainConfig, quiet: bool = False) -> Path:
    if conf.fail:
        raise RuntimeError(f"explainer {conf.explainer} failed on purpose")
    model, meta = load_run(run_dir)
    x, y, idx = _test_batch(meta, conf.n)
    x = x.clone().requires_grad_(True)
    out = model(x).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(out, x)
    attributions = grad * x if conf.explainer == "gxi" else grad
    path = Path(run_dir) / "attributions" / f"{conf.explainer}.safetensors"
    save_tensors(path, {"inputs": x.detach(), "targets": y, "indices": idx, "attributions": attributions})
    end = time.monotonic() + conf.sleep
    while time.monotonic() < end:  # slow job for the SIGKILL test; the kill lands here
        time.sleep(0.05)
    write_json_atomic(path.with_suffix(".json"), {"explainer": conf.explainer, "n": len(y)})
    return path


@dataclass
class ScoreConfig:
    explainer: str
    preset: str = "stub"
    data_dir: str | None = None


def score(run_dir: Path, conf: ScoreConfig, quiet: bool = False) -> Path:
    t = load_tensors(Path(run_dir) / "attributions" / f"{conf.explainer}.safetensors")
    a = t["attributions"].flatten(1).abs()
    l1 = a.sum(1)
    l2 = a.pow(2).sum(1).sqrt()
    values = {"sparseness": (l1 / (l2 + 1e-12)).tolist(), "max_abs": a.max(1).values.tolist()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "target", "metric", "value"])
    for metric, vals in values.items():
        for i, tgt, v in zip(t["indices"].tolist(), t["targets"].tolist(), vals, strict=True):
            w.writerow([i, tgt, metric, repr(v)])
    out = Path(run_dir) / "scores" / f"{conf.explainer}.csv"
    write_text_atomic(out, buf.getvalue())
    write_json_atomic(out.with_suffix(".json"), {"preset": conf.preset})
    return out


@dataclass
class ReportConfig:
    decimals: int = 6
    runs: list = field(default_factory=list)  # set by the batch runner


def build_report(run_dirs: list[Path], out: Path, conf: ReportConfig, quiet: bool = False) -> list[Path]:
    """label -> mean and std over seeds of each explainer x metric mean, plus robust accuracy."""
    rows: dict[str, dict[str, list[float]]] = {}
    for run in run_dirs:
        meta = read_run_meta(run)
        cols = rows.setdefault(meta["label"], {})
        cols.setdefault("clean_accuracy", []).append(meta["clean_accuracy"])
        rob = Path(run) / "robustness.json"
        if rob.is_file():
            cols.setdefault("robust_accuracy", []).append(json.loads(rob.read_text())["robust_accuracy"])
        for csv_path in sorted((Path(run) / "scores").glob("*.csv")):
            sums: dict[str, list[float]] = {}
            for r in csv.DictReader(csv_path.open()):
                sums.setdefault(r["metric"], []).append(float(r["value"]))
            for metric, vals in sums.items():
                cols.setdefault(f"{csv_path.stem}/{metric}", []).append(sum(vals) / len(vals))
    names = sorted({c for cols in rows.values() for c in cols})
    lines = ["label," + ",".join(names)]
    for label, cols in rows.items():
        cells = []
        for c in names:
            vals = torch.tensor(cols.get(c, []), dtype=torch.float64)
            std = float(vals.std()) if len(vals) > 1 else 0.0
            cells.append(f"{float(vals.mean()):.{conf.decimals}f}+-{std:.{conf.decimals}f}" if len(vals) else "")
        lines.append(label + "," + ",".join(cells))
    out = Path(out)
    write_text_atomic(out / "table.csv", "\n".join(lines) + "\n")
    write_text_atomic(out / "table.md", "| " + " | ".join(lines[0].split(",")) + " |\n")
    return [out / "table.csv", out / "table.md"]


class _Stub(Stage):
    """Contract shape around the stub functions; provenance is not the stubs' concern."""

    def inputs(self, run_dir, conf):
        return {"weights": Path(run_dir) / "model.safetensors"}

    def identity(self, run_dir, conf):
        from xairobust import config as cfg

        return cfg.to_dict(conf)

    def outputs(self, run_dir, conf):
        return []


def _register(name: str, slot: str, per: str, after, order: float, func, config, report_input=False):
    if name in STAGES:
        return
    attrs = dict(name=name, role=slot, Config=config, per=per, after=after, order=order, report_input=report_input)
    if slot == "report":
        attrs["run"] = lambda self, run_dir, conf, quiet=False: func([Path(p) for p in conf.runs], run_dir, conf, quiet)
    else:
        attrs["run"] = lambda self, run_dir, conf, quiet=False: func(run_dir, conf, quiet)
    STAGES.register(name)(type(f"Stub_{slot}", (_Stub,), attrs))


_register("stub-attack", "attack", "run", "train", 1, attack, AttackConfig, report_input=True)
_register("stub-explain", "explain", "explainer", "train", 2, explain, ExplainConfig)
_register("stub-score", "score", "explainer", "explain", 3, score, ScoreConfig, report_input=True)
_register("stub-report", "report", "report", None, 4, build_report, ReportConfig)
