"""The noise floor in table.* and stats.csv, and the refusal to mix presets (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run
from scipy import stats as sst

from xairobust.errors import ConfigError
from xairobust.report import ReportConfig, build_report

N = 30


def scores_json(run, floor: np.ndarray | None, preset: str = "paper", nr: int = 200) -> None:
    entry = {"params": {"nr_samples": nr}, "diagnostics": {}}
    if floor is not None:
        entry["diagnostics"]["noise_floor"] = {"mean": float(floor.mean()), "per_sample": floor.tolist()}
    path = run / "scores" / "eg.json"
    doc = json.loads(path.read_text())  # keeps write_run's provenance block (the report verifies it)
    doc.update({"preset": preset, "metrics": {"max_sens": entry, "sparse": {"params": {}, "diagnostics": {}}}})
    path.write_text(json.dumps(doc))


def make(tmp_path, preset_b: str = "paper"):
    rng = np.random.default_rng(0)
    floor_a, floor_b = 0.9 + 0.01 * rng.standard_normal(N), 0.8 + 0.01 * rng.standard_normal(N)
    # raw: standard is higher (worse) by the floor difference only; floor-corrected: equal-ish
    excess = 0.05 * rng.standard_normal(N)
    raw_a = floor_a + 0.1 + excess
    raw_b = floor_b + 0.1 + excess + 0.01 * rng.standard_normal(N)
    a = write_run(tmp_path, "std", label="standard", seed=0, scores={"eg": {"max_sens": raw_a, "sparse": rng.random(N)}})
    b = write_run(tmp_path, "pgd", label="pgd", seed=0, scores={"eg": {"max_sens": raw_b, "sparse": rng.random(N)}})
    scores_json(a, floor_a)
    scores_json(b, floor_b, preset=preset_b, nr=200 if preset_b == "paper" else 10)
    return a, b, (raw_a, raw_b, floor_a, floor_b)


def test_floor_beside_values_and_tests_on_floor_corrected_values(tmp_path):
    a, b, (raw_a, raw_b, floor_a, floor_b) = make(tmp_path)
    out = tmp_path / "report"
    build_report([a, b], out, ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
    stats = pd.read_csv(out / "stats.csv")
    row = stats[stats["metric"] == "max_sens"].iloc[0]
    assert bool(row["floor_corrected"])
    assert row["mean_floor_method"] == pytest.approx(floor_b.mean())
    assert row["mean_method"] == pytest.approx(raw_b.mean())  # the table's raw mean
    expected = sst.wilcoxon((raw_b - floor_b) - (raw_a - floor_a)).pvalue
    assert row["p_value"] == pytest.approx(expected)
    assert sst.wilcoxon(raw_b - raw_a).pvalue < 1e-6 < row["p_value"]  # raw would be 'significant'
    assert not bool(stats[stats["metric"] == "sparse"].iloc[0]["floor_corrected"])
    md = (out / "table.md").read_text()
    assert "[floor 0.9" in md and "noise floor" in md and "metric - noise floor" in md
    wide = pd.read_csv(out / "table.csv")
    assert wide.loc[wide["method"] == "pgd", "max_sens_floor"].iloc[0] == pytest.approx(floor_b.mean())


def test_report_refuses_scores_of_different_presets(tmp_path):
    a, b, _ = make(tmp_path, preset_b="quick")
    with pytest.raises(ConfigError, match=r"report: eg scores of .*std.* and .*pgd.* different presets"):
        build_report([a, b], tmp_path / "r", ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
