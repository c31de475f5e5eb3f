"""The explain and score stages end to end on the digits run, and their CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xairobust.data.base import get_dataset
from xairobust.errors import ConfigError, RunError
from xairobust.explain.base import sample_seeds
from xairobust.metrics.presets import PAPER_METRICS
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.runs import load_run, load_tensors
from xairobust.stages.explain import ExplainConfig, build_explainer, explain
from xairobust.stages.score import ScoreConfig, score

FAST = {"nr_samples": 3, "nr_runs": 5}


def fast_metric_params() -> dict:
    """Fast counts for the seven of ``paper``/``quick`` (the presets these tests score)."""
    out = {}
    for name in PAPER_METRICS:
        fields = METRICS.get(name).Params.__dataclass_fields__
        out[name] = {k: v for k, v in FAST.items() if k in fields}
    return {k: v for k, v in out.items() if v}


@pytest.fixture(scope="module")
def run(digits_run, tmp_path_factory) -> Path:
    """A private copy of the shared digits run (these tests write attributions and scores)."""
    dst = tmp_path_factory.mktemp("score") / "run"
    shutil.copytree(digits_run, dst, ignore=shutil.ignore_patterns("attributions", "scores"))
    return dst


def test_explain_writes_self_contained_file(run):
    path = explain(run, ExplainConfig(explainer="ig", n=12, params={"n_steps": 8}), quiet=True)
    t = load_tensors(path)
    assert set(t) == {"inputs", "targets", "indices", "attributions", "correct", "extra.convergence_delta"}
    assert t["attributions"].shape == t["inputs"].shape == (12, 1, 8, 8)
    test = get_dataset("digits", "test")
    assert torch.equal(t["inputs"], test.inputs(t["indices"]))
    assert torch.equal(t["indices"], t["indices"].sort().values)
    model, _ = load_run(run)
    with torch.no_grad():
        assert torch.equal(t["targets"], model(t["inputs"]).argmax(1))
    # correct: the clean prediction equals the test label, per stored sample (report --common-correct)
    assert t["correct"].dtype == torch.bool
    assert torch.equal(t["correct"], t["targets"] == test.targets(t["indices"]))
    # the stored attributions are the explainer's output for the stored inputs and seeds
    explainer = build_explainer("ig", {"n_steps": 8})
    direct = explainer.attribute(model, t["inputs"], t["targets"], sample_seeds(0, t["indices"]))
    torch.testing.assert_close(t["attributions"], direct, rtol=1e-5, atol=1e-7)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["explainer"] == "ig" and meta["params"]["n_steps"] == 8 and meta["n"] == 12
    assert meta["target"] == "pred" and meta["seed"] == 0
    assert meta["extras"]["convergence_delta"]["max_abs"] == pytest.approx(float(t["extra.convergence_delta"].abs().max()))


def test_explain_is_a_noop_for_the_same_config(run):
    conf = ExplainConfig(explainer="ig", n=12, params={"n_steps": 8})
    path = explain(run, conf, quiet=True)
    before = path.stat().st_mtime_ns
    assert explain(run, ExplainConfig(explainer="ig", n=12, params={"n_steps": 8}, batch_size=5), quiet=True) == path
    assert path.stat().st_mtime_ns == before


def test_expected_gradients_stores_its_background(run):
    path = explain(run, ExplainConfig(explainer="expected_gradients", n=6, params={"n_samples": 4}, background_size=30), quiet=True)
    t = load_tensors(path)
    assert t["background"].shape == (30, 1, 8, 8)
    assert json.loads(path.with_suffix(".json").read_text())["background_size"] == 30


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_score_writes_one_row_per_sample_and_metric(run):
    explain(run, ExplainConfig(explainer="ig", n=12, params={"n_steps": 8}), quiet=True)
    conf = ScoreConfig(explainer="ig", metrics="paper", metric_params=fast_metric_params(), seed=3)
    path = score(run, conf, quiet=True)
    rows = _rows(path)
    assert list(rows[0]) == ["index", "target", "metric", "value"]
    assert len(rows) == 12 * len(PAPER_METRICS)
    t = load_tensors(run / "attributions" / "ig.safetensors")
    for name in PAPER_METRICS:
        mine = [r for r in rows if r["metric"] == name]
        assert [int(r["index"]) for r in mine] == t["indices"].tolist()
        assert [int(r["target"]) for r in mine] == t["targets"].tolist()
        assert np.isfinite([float(r["value"]) for r in mine]).all()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["preset"] == "paper" and meta["seed"] == 3
    assert meta["metrics"]["max_sensitivity"]["params"]["nr_samples"] == 3
    assert meta["metrics"]["max_sensitivity"]["direction"] == "lower"

    # same seed: identical file; another batch size: the same values up to float32 rounding of
    # batched forward passes; another seed: other sensitivity values
    first = path.read_text()
    path.unlink()
    score(run, conf, quiet=True)
    assert path.read_text() == first
    path.unlink()
    score(run, ScoreConfig(**{**conf.__dict__, "batch_size": 5}), quiet=True)
    values = [float(r["value"]) for r in _rows(path)]
    np.testing.assert_allclose(values, [float(r["value"]) for r in _rows_text(first)], rtol=1e-6, atol=1e-9)
    score(run, ScoreConfig(**{**conf.__dict__, "seed": 4}), quiet=True)
    other = {(r["index"], r["metric"]): r["value"] for r in _rows(path)}
    again = {(r["index"], r["metric"]): r["value"] for r in _rows_text(first)}
    assert other[("0", "complexity")] == again[("0", "complexity")]
    assert other[("0", "max_sensitivity")] != again[("0", "max_sensitivity")]


def _rows_text(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def test_score_needs_attributions(run):
    with pytest.raises(RunError, match="xairobust explain"):
        score(run, ScoreConfig(explainer="gradient_shap"), quiet=True)


def test_score_config_errors(run):
    with pytest.raises(ConfigError, match="Did you mean 'complexity'"):
        score(run, ScoreConfig(metrics="complexty"), quiet=True)
    with pytest.raises(ConfigError, match="not among --metrics"):
        score(run, ScoreConfig(metrics="complexity", metric_params={"sparseness": {}}), quiet=True)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_explainer_through_both_stages(run, name):
    small = {"ig": {"n_steps": 4}, "gradient_shap": {"n_samples": 3}, "expected_gradients": {"n_samples": 3},
             "smoothgrad": {"n_samples": 3}, "smoothgrad_ig": {"n_samples": 2, "n_steps": 4},
             "lime": {"n_samples": 20}, "kernel_shap": {"n_samples": 20}}
    explain(run, ExplainConfig(explainer=name, n=4, params=small.get(name, {}), background_size=20), quiet=True)
    path = score(run, ScoreConfig(explainer=name, metrics="quick", metric_params=fast_metric_params()), quiet=True)
    assert len(_rows(path)) == 4 * 7


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "xairobust", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_explain_and_score(run):
    out = _cli("explain", "--run", str(run), "--explainer", "ig", "--n", "5", "--n-steps", "4", "--quiet")
    assert out.returncode == 0, out.stderr
    out = _cli("score", "--run", str(run), "--explainer", "ig", "--metrics", "complexity,sparseness", "--quiet")
    assert out.returncode == 0, out.stderr
    assert len(_rows(run / "scores" / "ig.csv")) == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "--explainer", "ig", "--n-step", "4"], "Did you mean 'n_steps'"),
        (["explain", "--explainer", "igg"], "Did you mean 'ig'"),
        (["explain", "--target", "banana"], "--target must be pred, label or an output index"),
        (["score", "--metrics", "sparsenes"], "Did you mean 'sparseness'"),
        (["score", "--set", "max_sensitivity.radius=-1"], "--radius must be > 0"),
    ],
)
def test_cli_errors_are_one_line(run, args, message, monkeypatch, capsys):
    from xairobust.cli import run as entry_point  # what the console script calls

    monkeypatch.setattr(sys, "argv", ["xairobust", args[0], "--run", str(run), *args[1:]])
    with pytest.raises(SystemExit) as exit_info:
        entry_point()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (run / "attributions" / "igg.json").exists()

