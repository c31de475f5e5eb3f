"""report's issue-19 additions on fake runs: --common-correct (count in the caption, every table and
test on the common-correct samples), the seeds-as-unit table (seed_stats.csv, seeds.md) and --mixed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run
from scipy import stats as sst

from xairobust.errors import ConfigError
from xairobust.report import ReportConfig, build_report
from xairobust.report import analysis as an

N = 12
SHIFT = {"standard": 1.0, "pgd": 0.5, "nsloss": 0.2}


def _correct(label: str, seed: int) -> np.ndarray:
    ok = np.ones(N, bool)
    ok[{"standard": [0], "pgd": [1, 2], "nsloss": [3]}[label]] = False
    if seed == 1:
        ok[4] = False
    return ok


@pytest.fixture()
def zoo(tmp_path):
    root = tmp_path / "runs"
    values = {}
    for label, s in SHIFT.items():
        for seed in (0, 1, 2):
            rng = np.random.default_rng(100 * seed + len(label))
            v = {"max_sens": s + 0.1 * rng.standard_normal(N), "sparse": 0.5 + 0.05 * rng.standard_normal(N)}
            values[(label, seed)] = v
            write_run(root, f"{label}_s{seed}", label=label, seed=seed, scores={"ig": v}, correct=_correct(label, seed),
                      clean=0.9 - 0.1 * s, robust=0.5 - 0.4 * s, params={"eps": 0.1} if label == "pgd" else None)
    return root, values


def _report(root, out, **kw):
    build_report([root], out, ReportConfig(figures=False, test="ttest", **kw), quiet=True, registry=fake_registry())


def test_common_correct_report(zoo, tmp_path):
    root, values = zoo
    _report(root, tmp_path / "all")
    _report(root, tmp_path / "cc", common_correct=True)
    # samples 0..4 are wrong for some model: 7 of 12 remain
    keep = np.arange(5, N)
    counts = pd.read_csv(tmp_path / "cc" / "common_correct.csv")
    assert counts.to_dict("records") == [{"explainer": "ig", "setting": "digits/digits_cnn", "n_runs": 9,
                                          "n_samples_before": N, "n_common_correct": len(keep)}]
    assert "on the 7 of 12 test samples every model classifies correctly" in (tmp_path / "cc" / "table.md").read_text()
    assert "7 of 12 test samples" in (tmp_path / "cc" / "table.tex").read_text()
    # the plain report is as before: no restriction, no count
    assert "classifies correctly" not in (tmp_path / "all" / "table.tex").read_text()
    assert not (tmp_path / "all" / "common_correct.csv").exists()
    # the tests are on the kept samples: paired t on each sample's seed-mean, by hand
    stats = pd.read_csv(tmp_path / "cc" / "stats.csv").set_index(["method", "metric"])
    for label in ("pgd", "nsloss"):
        x = np.mean([values[(label, s)]["max_sens"][keep] for s in range(3)], axis=0)
        y = np.mean([values[("standard", s)]["max_sens"][keep] for s in range(3)], axis=0)
        assert stats.loc[(label, "max_sens"), "n_pairs"] == len(keep)
        assert stats.loc[(label, "max_sens"), "p_value"] == pytest.approx(sst.ttest_rel(x, y).pvalue, rel=1e-10)
    table = pd.read_csv(tmp_path / "cc" / "table.csv")
    assert len(table)  # rendered
    # reporting again without the flag removes the stale counts file
    _report(root, tmp_path / "cc")
    assert not (tmp_path / "cc" / "common_correct.csv").exists()


def test_seed_table_is_seeds_as_unit(zoo, tmp_path):
    root, values = zoo
    _report(root, tmp_path / "r")
    got = pd.read_csv(tmp_path / "r" / "seed_stats.csv").set_index(["label", "metric"])
    for label in ("pgd", "nsloss"):
        m = [values[(label, s)]["max_sens"].mean() for s in range(3)]
        b = [values[("standard", s)]["max_sens"].mean() for s in range(3)]
        ref = sst.ttest_rel(m, b)
        row = got.loc[(label, "max_sens")]
        assert row["test"] == "paired t" and row["unit"] == "seeds" and row["n_pairs"] == 3
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    md = (tmp_path / "r" / "seeds.md").read_text()
    assert "the stars are about training runs (seeds), not images" in md
    assert "Mixed model" not in md and not (tmp_path / "r" / "mixed.csv").exists()
    # dose-response over the 9 runs, the library's numbers (seeded bootstrap: identical)
    dose = pd.read_csv(tmp_path / "r" / "dose_response.csv").set_index("metric")
    ref = an.dose_response(an.collect_long([root], registry=fake_registry())).set_index("metric")
    for col in ("spearman", "spearman_ci_low", "kendall_ci_high", "slope_per10", "slope_ci_high"):
        assert dose[col].to_numpy() == pytest.approx(ref.loc[dose.index, col].to_numpy(), rel=1e-9)
    rob = [0.5 - 0.4 * SHIFT[lab] for lab in SHIFT for _ in range(3)]
    per_run = [values[(lab, s)]["max_sens"].mean() for lab in SHIFT for s in range(3)]
    assert dose.loc["max_sens", "spearman"] == pytest.approx(sst.spearmanr(rob, per_run).statistic, rel=1e-12)
    assert dose.loc["max_sens", "n_runs"] == 9 and "### Dose-response over runs" in md
    # here clean accuracy is an exact linear function of robust accuracy: no adjusted slope, said so
    assert dose["adj_slope_per10"].isna().all() and dose["note"].str.contains("not a linear").all()


def test_mixed_flag_writes_mixed_csv(zoo, tmp_path):
    root, values = zoo
    _report(root, tmp_path / "r", mixed=True)
    mixed = pd.read_csv(tmp_path / "r" / "mixed.csv")
    assert set(mixed["label"]) == {"pgd", "nsloss"} and set(mixed["metric"]) == {"max_sens", "sparse"}
    assert (mixed["formula"] == "value ~ C(label, Treatment(baseline)) + (1|seed) + (1|run) + (1|sample)").all()
    assert "### Mixed model over all samples" in (tmp_path / "r" / "seeds.md").read_text()
    # equal to the library function on the collected long frame
    ref = an.mixed_effects(an.collect_long([root], registry=fake_registry()), "standard")
    assert mixed["estimate"].to_numpy() == pytest.approx(ref["estimate"].to_numpy(), rel=1e-9)


def test_collect_long_columns(zoo):
    root, values = zoo
    frame = an.collect_long([root], registry=fake_registry())
    assert list(frame.columns) == an.LONG_COLUMNS
    assert len(frame) == 9 * 2 * N
    pgd = frame[(frame["label"] == "pgd") & (frame["seed"] == 1)]
    assert (pgd["eps"] == 0.1).all() and (pgd["ladder_param"] == "eps").all() and (pgd["family"] == "pgd").all()
    assert pgd.groupby("sample")["correct"].first().to_numpy().tolist() == _correct("pgd", 1).tolist()
    assert frame[frame["label"] == "standard"]["eps"].isna().all()
    assert set(frame["direction"]) == {"lower", "higher"}
    assert frame[frame["label"] == "nsloss"]["robust_acc"].iloc[0] == pytest.approx(0.5 - 0.4 * 0.2)


def test_one_seed_says_images_only(tmp_path):
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for label in ("standard", "pgd"):
        write_run(root, label, label=label, seed=0, scores={"ig": {"max_sens": rng.random(N)}})
    _report(root, tmp_path / "r")
    md = (tmp_path / "r" / "seeds.md").read_text()
    assert an.ONE_SEED_NOTE in md and "the stars of table.md are about images" in md
    assert not (tmp_path / "r" / "dose_response.csv").exists()  # no robust accuracies


def test_common_correct_needs_recorded_correctness(tmp_path):
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for label in ("standard", "pgd"):  # attribution files without `correct` (written before it was recorded)
        write_run(root, label, label=label, seed=0, scores={"ig": {"max_sens": rng.random(8)}},
                  indices=np.arange(8) * 3, attributions=["ig"])
    with pytest.raises(ConfigError, match="records no per-sample correctness for ig"):
        _report(root, tmp_path / "r", common_correct=True)
    assert not (tmp_path / "r").exists()


def test_cli_flags(zoo, tmp_path, monkeypatch, capsys):
    from test_report_cli import one_line, run_entry

    root, _ = zoo
    code, out, err = run_entry(monkeypatch, capsys, "report", str(root), "--out", str(tmp_path / "r"),
                               "--common-correct", "--mixed", "--no-figures", "--quiet")
    assert code == 0, err
    for name in ("common_correct.csv", "mixed.csv", "seed_stats.csv", "seeds.md", "dose_response.csv"):
        assert (tmp_path / "r" / name).stat().st_size > 0, name
    old = tmp_path / "old"
    write_run(old, "standard", label="standard", seed=0, scores={"ig": {"max_sens": np.ones(8)}},
              indices=np.arange(8) * 3, attributions=["ig"])
    write_run(old, "pgd", label="pgd", seed=0, scores={"ig": {"max_sens": np.zeros(8)}},
              indices=np.arange(8) * 3, attributions=["ig"])
    code, out, err = run_entry(monkeypatch, capsys, "report", str(old), "--out", str(tmp_path / "o"),
                               "--common-correct", "--no-figures", "--quiet")
    one_line(code, err, "records no per-sample correctness for ig")
