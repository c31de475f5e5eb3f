"""xairobust.report.analysis (issue 19): seeds as the unit, the crossed mixed model, the
common-correct filter and dose-response, each against an independent computation (scipy /
statsmodels on the same inputs, a closed form, or a planted truth)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from xairobust.errors import ConfigError
from xairobust.report import analysis as an


def _crossed(rng, effects, seeds, samples, s_seed, s_sample, s_res, s_run=0.0, metric="m"):
    """value = effect[label] + u_seed + u_run + u_sample + e: every label x seed x sample."""
    us = rng.normal(0, s_seed, seeds)
    ui = rng.normal(0, s_sample, samples)
    parts = []
    for j, eff in enumerate(effects):
        for k in range(seeds):
            v = eff + us[k] + rng.normal(0, s_run) + ui + rng.normal(0, s_res, samples)
            parts.append(pd.DataFrame({"explainer": "ig", "setting": "d/m", "metric": metric, "direction": "lower",
                                       "label": f"lab{j}", "seed": k, "run": f"run{j}_{k}",
                                       "sample": np.arange(samples), "value": v}))
    return pd.concat(parts, ignore_index=True)


# -- (b) mixed model ------------------------------------------------------------------------------

@pytest.mark.slow  # 200 REML fits: ~30 s on a shared CPU
def test_mixed_model_ci_covers_true_effect_at_nominal_rate():
    """200 draws of the issue's model (value ~ label + (1|seed) + (1|sample)) with known effect and
    variance components: the 95 % CI covers the planted effect in 95 % of draws. Tolerance: 3
    binomial standard deviations, sqrt(.95 * .05 / 200) = 0.0154, i.e. coverage in [0.904, 0.996]
    (an interval that ignored the sample variance would cover ~100 %, one too narrow far less).
    The mean REML variance estimates recover the planted ones (tolerance: 4 standard errors of
    the mean over draws, from the draws' own spread)."""
    rng = np.random.default_rng(2026)
    true, draws = 0.4, 200
    covered, var_seed, var_sample, var_res = 0, [], [], []
    for _ in range(draws):
        frame = _crossed(rng, (0.0, true), seeds=4, samples=6, s_seed=0.5, s_sample=1.0, s_res=0.5)
        row = an.mixed_effects(frame, "lab0", run_effect=False).iloc[0]
        covered += row.ci_low <= true <= row.ci_high
        var_seed.append(row.var_seed)
        var_sample.append(row.var_sample)
        var_res.append(row.var_residual)
    rate = covered / draws
    tol = 3 * math.sqrt(0.95 * 0.05 / draws)
    assert abs(rate - 0.95) <= tol, f"coverage {rate:.3f} outside 0.95 +- {tol:.3f}"
    for est, planted in ((var_seed, 0.25), (var_sample, 1.0), (var_res, 0.25)):
        est = np.asarray(est)
        assert abs(est.mean() - planted) <= 4 * est.std(ddof=1) / math.sqrt(draws), (est.mean(), planted)
    assert row.formula == "value ~ C(label, Treatment(baseline)) + (1|seed) + (1|sample)"


def test_mixed_model_equals_statsmodels_formula_interface():
    """The design matrices built in analysis give the same fit as statsmodels' own formula
    interface with groups = one constant group and vc_formula per crossed factor."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(5)
    frame = _crossed(rng, (0.0, 0.3, -0.2), seeds=3, samples=8, s_seed=0.4, s_sample=1.0, s_res=0.5, s_run=0.3)
    ours = an.mixed_effects(frame, "lab0").set_index("label")
    data = frame.assign(seed=frame["seed"].astype(str), sample=frame["sample"].astype(str))
    ref = smf.mixedlm("value ~ C(label, Treatment(reference='lab0'))", data, groups=np.ones(len(data)),
                      re_formula="0", vc_formula={"seed": "0 + C(seed)", "run": "0 + C(run)",
                                                  "sample": "0 + C(sample)"}).fit(reml=True, method="lbfgs")
    for lab in ("lab1", "lab2"):
        name = f"C(label, Treatment(reference='lab0'))[T.{lab}]"
        assert ours.loc[lab, "estimate"] == pytest.approx(ref.params[name], rel=1e-6)
        assert ours.loc[lab, "se"] == pytest.approx(ref.bse[name], rel=1e-3)
        assert ours.loc[lab, "p_value"] == pytest.approx(ref.pvalues[name], rel=1e-2, abs=1e-6)
    assert ours.loc["lab1", "var_residual"] == pytest.approx(ref.scale, rel=1e-3)


def test_mixed_model_run_term_equals_seed_level_paired_t():
    """Balanced design, two labels, large planted run-to-run variance: the REML Wald SE of the
    difference equals the SE of the paired t-test on per-seed means (ANOVA identity: both are
    sqrt(2 MS(label x seed) / (n_samples n_seeds))). Without (1|run) the SE is several times too
    small -- why the run term is in the default model."""
    rng = np.random.default_rng(3)
    frame = _crossed(rng, (0.0, 0.4), seeds=5, samples=20, s_seed=0.5, s_sample=1.0, s_res=0.3, s_run=1.0)
    mixed = an.mixed_effects(frame, "lab0").iloc[0]
    seeds = an.seed_tests(frame, "lab0").iloc[0]
    means = frame.groupby(["label", "seed"])["value"].mean().unstack(0)
    d = means["lab1"] - means["lab0"]
    assert mixed.estimate == pytest.approx(d.mean(), rel=1e-6)
    assert mixed.se == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), rel=1e-3)
    assert seeds.test == "paired t" and seeds.mean_diff == pytest.approx(d.mean(), rel=1e-12)
    naive = an.mixed_effects(frame, "lab0", run_effect=False).iloc[0]
    assert naive.se < mixed.se / 3


def test_mixed_model_one_seed_drops_seed_and_run_terms():
    rng = np.random.default_rng(0)
    frame = _crossed(rng, (0.0, 0.5), seeds=1, samples=30, s_seed=0.5, s_sample=1.0, s_res=0.5)
    row = an.mixed_effects(frame, "lab0").iloc[0]
    assert row.formula == "value ~ C(label, Treatment(baseline)) + (1|sample)"
    assert math.isnan(row.var_seed) and math.isnan(row.var_run) and row.n_seeds == 1
    # one seed, a sample random intercept: the paired (on samples) t-test's estimate and SE
    w = frame.pivot(index="sample", columns="label", values="value")
    d = w["lab1"] - w["lab0"]
    assert row.estimate == pytest.approx(d.mean(), rel=1e-6)
    assert row.se == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), rel=2e-3)


# -- (a) seeds as the unit ------------------------------------------------------------------------

def _per_seed(frame):
    return {lab: g.groupby("seed")["value"].mean() for lab, g in frame.groupby("label")}


def test_seed_tests_paired_equal_scipy_ttest_rel():
    rng = np.random.default_rng(11)
    frame = _crossed(rng, (0.0, 0.2, -0.4), seeds=4, samples=10, s_seed=0.5, s_sample=1.0, s_res=0.5, s_run=0.2)
    frame.loc[3, "value"] = np.nan  # a dropped sample: left out of that run's mean
    out = an.seed_tests(frame, "lab0", correction="none").set_index("label")
    m = _per_seed(frame.dropna(subset=["value"]))
    for lab in ("lab1", "lab2"):
        ref = sst.ttest_rel(m[lab].to_numpy(), m["lab0"].to_numpy())
        ci = ref.confidence_interval(0.95)
        row = out.loc[lab]
        assert (row.test, row.unit, row.n_pairs) == ("paired t", "seeds", 4)
        assert row.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
        assert row.df == 3 and row.p_adjusted == row.p_value
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
        assert row.mean_diff == pytest.approx((m[lab] - m["lab0"]).mean(), rel=1e-12)


def test_seed_tests_welch_when_seeds_are_not_shared_and_holm():
    rng = np.random.default_rng(12)
    frame = _crossed(rng, (0.0, 0.6), seeds=4, samples=10, s_seed=0.5, s_sample=1.0, s_res=0.5)
    frame.loc[frame["label"] == "lab1", "seed"] += 10  # other seeds: nothing to pair on
    other = frame.assign(metric="m2", value=frame["value"] * 2 + 1)
    both = pd.concat([frame, other], ignore_index=True)
    out = an.seed_tests(both, "lab0", correction="holm").set_index("metric")
    ps = []
    for metric, part in both.groupby("metric"):
        m = _per_seed(part)
        ref = sst.ttest_ind(m["lab1"].to_numpy(), m["lab0"].to_numpy(), equal_var=False)
        row = out.loc[metric]
        assert (row.test, row.n_pairs, row.n_seeds_method, row.n_seeds_baseline) == ("welch t", 0, 4, 4)
        assert row.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
        assert row.df == pytest.approx(ref.df, rel=1e-12)
        ps.append(ref.pvalue)
    import statsmodels.stats.multitest as mt

    holm = mt.multipletests(ps, method="holm")[1]
    assert out.sort_index()["p_adjusted"].to_numpy() == pytest.approx(holm, rel=1e-12)
    forced = an.seed_tests(frame.assign(seed=frame["seed"] % 10), "lab0", pairing="welch").iloc[0]
    assert forced.test == "welch t"


def test_seed_tests_one_seed_says_images_only():
    rng = np.random.default_rng(13)
    frame = _crossed(rng, (0.0, 0.6), seeds=1, samples=10, s_seed=0.5, s_sample=1.0, s_res=0.5)
    row = an.seed_tests(frame, "lab0").iloc[0]
    assert row.unit == "images only" and row.note == an.ONE_SEED_NOTE
    assert math.isnan(row.p_value) and not row.significant
    assert row.mean_diff == pytest.approx(frame[frame.label == "lab1"].value.mean() - frame[frame.label == "lab0"].value.mean())


def test_seed_tests_bad_options():
    with pytest.raises(ConfigError, match="pairing"):
        an.seed_tests(pd.DataFrame(), "x", pairing="pool")


def test_ladder_points_between_seed_ci():
    rng = np.random.default_rng(14)
    frame = _crossed(rng, (0.0, 0.6), seeds=3, samples=5, s_seed=0.5, s_sample=1.0, s_res=0.5)
    frame["robust_acc"] = np.where(frame["label"] == "lab0", 0.1, 0.5) + frame["seed"] * 0.01
    pts = an.ladder_points(frame).set_index("label")
    m = _per_seed(frame)["lab1"].to_numpy()
    lo, hi = sst.t.interval(0.95, len(m) - 1, loc=m.mean(), scale=sst.sem(m))
    assert pts.loc["lab1", "mean"] == pytest.approx(m.mean())
    assert (pts.loc["lab1", "ci_low"], pts.loc["lab1", "ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
    assert pts.loc["lab1", "robust_acc"] == pytest.approx(0.51) and pts.loc["lab1", "n_seeds"] == 3


# -- (c) common-correct ---------------------------------------------------------------------------

def test_common_correct_on_hand_built_frame():
    # two explainers, three runs; correctness per (run, sample); ig/run C lacks sample 4
    ok = {"A": {1: True, 2: True, 3: False, 4: True, 5: True},
          "B": {1: True, 2: False, 3: True, 4: True, 5: True},
          "C": {1: True, 2: True, 3: True, 4: True, 5: False}}
    rows = []
    for explainer in ("ig", "saliency"):
        for run, per in ok.items():
            for sample, good in per.items():
                if explainer == "ig" and run == "C" and sample == 4:
                    continue
                for metric in ("m1", "m2"):
                    rows.append({"explainer": explainer, "setting": "s", "run": run, "label": run, "metric": metric,
                                 "sample": sample, "value": float(sample), "correct": good})
    frame = pd.DataFrame(rows)
    kept, counts = an.common_correct(frame)
    got = {e: sorted(set(g["sample"])) for e, g in kept.groupby("explainer")}
    assert got == {"ig": [1], "saliency": [1, 4]}
    assert len(kept) == 1 * 3 * 2 + 2 * 3 * 2  # samples x runs x metrics
    c = counts.set_index("explainer")
    assert c.loc["ig", "n_common_correct"] == 1 and c.loc["saliency", "n_common_correct"] == 2
    assert c.loc["ig", "n_samples_before"] == 5 and c.loc["ig", "n_runs"] == 3
    # the comparison can be one table (explainer, setting) or wider: only run A and B -> 1, 4, 5 on saliency
    ab, _ = an.common_correct(frame[frame["run"].isin(["A", "B"]) & (frame["explainer"] == "saliency")])
    assert sorted(set(ab["sample"])) == [1, 4, 5]
    unknown = frame.astype({"correct": "boolean"})
    unknown.loc[unknown["run"] == "B", "correct"] = pd.NA
    with pytest.raises(ConfigError, match="B records no per-sample correctness"):
        an.common_correct(unknown)


# -- (d) dose-response ----------------------------------------------------------------------------

def _runs(robust, clean, value, metric="m"):
    n = len(robust)
    return pd.DataFrame({"explainer": "ig", "setting": "s", "metric": metric, "direction": "lower",
                         "label": [f"r{i}" for i in range(n)], "seed": 0, "run": [f"run{i}" for i in range(n)],
                         "sample": 0, "value": value, "robust_acc": robust, "clean_acc": clean})


def test_dose_response_correlations_equal_scipy_and_bootstrap_is_a_loop_over_runs():
    rng = np.random.default_rng(21)
    robust = rng.uniform(0.0, 0.6, 9)
    value = -robust + rng.normal(0, 0.1, 9)
    value[2] = value[5]  # a tie
    frame = _runs(robust, rng.uniform(0.6, 0.9, 9), value)
    row = an.dose_response(frame, n_boot=200, seed=4).iloc[0]
    sp, kt = sst.spearmanr(robust, value), sst.kendalltau(robust, value)
    assert row.spearman == pytest.approx(sp.statistic, rel=1e-12) and row.spearman_p == pytest.approx(sp.pvalue, rel=1e-12)
    assert row.kendall == pytest.approx(kt.statistic, rel=1e-12) and row.kendall_p == pytest.approx(kt.pvalue, rel=1e-12)
    # the bootstrap, naively: the same resamples of runs, scipy's statistics, drop the degenerate ones
    idx = np.random.default_rng(4).integers(0, 9, size=(200, 9))
    rhos, taus = [], []
    for i in idx:
        x, y = 100 * robust[i], value[i]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            rhos.append(sst.spearmanr(x, y).statistic)
            taus.append(sst.kendalltau(x, y).statistic)
    assert (row.spearman_ci_low, row.spearman_ci_high) == pytest.approx(tuple(np.percentile(rhos, [2.5, 97.5])), rel=1e-9)
    assert (row.kendall_ci_low, row.kendall_ci_high) == pytest.approx(tuple(np.percentile(taus, [2.5, 97.5])), rel=1e-9)
    assert row.corr_ci_method.startswith(an.CORRELATION_CI)
    again = an.dose_response(frame, n_boot=200, seed=4).iloc[0]
    assert again.spearman_ci_low == row.spearman_ci_low  # seeded


def test_adjusted_slope_recovers_planted_value_under_confound():
    """metric = a * robust_pts + b * clean_pts + noise, with clean accuracy falling as robust
    accuracy rises (the confound of robust training). The unadjusted slope is wrong by far more
    than its noise; the adjusted one recovers a within 4 of its standard errors, and both equal
    numpy least squares."""
    rng = np.random.default_rng(7)
    n, a, b, sigma = 40, -0.02, 0.05, 0.02  # per point of accuracy
    rob = rng.uniform(0, 60, n)
    clean = 95 - 0.4 * rob + rng.normal(0, 3, n)
    y = a * rob + b * clean + rng.normal(0, sigma, n)
    row = an.dose_response(_runs(rob / 100, clean / 100, y), n_boot=0).iloc[0]
    # the regression on robust accuracy alone has slope a - 0.4 b per point in expectation
    assert row.slope_per10 == pytest.approx(10 * np.polyfit(rob, y, 1)[0], rel=1e-9)
    coef = np.linalg.lstsq(np.column_stack([np.ones(n), rob, clean]), y, rcond=None)[0]
    assert row.adj_slope_per10 == pytest.approx(10 * coef[1], rel=1e-9)
    assert row.clean_slope_per10 == pytest.approx(10 * coef[2], rel=1e-9)
    assert abs(row.adj_slope_per10 - 10 * a) <= 4 * row.adj_slope_se
    assert abs(row.slope_per10 - 10 * a) > 10 * row.adj_slope_se  # unadjusted: confounded
    assert row.adj_ci_low <= 10 * a <= row.adj_ci_high
    assert row.adj_slope_se > 0 and math.isnan(row.spearman_ci_low)  # n_boot=0: no correlation CI


def test_adjustment_flag_and_sentence():
    """Planted: no effect of robust accuracy at all, only of clean accuracy; robust and clean
    accuracy anti-correlated, so the unadjusted slope is significant and the adjusted one is not."""
    rng = np.random.default_rng(8)
    n = 30
    rob = rng.uniform(0, 60, n)
    clean = 95 - 0.4 * rob + rng.normal(0, 3, n)
    y = 0.05 * clean + rng.normal(0, 0.05, n)
    row = an.dose_response(_runs(rob / 100, clean / 100, y), n_boot=0).iloc[0]
    assert row.slope_p < 0.05
    assert row.adjustment_changes == (row.adj_p >= 0.05 or np.sign(row.adj_slope_per10) != np.sign(row.slope_per10))
    assert row.adjustment_changes
    assert "held fixed" in row.adjustment_note or "reverses" in row.adjustment_note
    assert an.adjustment_change(-1.0, 0.01, 1.0, 0.2, 0.05) == (
        True, "Adjusting for clean accuracy reverses the sign of the slope (from -1 to +1 per +10 points of robust accuracy).")
    assert an.adjustment_change(-1.0, 0.01, -0.9, 0.2, 0.05)[1].startswith("The slope (-1 per +10 points")
    assert an.adjustment_change(-1.0, 0.2, -0.9, 0.01, 0.05)[1].startswith("The slope becomes significant")
    assert an.adjustment_change(-1.0, 0.01, -0.9, 0.02, 0.05) == (False, "")


def test_dose_response_too_few_runs():
    row = an.dose_response(_runs([0.1, 0.2], [0.9, 0.8], [1.0, 2.0]), n_boot=0).iloc[0]
    assert row.n_runs == 2 and math.isnan(row.spearman) and "fewer than 3" in row.note
    with pytest.raises(ConfigError, match="n_boot"):
        an.dose_response(_runs([0.1], [0.9], [1.0]), n_boot=10)
