"""Paired statistics against scipy on the same pairs; Holm/Bonferroni on known examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run, zoo
from scipy import stats as sst

from xairobust.report import ReportConfig, build_report
from xairobust.report.stats import adjust_p, cohens_dz, rank_biserial


def _stats(tmp_path, **conf) -> pd.DataFrame:
    build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(figures=False, **conf), quiet=True,
                 registry=fake_registry())
    return pd.read_csv(tmp_path / "out" / "stats.csv", keep_default_na=False, na_values=[""])


def holm(p):
    return adjust_p(p, "holm")


def bonferroni(p):
    return adjust_p(p, "bonferroni")


def test_holm_known_example():
    # hand computation: sorted 0.005 0.01 0.03 0.04 -> x4 x3 x2 x1 = 0.02 0.03 0.06 0.04 -> cummax -> 0.06
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # NaN p-values are not comparisons: they stay NaN and do not count in m
    np.testing.assert_allclose(holm(np.array([0.02, np.nan, 0.04])), [0.04, np.nan, 0.04])
    np.testing.assert_allclose(holm(np.array([0.5, 0.9])), [1.0, 1.0])
    np.testing.assert_array_equal(adjust_p(p, "none"), p)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest", reason="statsmodels not installed")
    p = np.random.default_rng(0).uniform(0, 0.2, 30)
    for name, ours in (("holm", holm), ("bonferroni", bonferroni)):
        np.testing.assert_allclose(ours(p), multitest.multipletests(p, method=name)[1], rtol=1e-12)


def test_effect_sizes_by_hand():
    d = np.array([1.0, -2.0, 3.0, 0.0, 4.0])
    # zero dropped; ranks of |d| = 1 2 3 4; R+ = 1 + 3 + 4 = 8, R- = 2 -> (8 - 2) / 10
    assert rank_biserial(d) == pytest.approx(0.6)
    assert cohens_dz(d) == pytest.approx(d.mean() / d.std(ddof=1))


@pytest.mark.parametrize("test", ["wilcoxon", "ttest"])
def test_p_values_equal_scipy_on_the_same_pairs(tmp_path, test):
    truth = zoo(tmp_path / "runs", n=25, seeds=(0, 1, 2))
    stats = _stats(tmp_path, test=test, correction="holm")
    assert len(stats) == 2 * 3  # nsloss and pgd x three metrics
    ps = []
    for row in stats.itertuples():
        # pairs per seed on the sample index, then each sample's mean over the seeds
        x = np.mean([truth[(row.method, s)][row.metric] for s in (0, 1, 2)], axis=0)
        y = np.mean([truth[("standard", s)][row.metric] for s in (0, 1, 2)], axis=0)
        ref = sst.wilcoxon(x, y) if test == "wilcoxon" else sst.ttest_rel(x, y)
        assert row.n_pairs == 25 and row.seeds == "0 1 2" and row.seed_matched
        assert row.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert row.statistic == pytest.approx(ref.statistic, rel=1e-9)
        assert row.mean_diff == pytest.approx((x - y).mean(), rel=1e-9)
        effect = rank_biserial(x - y) if test == "wilcoxon" else (x - y).mean() / (x - y).std(ddof=1)
        assert row.effect_size == pytest.approx(effect, rel=1e-9)
        ps.append(ref.pvalue)
    np.testing.assert_allclose(stats["p_adjusted"], holm(np.array(ps)), rtol=1e-9)
    assert set(stats.loc[stats["metric"] == "max_sens", "better"]) == {"method"}  # lower than standard


def test_pool_pairing_and_unmatched_seeds(tmp_path):
    truth = zoo(tmp_path / "runs", n=10, seeds=(0, 1))
    stats = _stats(tmp_path, pairing="pool", test="ttest").set_index(["method", "metric"])
    row = stats.loc[("nsloss", "sparse")]
    x = np.concatenate([truth[("nsloss", s)]["sparse"] for s in (0, 1)])
    y = np.concatenate([truth[("standard", s)]["sparse"] for s in (0, 1)])
    assert row.n_pairs == 20 and row.p_value == pytest.approx(sst.ttest_rel(x, y).pvalue, rel=1e-9)

    # no seed in common: each sample is averaged over all of each method's seeds, then paired
    other = tmp_path / "b"
    a = {"sparse": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])}
    write_run(other / "runs", "std", label="standard", seed=0, scores={"ig": a})
    write_run(other / "runs", "m1", label="pgd", seed=1, scores={"ig": {"sparse": a["sparse"] + [1, 2, 1, 3, 1, 1]}},
              indices=np.array([0, 1, 2, 3, 4, 99]))  # sample 99 has no partner
    write_run(other / "runs", "m2", label="pgd", seed=2, scores={"ig": {"sparse": a["sparse"] + [3, 2, 1, 1, 2, 3]}})
    s = _stats(other).iloc[0]
    assert not s.seed_matched and s.seeds == "0 1 2" and s.n_pairs == 6
    x = np.array([0.1 + 2, 0.2 + 2, 0.3 + 1, 0.4 + 2, 0.5 + 1.5, 0.9 + 3])  # sample 5 only from seed 2
    assert s.p_value == pytest.approx(sst.wilcoxon(x, a["sparse"]).pvalue, rel=1e-9)


def test_nan_scores_are_left_out_of_pairs(tmp_path):
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    other = np.array([1.5, np.nan, 2.0, 5.0, 9.0, 7.5])
    write_run(tmp_path / "runs", "a", label="standard", seed=0, scores={"ig": {"max_sens": base}})
    write_run(tmp_path / "runs", "b", label="pgd", seed=0, scores={"ig": {"max_sens": other}})
    row = _stats(tmp_path).iloc[0]
    keep = ~np.isnan(other)
    assert row.n_pairs == 5
    assert row.p_value == pytest.approx(sst.wilcoxon(other[keep], base[keep]).pvalue, rel=1e-9)
    assert row.better == "baseline"  # max_sens is lower-is-better and pgd is higher


def test_identical_methods_and_bootstrap(tmp_path):
    v = np.linspace(0, 1, 30)
    write_run(tmp_path / "runs", "a", label="standard", seed=0, scores={"ig": {"sparse": v, "max_sens": v}})
    write_run(tmp_path / "runs", "b", label="pgd", seed=0,
              scores={"ig": {"sparse": v, "max_sens": v + np.sin(np.arange(30)) * 0.1 + 0.05}})
    stats = _stats(tmp_path, bootstrap=500, seed=3).set_index("metric")
    same = stats.loc["sparse"]
    assert same.p_value == 1.0 and same.note == "all differences are zero" and not same.significant
    row = stats.loc["max_sens"]
    d = np.sin(np.arange(30)) * 0.1 + 0.05
    ref = sst.bootstrap((d,), np.mean, n_resamples=500, method="BCa", rng=np.random.default_rng(3))
    assert row.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert row.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert row.ci_low < d.mean() < row.ci_high
    again = _stats(tmp_path, bootstrap=500, seed=3).set_index("metric")
    assert again.loc["max_sens", "ci_low"] == row.ci_low  # seeded: identical


def test_significance_marker_follows_adjusted_p(tmp_path):
    v = np.arange(6.0)
    shift = 1 + 0.1 * np.arange(6)  # every difference the same sign, no ties
    write_run(tmp_path / "runs", "a", label="standard", seed=0, scores={"ig": {"max_sens": v, "sparse": v, "faith_corr": v}})
    for label, sign in (("nsloss", -1), ("pgd", 1)):
        write_run(tmp_path / "runs", label, label=label, seed=0,
                  scores={"ig": {m: v + sign * shift for m in ("max_sens", "sparse", "faith_corr")}})
    stats = _stats(tmp_path, correction="bonferroni", alpha=0.05)
    # n = 6 pairs: the smallest two-sided exact Wilcoxon p is 2/64 = 0.03125; x6 comparisons > 0.05
    np.testing.assert_allclose(stats["p_value"], 0.03125)
    np.testing.assert_allclose(stats["p_adjusted"], 6 * 0.03125)
    assert not stats["significant"].any()
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert "$^{*}$" not in tex.split("Method &")[1]
    stats = _stats(tmp_path, correction="none", alpha=0.05)
    assert stats["significant"].all()
    assert (tmp_path / "out" / "table.tex").read_text().split("Method &")[1].count("$^{*}$") == 6


def test_no_baseline_is_an_error_and_writes_nothing(tmp_path):
    """issue 12: a missing baseline used to be a warning and an empty stats.csv (exit 0)."""
    from xairobust.errors import ConfigError

    write_run(tmp_path / "runs", "a", label="pgd", seed=0, scores={"ig": {"sparse": np.ones(3)}})
    write_run(tmp_path / "runs", "b", label="nsloss", seed=0, scores={"ig": {"sparse": np.zeros(3)}})
    with pytest.raises(ConfigError, match="--baseline 'standard' matches no run label or method"):
        build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(figures=False), registry=fake_registry())
    assert not (tmp_path / "out").exists()
