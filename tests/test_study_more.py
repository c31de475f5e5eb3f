"""The study's dose-response for manipulation resistance and visualisation numbers (issue 19 item
4): the report's per-sample files (manipulation_samples.csv, visual_samples.csv) on synthetic rows
with planted slopes, checked against scipy.stats on the run means computed here."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from xairobust.report import analysis
from xairobust.report.study import Section, _more, more_long

EPS = (0.0, 0.05, 0.1, 0.2)
SEEDS = (0, 1)
ROBUST = {0.0: 0.05, 0.05: 0.35, 0.1: 0.6, 0.2: 0.8}
N = 20


def _rows(tmp_path):
    rng = np.random.default_rng(0)
    info, man, vis = [], [], []
    for eps in EPS:
        for seed in SEEDS:
            run = f"/abs/root/runs/z/pgd_eps{eps}_s{seed}"
            robust, clean = ROBUST[eps] + 0.01 * seed, 0.97 - 0.1 * eps - 0.005 * seed
            info.append({"run": run, "setting": "digits/digits_cnn", "family": "pgd", "label": f"PGD eps={eps:g}",
                         "seed": seed, "ladder_param": "eps", "ladder_value": eps, "eps": eps, "init": "",
                         "clean_acc": clean, "robust_acc": robust, "explainer": "ig", "metric": "sparseness",
                         "direction": "higher", "sample": 0, "value": 0.5, "correct": True, "floor": np.nan})
            rel = f"runs/z/pgd_eps{eps}_s{seed}"  # as a batch gives the report its runs
            for i in range(N):
                for explainer, shift in (("ig", 0.0), ("saliency", 0.1)):
                    topk = 0.3 + 0.5 * robust + shift + 0.02 * rng.standard_normal()  # planted: +0.05 / 10 pts
                    for metric, value in (("topk_10", topk), ("fooled", float(rng.random() < 0.5)),
                                          ("norm_linf", 0.1)):
                        man.append({"attack": "topk", "attacked": "ig", "index": i, "target": 0,
                                    "explainer": explainer, "metric": metric, "value": value,
                                    "setting": "digits/digits_cnn", "label": f"PGD eps={eps:g}", "method": "pgd",
                                    "seed": seed, "run": rel, "weights_sha256": "0" * 64})
                vis.append({"explainer": "run:/x/extractor", "setting": "digits/digits_cnn",
                            "label": f"PGD eps={eps:g}", "method": "pgd", "seed": seed, "run": rel, "index": i,
                            "target": i % 10, "metric": "feature_distance",
                            "value": 3.0 - 2.0 * robust + 0.05 * rng.standard_normal(), "weights_sha256": "0" * 64})
    # a run the study does not know: left out, named in a note
    man.append({**man[0], "run": "elsewhere/other_run"})
    pd.DataFrame(man).to_csv(tmp_path / "manipulation_samples.csv", index=False)
    pd.DataFrame(vis).to_csv(tmp_path / "visual_samples.csv", index=False)
    return pd.DataFrame(info, columns=analysis.LONG_COLUMNS), pd.DataFrame(man[:-1]), pd.DataFrame(vis)


def test_more_long_names_rows_like_the_report_and_keeps_the_tested_measures(tmp_path):
    long, _, _ = _rows(tmp_path)
    more, notes = more_long(tmp_path, long)
    assert set(more["explainer"]) == {"topk/ig", "topk/ig→saliency", "run:/x/extractor"}
    assert set(more["metric"]) == {"topk_10", "fooled", "feature_distance"}  # norm_linf has no direction
    assert more[["robust_acc", "clean_acc", "ladder_value", "family"]].notna().all().all()
    assert set(more["run"]) == set(long["run"])
    assert notes == ["left out (no robust accuracy among the study's runs): elsewhere/other_run"]
    assert dict(zip(more["metric"], more["direction"], strict=True)) == {
        "topk_10": "higher", "fooled": "lower", "feature_distance": "lower"}


def test_more_dose_response_equals_scipy_on_the_run_means(tmp_path):
    long, man, vis = _rows(tmp_path)
    section = Section(name="s", report_dir=tmp_path, runs=[], baseline="PGD eps=0", n_boot=200)
    dose, runs, mono, _ = _more(section, long)
    acc = long.set_index("run")
    full = {r: p for r, p in zip(long["run"], long["run"], strict=True)}
    cases = [("topk/ig", "topk_10", man[(man["explainer"] == "ig") & (man["metric"] == "topk_10")]),
             ("topk/ig→saliency", "topk_10", man[(man["explainer"] == "saliency") & (man["metric"] == "topk_10")]),
             ("run:/x/extractor", "feature_distance", vis)]
    for explainer, metric, rows in cases:
        means = rows.groupby("run")["value"].mean()
        means.index = ["/abs/root/" + r for r in means.index]
        x = 100 * acc.loc[means.index, "robust_acc"].to_numpy()
        clean = 100 * acc.loc[means.index, "clean_acc"].to_numpy()
        y = means.to_numpy()
        row = dose[(dose["explainer"] == explainer) & (dose["metric"] == metric)].iloc[0]
        lr = stats.linregress(x, y)
        half = stats.t.ppf(0.975, len(x) - 2) * lr.stderr
        np.testing.assert_allclose(row["slope_per10"], 10 * lr.slope, rtol=1e-10)
        np.testing.assert_allclose([row["slope_ci_low"], row["slope_ci_high"]],
                                   [10 * (lr.slope - half), 10 * (lr.slope + half)], rtol=1e-10)
        np.testing.assert_allclose(row["spearman"], stats.spearmanr(x, y).statistic, rtol=1e-12)
        np.testing.assert_allclose(row["kendall"], stats.kendalltau(x, y).statistic, rtol=1e-12)
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, clean]), y, rcond=None)
        np.testing.assert_allclose(row["adj_slope_per10"], 10 * coef[1], rtol=1e-8)
        assert row["kind"] == ("visual" if metric == "feature_distance" else "manipulation")
        got = runs[(runs["explainer"] == explainer) & (runs["metric"] == metric)].set_index("run")["mean"]
        np.testing.assert_allclose(got.loc[means.index].to_numpy(), y, rtol=1e-12)
    # the planted slopes are recovered: top-k +0.05, feature distance -0.2 per +10 points
    top = dose[(dose["explainer"] == "topk/ig") & (dose["metric"] == "topk_10")].iloc[0]
    assert top["slope_ci_low"] < 0.05 < top["slope_ci_high"] and top["slope_ci_low"] > 0
    fd = dose[dose["metric"] == "feature_distance"].iloc[0]
    assert fd["slope_ci_low"] < -0.2 < fd["slope_ci_high"] and fd["slope_ci_high"] < 0
    # FSR was planted independent of robustness (coin flips)
    fsr = dose[(dose["explainer"] == "topk/ig") & (dose["metric"] == "fooled")].iloc[0]
    assert fsr["slope_ci_low"] < 0 < fsr["slope_ci_high"]
    m = mono[(mono["explainer"] == "topk/ig") & (mono["metric"] == "topk_10")].iloc[0]
    assert m["shape"] == "increasing" and m["with_more_robustness"] == "improves"
    assert full  # every run of the long frame is a run of the study


def test_no_per_sample_files_no_section(tmp_path):
    long, _, _ = _rows(tmp_path)
    (tmp_path / "manipulation_samples.csv").unlink()
    (tmp_path / "visual_samples.csv").unlink()
    dose, runs, mono, notes = _more(Section(name="s", report_dir=tmp_path, runs=[], baseline="b"), long)
    assert dose.empty and runs.empty and notes == []
