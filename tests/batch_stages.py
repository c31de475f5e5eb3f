"""Stub attack/explain/score/report stages for the batch tests, registered in STAGES.

They do real, deterministic work on the real trained models (FGSM, gradient x input, two simple
per-sample statistics, a mean +- std table), so resume and executor tests compare real numbers
while not depending on the other stages' implementations. Importing this module registers them
as ``stub-attack``, ``stub-explain``, ``stub-score`` and ``stub-report``; zoo files select them
by those names (``stages: {attack: stub-attack, ...}``) -- a zoo never names a module. `sleep`
makes a job slow enough to be killed mid-way.

Each implements only ``inputs``, ``outputs`` and ``compute`` (returning a ``Written``), like every
stage, so ``Stage.run`` writes their documents with a provenance block and the batch decides
whether a job is done by the contract alone.
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
from xairobust.runs import load_run, load_tensors, read_run_meta, save_tensors, write_text_atomic
from xairobust.stages.contract import STAGES, Stage, Written


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


def attack(run_dir: Path, conf: AttackConfig) -> Written:
    model, meta = load_run(run_dir)
    x, y, _ = _test_batch(meta, conf.n)
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    x_adv = (x + conf.eps * grad.sign()).clamp(0, 1).detach()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    return Written({"clean_accuracy": clean, "robust_accuracy": robust, "headline": "fgsm",
                    "results": [{"attack": "fgsm", "norm": "linf", "eps": conf.eps, "steps": 1,
                                 "restarts": 0, "robust_accuracy": robust, "n": len(y)}]})


@dataclass
class ExplainConfig:
    explainer: str
    n: int = 32
    sleep: float = 0.0  # seconds between writing the attributions and their .json
    fail: bool = False
    data_dir: str | None = None


def _attributions(run_dir: Path, explainer: str) -> Path:
    return Path(run_dir) / "attributions" / f"{explainer}.safetensors"


def explain(run_dir: Path, conf: ExplainConfig) -> Written:
    if conf.fail:
        raise RuntimeError(f"explainer {conf.explainer} failed on purpose")
    model, meta = load_run(run_dir)
    x, y, idx = _test_batch(meta, conf.n)
    x = x.clone().requires_grad_(True)
    out = model(x).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(out, x)
    attributions = grad * x if conf.explainer == "gxi" else grad
    path = _attributions(run_dir, conf.explainer)
    save_tensors(path, {"inputs": x.detach(), "targets": y, "indices": idx, "attributions": attributions})
    end = time.monotonic() + conf.sleep
    while time.monotonic() < end:  # slow job for the SIGKILL test; the kill lands here, before the .json
        time.sleep(0.05)
    return Written({"explainer": conf.explainer, "n": len(y)}, files=(path,))


@dataclass
class ScoreConfig:
    explainer: str
    preset: str = "stub"
    data_dir: str | None = None


def _scores(run_dir: Path, explainer: str) -> Path:
    return Path(run_dir) / "scores" / f"{explainer}.csv"


def score(run_dir: Path, conf: ScoreConfig) -> Written:
    t = load_tensors(_attributions(run_dir, conf.explainer))
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
    out = _scores(run_dir, conf.explainer)
    write_text_atomic(out, buf.getvalue())
    return Written({"preset": conf.preset}, files=(out,))


@dataclass
class ReportConfig:
    decimals: int = 6
    runs: list = field(default_factory=list)  # set by the batch runner


def build_report(run_dirs: list[Path], out: Path, conf: ReportConfig) -> Written:
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
    return Written({"runs": [str(r) for r in run_dirs]}, files=(out / "table.csv", out / "table.md"))


def _weights(run_dir: Path) -> dict[str, Path]:
    return {"weights": Path(run_dir) / "model.safetensors"}


class StubAttack(Stage, name="stub-attack", role="attack", Config=AttackConfig, per="run", after="train", order=1,
                 report_input=True):
    def inputs(self, run_dir, conf):
        return _weights(run_dir)

    def outputs(self, run_dir, conf):
        return [Path(run_dir) / "robustness.json"]

    def compute(self, run_dir, conf, resolved, quiet):
        return attack(run_dir, conf)


class StubExplain(Stage, name="stub-explain", role="explain", Config=ExplainConfig, per="explainer", after="train",
                  order=2, explainer_params="params"):
    def inputs(self, run_dir, conf):
        return _weights(run_dir)

    def outputs(self, run_dir, conf):
        path = _attributions(run_dir, conf.explainer)
        return [path, path.with_suffix(".json")]

    def compute(self, run_dir, conf, resolved, quiet):
        return explain(run_dir, conf)


class StubScore(Stage, name="stub-score", role="score", Config=ScoreConfig, per="explainer", after="explain",
                order=3, report_input=True):
    def inputs(self, run_dir, conf):
        return {"attributions": _attributions(run_dir, conf.explainer)}

    def outputs(self, run_dir, conf):
        path = _scores(run_dir, conf.explainer)
        return [path, path.with_suffix(".json")]

    def compute(self, run_dir, conf, resolved, quiet):
        return score(run_dir, conf)


class StubReport(Stage, name="stub-report", role="report", Config=ReportConfig, per="report", after=None, order=4):
    def inputs(self, run_dir, conf):
        found = {}
        for i, run in enumerate(conf.runs):
            run = Path(run)
            found[f"run{i}"] = run / "run.json"
            if (run / "robustness.json").is_file():
                found[f"run{i}:robustness"] = run / "robustness.json"
            for csv_path in sorted((run / "scores").glob("*.csv")):
                found[f"run{i}:{csv_path.stem}"] = csv_path
        return found

    def outputs(self, run_dir, conf):
        out = Path(run_dir)
        return [out / "table.csv", out / "table.md", out / "report.json"]

    def compute(self, run_dir, conf, resolved, quiet):
        return build_report([Path(p) for p in conf.runs], run_dir, conf)


for _cls in (StubAttack, StubExplain, StubScore, StubReport):
    if _cls.name not in STAGES:
        STAGES.register(_cls.name)(_cls)
