"""The report on real runs: train -> explain -> score (-> per-epoch scores) -> report, with the
real METRICS registry supplying labels, criteria and directions."""

from __future__ import annotations

import pandas as pd
import pytest

from xairobust.registry import METRICS
from xairobust.report import ReportConfig, build_report
from xairobust.report.epochs import score_checkpoints
from xairobust.stages.explain import ExplainConfig, explain
from xairobust.stages.score import ScoreConfig, score
from xairobust.stages.train import TrainConfig, train

EXPLAIN = ExplainConfig(explainer="ig", n=6, params={"n_steps": 8})
SCORE = ScoreConfig(explainer="ig", metrics="quick")


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real") / "runs"
    for method, params, save_every in (("standard", {}, 1), ("pgd", {"eps": 0.1, "steps": 2}, 0)):
        run = train(TrainConfig(epochs=2, seed=0, method=method, method_params=params, save_every=save_every),
                    root / method, quiet=True)
        explain(run, EXPLAIN, quiet=True)
        score(run, SCORE, quiet=True)
    return root


def test_epoch_scores_of_the_last_checkpoint_equal_the_final_scores(real_runs):
    run = real_runs / "standard"
    paths = score_checkpoints(run, EXPLAIN, SCORE, quiet=True)
    assert [p.name for p in paths] == ["ig_epoch_001.csv", "ig_epoch_002.csv"]
    # no early stopping: the epoch-2 checkpoint is the final model, so its scores are the run's
    assert paths[1].read_bytes() == (run / "scores" / "ig.csv").read_bytes()
    assert paths[0].read_bytes() != paths[1].read_bytes()
    before = paths[0].stat().st_mtime_ns
    score_checkpoints(run, EXPLAIN, SCORE, quiet=True)  # same configs: a no-op
    assert paths[0].stat().st_mtime_ns == before


def test_report_uses_the_real_metric_registry(real_runs, tmp_path):
    score_checkpoints(real_runs / "standard", EXPLAIN, SCORE, quiet=True)
    out = tmp_path / "res"
    build_report([real_runs], out, ReportConfig(), quiet=True)
    md = (out / "table.md").read_text()
    names = list(dict.fromkeys(pd.read_csv(real_runs / "standard" / "scores" / "ig.csv")["metric"]))
    for name in names:
        meta = METRICS.meta(name)
        arrow = {"higher": "↑", "lower": "↓"}[meta["direction"]]
        assert f"{meta['label']} {arrow}" in md
    tex = (out / "table.tex").read_text()
    assert r"\multicolumn{3}{c}{Sensitivity}" in tex and r"\multicolumn{2}{c}{Faithfulness}" in tex
    stats = pd.read_csv(out / "stats.csv")
    assert sorted(stats["metric"]) == sorted(names) and set(stats["n_pairs"]) == {6}
    for stem in ("attributions", "box_ig", "epochs_ig"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 2000


def test_long_frame_and_common_correct_on_real_runs(real_runs, tmp_path):
    """explain records, per explained sample, whether the model's clean prediction equals the
    label; the long frame carries it, and --common-correct keeps exactly the samples both models get right."""
    import torch

    from xairobust.data.base import get_dataset
    from xairobust.report.analysis import LONG_COLUMNS, collect_long
    from xairobust.runs import load_run

    frame = collect_long([real_runs])
    assert list(frame.columns) == LONG_COLUMNS
    test = get_dataset("digits", "test")
    both = None
    for name in ("standard", "pgd"):
        model, _ = load_run(real_runs / name)
        part = frame[frame["run"] == str(real_runs / name)].drop_duplicates("sample").sort_values("sample")
        idx = torch.tensor(part["sample"].to_numpy())
        with torch.no_grad():
            truth = (model(test.inputs(idx)).argmax(1) == test.targets(idx)).numpy()
        assert part["correct"].astype(bool).to_numpy().tolist() == truth.tolist()
        ok = set(part["sample"][truth])
        both = ok if both is None else both & ok
    pgd = frame[frame["family"] == "pgd"]
    assert (pgd["eps"] == 0.1).all() and (pgd["ladder_value"] == 0.1).all()
    out = tmp_path / "cc"
    build_report([real_runs], out, ReportConfig(common_correct=True, figures=False), quiet=True)
    counts = pd.read_csv(out / "common_correct.csv")
    assert counts["n_common_correct"].tolist() == [len(both)]
    assert set(pd.read_csv(out / "stats.csv")["n_pairs"]) == {len(both)}
