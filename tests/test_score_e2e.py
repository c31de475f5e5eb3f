"""explain -> score end to end on every registered dataset's input shape, with both engines.

A tiny model of each dataset's input shape (so every shape costs seconds); inputs are the real
test split for digits (bundled) and a random tensor of the dataset's shape and value range for
the others (their real data is large to decode; the shape is what broke scoring, issue 14).
Metric parameters are the ``paper`` preset's (200 perturbations, 100 subsets, the automatic
Faithfulness Estimate step); IG is cut to 4 steps to keep the test at seconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from xairobust.data.base import DataSplit, get_source
from xairobust.errors import RunError
from xairobust.models.base import create_model
from xairobust.registry import DATASETS
from xairobust.runs import RUN_JSON, WEIGHTS, file_sha256, read_json, save_model, write_json_atomic
from xairobust.stages.explain import ExplainConfig, explain
from xairobust.stages.score import ScoreConfig, partial_dir, score

N = 1


def make_run(root: Path, dataset: str) -> tuple[Path, object]:
    info = get_source(dataset).info()
    c, h, *rest = info.input_shape
    w = rest[0] if rest else 1
    torch.manual_seed(0)
    kwargs = {"num_outputs": info.num_outputs, "in_channels": c, "input_size": h, "input_width": w, "hidden": 8}
    model = create_model("tiny_mlp", mean=list(info.mean), std=list(info.std), **kwargs)
    run = root / dataset
    run.mkdir(parents=True)
    sha = save_model(run / WEIGHTS, model)
    meta = {
        "dataset": {"name": dataset, "kwargs": {}, "info": info.as_json()},
        "model": {"name": "tiny_mlp", "kwargs": {**kwargs, "mean": list(info.mean), "std": list(info.std)}},
        "method": {"name": "standard"},
        "seed": 0,
        "weights_sha256": sha,
    }
    write_json_atomic(run / RUN_JSON, meta)
    return run, info


def fake_split(info, n: int = 8) -> DataSplit:
    lo, hi = info.value_range or (0.0, 1.0)
    x = lo + (hi - lo) * torch.rand((n, *info.input_shape), generator=torch.Generator().manual_seed(1))
    if info.task == "classification":
        y = torch.arange(n) % info.num_outputs
    else:
        y = torch.rand((n, info.num_outputs), generator=torch.Generator().manual_seed(2))
    return DataSplit(x=x, y=y, info=info)


@pytest.mark.parametrize("engine", ["native", "quantus"])
@pytest.mark.parametrize("dataset", DATASETS.names())
def test_explain_then_score_paper_preset_on_every_dataset_shape(dataset, engine, tmp_path, monkeypatch):
    run, info = make_run(tmp_path, dataset)
    if dataset != "digits":
        split = fake_split(info)
        monkeypatch.setattr("xairobust.stages.explain.get_dataset", lambda *a, **k: split)
    target = "pred" if info.task == "classification" else "0"
    explain(run, ExplainConfig(explainer="ig", n=N, params={"n_steps": 4}, target=target), quiet=True)
    path = score(run, ScoreConfig(explainer="ig", metrics="paper", engine=engine), quiet=True)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == N * 7
    values = np.array([float(r["value"]) for r in rows])
    assert np.isfinite(values).all(), rows
    doc = read_json(path.with_suffix(".json"))
    assert doc["engine"] == engine and doc["preset"] == "paper"
    assert doc["metrics"]["max_sensitivity"]["params"]["nr_samples"] == 200
    assert doc["provenance"]["inputs"]["attributions"]["sha256"] == file_sha256(run / "attributions" / "ig.safetensors")
    assert not partial_dir(run, "ig").exists()


@pytest.fixture()
def digits_scored(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    explain(run, ExplainConfig(explainer="ig", n=4, params={"n_steps": 4}), quiet=True)
    return run


FAST = {"max_sensitivity": {"nr_samples": 3}, "avg_sensitivity": {"nr_samples": 3}, "local_lipschitz_estimate": {"nr_samples": 3},
        "faithfulness_correlation": {"nr_runs": 5}}


def test_score_resumes_from_finished_metrics(digits_scored, monkeypatch):
    run = digits_scored
    conf = ScoreConfig(metrics="paper", metric_params=FAST)
    from xairobust.metrics import quantus_metrics

    def boom(self, inp):
        raise RuntimeError("late failure")

    monkeypatch.setattr(quantus_metrics.Sparseness, "score_native", boom)
    with pytest.raises(RuntimeError, match="late failure"):
        score(run, conf, quiet=True)
    finished = sorted(p.stem for p in partial_dir(run, "ig").iterdir())
    assert finished == sorted(["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "faithfulness_correlation",
                               "faithfulness_estimate", "complexity"])
    monkeypatch.undo()
    calls = []
    real = quantus_metrics.MaxSensitivity.score_native
    monkeypatch.setattr(quantus_metrics.MaxSensitivity, "score_native", lambda self, inp: calls.append(1) or real(self, inp))
    path = score(run, conf, quiet=True)
    assert calls == [] and not partial_dir(run, "ig").exists()
    resumed = path.read_text()
    path.unlink()
    path.with_suffix(".json").unlink()
    score(run, conf, quiet=True)  # from scratch: the same file
    assert path.read_text() == resumed


def test_score_refuses_attributions_of_a_replaced_model(digits_scored):
    run = digits_scored
    conf = ScoreConfig(metrics="complexity")
    score(run, conf, quiet=True)
    doc = read_json(run / "attributions" / "ig.json")
    doc["provenance"]["inputs"]["weights"]["sha256"] = "0" * 64  # as if the weights changed since
    write_json_atomic(run / "attributions" / "ig.json", doc)
    with pytest.raises(RunError, match="xairobust explain --run .* --explainer ig"):
        score(run, ScoreConfig(metrics="sparseness"), quiet=True)


def test_explain_caps_every_pass_and_keeps_the_values(digits_run, tmp_path):
    import shutil

    from xairobust.runs import load_run, load_tensors

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    ref = load_tensors(explain(run, ExplainConfig(explainer="ig", n=6, params={"n_steps": 4}, points_per_pass=4096), quiet=True))
    sizes = []
    real = load_run

    def hooked(*a, **k):
        model, meta = real(*a, **k)
        model.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
        return model, meta

    import xairobust.stages.explain as stage

    stage.load_run, saved = hooked, stage.load_run
    try:
        (run / "attributions" / "ig.json").unlink()
        got = load_tensors(explain(run, ExplainConfig(explainer="ig", n=6, params={"n_steps": 4}, points_per_pass=8), quiet=True))
    finally:
        stage.load_run = saved
    assert sizes and max(s for s in sizes[1:]) <= 8  # the first forward is the prediction pass
    torch.testing.assert_close(got["attributions"], ref["attributions"], rtol=1e-5, atol=1e-7)
