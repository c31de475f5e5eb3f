"""The manipulation report section: tables with arrows and paired tests, figures, stale refusal."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from xairobust import config as cfg
from xairobust.stages.manipulate import ManipulateConfig, manipulate


@pytest.fixture(scope="module")
def two_runs(digits_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("manip_report")
    for label in ("standard", "pgd"):
        run = root / label
        shutil.copytree(digits_run, run)
        meta = json.loads((run / "run.json").read_text())
        meta["label"] = label
        (run / "run.json").write_text(json.dumps(meta))
        conf = cfg.build(ManipulateConfig, {"attack": "topk", "explainer": "saliency", "eps": 0.1, "steps": 2,
                                            "n": 10, "device": "cpu", "seed": 0 if label == "standard" else 1,
                                            "selection": "first"}, "test")
        manipulate(run, conf, quiet=True)
    return root


def test_section_tables_stats_and_figure(two_runs, tmp_path):
    from xairobust.report.manipulation import report

    written = report([two_runs], tmp_path / "rep")
    names = {p.name for p in written}
    assert {"manipulation.md", "manipulation.csv", "manipulation_stats.csv", "manipulation_topk_saliency.png"} <= names
    md = (tmp_path / "rep" / "manipulation.md").read_text()
    assert "Top-10% ↑" in md and "FSR ↓" in md and "CoM shift ↓" in md
    rows = [line for line in md.splitlines() if line.startswith("| standard") or line.startswith("| pgd")]
    assert rows[0].startswith("| standard") and len(rows) == 2  # baseline first
    stats = pd.read_csv(tmp_path / "rep" / "manipulation_stats.csv")
    assert set(stats["method"]) == {"pgd"} and (stats["n_pairs"] == 10).all()
    means = pd.read_csv(tmp_path / "rep" / "manipulation.csv")
    raw = pd.read_csv(two_runs / "pgd" / "manipulation" / "topk_saliency.csv")
    want = raw[raw["metric"] == "topk_10"]["value"].mean()
    assert means[means["label"] == "pgd"]["topk_10"].iloc[0] == pytest.approx(want)


def test_stale_manipulation_is_refused(two_runs, tmp_path):
    from xairobust.errors import RunError
    from xairobust.report.manipulation import report

    run = tmp_path / "copy"
    shutil.copytree(two_runs / "pgd", run)
    with open(run / "model.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(RunError, match="xairobust manipulate --run"):
        report([run], tmp_path / "rep")
