"""Figures are written in every format, non-empty and really PDF/PNG; epoch curves appear when
a run has per-epoch scores."""

from __future__ import annotations

import numpy as np
import pytest
from report_fake import fake_registry, write_run, zoo

from xairobust.report import ReportConfig, build_report

MAGIC = {"pdf": b"%PDF-", "png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml"}


def _check(path):
    assert path.is_file(), path
    assert path.stat().st_size > 2000, path
    assert path.read_bytes().startswith(MAGIC[path.suffix[1:]]), path


def test_figures_written(tmp_path):
    runs = tmp_path / "runs"
    zoo(runs, n=12, seeds=(0, 1))
    epochs = {e: {"max_sens": np.full(5, 1.0 / e), "sparse": np.full(5, 0.5 + 0.01 * e)} for e in (1, 2, 3)}
    history = [{"epoch": e, "test_accuracy": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    write_run(runs, "nsloss_curve", label="nsloss_curve", seed=0, scores={"ig": epochs[3]},
              epoch_scores=epochs, history=history)
    written = build_report([runs], tmp_path / "out", ReportConfig(plot="violin"), quiet=True, registry=fake_registry())
    figs = tmp_path / "out" / "figures"
    for stem in ("attributions", "violin_ig", "epochs_ig"):
        for fmt in ("pdf", "png"):
            _check(figs / f"{stem}.{fmt}")
            assert figs / f"{stem}.{fmt}" in written
    assert sorted(p.name for p in figs.iterdir()) == sorted(
        f"{s}.{f}" for s in ("attributions", "violin_ig", "epochs_ig") for f in ("pdf", "png"))


def test_no_figures_and_svg(tmp_path):
    zoo(tmp_path / "runs", n=6, seeds=(0,))
    build_report([tmp_path / "runs"], tmp_path / "a", ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert not (tmp_path / "a" / "figures").exists()
    build_report([tmp_path / "runs"], tmp_path / "b", ReportConfig(formats=["svg"]), quiet=True, registry=fake_registry())
    assert sorted(p.name for p in (tmp_path / "b" / "figures").iterdir()) == ["attributions.svg", "box_ig.svg"]
    _check(tmp_path / "b" / "figures" / "box_ig.svg")


def test_scores_without_their_attributions_are_refused(tmp_path):
    """Scores whose attributions are gone cannot be traced to the weights: refused, not drawn without a grid."""
    from xairobust.stages.contract import StaleError

    v = {"sparse": np.linspace(0, 1, 5)}
    write_run(tmp_path / "runs", "a", label="standard", seed=0, scores={"ig": v})
    b = write_run(tmp_path / "runs", "b", label="pgd", seed=0, scores={"ig": v})
    (b / "attributions" / "ig.safetensors").unlink()
    with pytest.raises(StaleError, match=r"scores/ig.json was computed from .*ig.safetensors, which no longer exists"):
        build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(formats=["png"]), registry=fake_registry())
    assert not (tmp_path / "out").exists()


def test_epoch_scores_are_sample_means(tmp_path):
    from xairobust.report.collect import collect_epoch_scores, collect_runs

    epochs = {2: {"max_sens": np.array([1.0, 2.0, np.nan])}, 10: {"max_sens": np.array([0.5, 0.7, 0.9])}}
    write_run(tmp_path / "runs", "a", label="nsloss", seed=4, scores={"ig": epochs[10]}, epoch_scores=epochs)
    (tmp_path / "runs" / "a" / "scores" / "epochs" / "gradient_shap_epoch_001.csv").write_text("index,target,metric,value\n0,0,max_sens,9\n")
    frame = collect_epoch_scores(collect_runs([tmp_path / "runs"]), ["ig"])
    assert frame[["epoch", "metric", "seed"]].values.tolist() == [[2, "max_sens", 4], [10, "max_sens", 4]]
    np.testing.assert_allclose(frame["value"], [1.5, 0.7])


def test_rerun_replaces_figures_of_the_earlier_report(tmp_path):
    zoo(tmp_path / "runs", n=6, seeds=(0,))
    out = tmp_path / "out"
    build_report([tmp_path / "runs"], out, ReportConfig(plot="violin", formats=["png", "svg"], dpi=30), quiet=True,
                 registry=fake_registry())
    (out / "figures" / "notes.txt").write_text("mine")
    build_report([tmp_path / "runs"], out, ReportConfig(plot="box", formats=["png"], dpi=30), quiet=True,
                 registry=fake_registry())
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["attributions.png", "box_ig.png", "notes.txt"]
