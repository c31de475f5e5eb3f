"""Paired statistics: every method against the baseline, per explainer x setting x metric.

Pairing (documented choice). Scores are paired on samples: a method's score for test sample i is
compared with the baseline's score for the same sample i. With several seeds, pairs are formed
per seed first (method seed s with baseline seed s, matched on the sample index) and then
combined:

* ``pairing="mean"`` (default): each sample's pair is the mean over the matched seeds of the
  method's and of the baseline's scores, so n = number of samples and every pair is an
  independent unit (the test sample); seed-to-seed variation is averaged out, not counted as
  extra evidence.
* ``pairing="pool"``: every (seed, sample) pair is its own pair (n = seeds x samples). Pairs of
  the same sample under different seeds are not independent, so p-values come out smaller than
  they should; offered for comparison with work that pools.

When the two methods share no seed, each sample's scores are averaged over all of each method's
seeds before pairing (``seed_matched`` is False in stats.csv). Samples with a NaN score on either
side are left out.

Tests come from scipy.stats: ``wilcoxon`` (two-sided, zero differences dropped as in Wilcoxon's
original method, exact or normal approximation as scipy chooses) and ``ttest_rel``. Effect sizes:
the matched-pairs rank-biserial correlation (Kerby 2014; (R+ - R-) / (R+ + R-) over the ranks of
the non-zero |differences|) and Cohen's d_z (mean difference / its standard deviation); the one
matching the test is ``effect_size``. Differences are method - baseline. P-values are corrected
across every comparison in the report (one family: all explainers, settings, methods, metrics).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sst

from xairobust.report.meta import MetricMeta

STATS_COLUMNS = [
    "explainer", "setting", "metric", "category", "direction", "method", "baseline", "test", "pairing",
    "seed_matched", "seeds", "n_pairs", "mean_method", "mean_baseline", "mean_diff", "median_diff",
    "statistic", "p_value", "p_adjusted", "correction", "significant", "better", "effect_size",
    "effect_measure", "rank_biserial", "cohens_dz", "ci_low", "ci_high", "ci_level", "note",
]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def bonferroni(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    m = int((~np.isnan(p)).sum())
    return np.minimum(1.0, p * m)


def correct(p: np.ndarray, method: str) -> np.ndarray:
    if method == "holm":
        return holm(p)
    if method == "bonferroni":
        return bonferroni(p)
    return np.asarray(p, dtype=float).copy()


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of differences ``d`` (zeros dropped)."""
    d = d[d != 0]
    if len(d) == 0:
        return 0.0
    ranks = sst.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def cohens_dz(d: np.ndarray) -> float:
    if len(d) < 2:
        return math.nan
    sd = float(np.std(d, ddof=1))
    return float(np.mean(d) / sd) if sd > 0 else math.nan


def paired_test(x: np.ndarray, y: np.ndarray, test: str) -> tuple[float, float, str]:
    """(statistic, two-sided p, note) of the paired test of x against y."""
    d = x - y
    if len(d) < 2:
        return math.nan, math.nan, "fewer than 2 pairs"
    if np.all(d == 0):
        return 0.0, 1.0, "all differences are zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sst.wilcoxon(x, y) if test == "wilcoxon" else sst.ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue), ""


def bootstrap_ci(d: np.ndarray, n_resamples: int, level: float, seed: int) -> tuple[float, float]:
    """BCa bootstrap CI of the mean difference (scipy.stats.bootstrap, seeded); NaN if degenerate."""
    if n_resamples <= 0 or len(d) < 2 or np.all(d == d[0]):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=level,
                            method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_samples(
    scores: pd.DataFrame, label: str, baseline: str, pairing: str
) -> tuple[np.ndarray, np.ndarray, bool, list[int]]:
    """(method values, baseline values, seed_matched, seeds used) for one explainer/setting/metric.

    ``scores`` holds the rows of one explainer, setting and metric (columns label, seed, index, value).
    """
    a = scores[scores["label"] == label]
    b = scores[scores["label"] == baseline]
    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    if seeds:
        joined = a[a["seed"].isin(seeds)].merge(
            b[b["seed"].isin(seeds)], on=["seed", "index"], suffixes=("_m", "_b"))
        joined = joined.dropna(subset=["value_m", "value_b"])
        if pairing == "mean":
            joined = joined.groupby("index", sort=True)[["value_m", "value_b"]].mean().reset_index()
        else:
            joined = joined.sort_values(["seed", "index"])
        return joined["value_m"].to_numpy(float), joined["value_b"].to_numpy(float), True, seeds
    am = a.dropna(subset=["value"]).groupby("index")["value"].mean()
    bm = b.dropna(subset=["value"]).groupby("index")["value"].mean()
    joined = pd.concat([am.rename("m"), bm.rename("b")], axis=1, join="inner").sort_index()
    used = sorted(set(a["seed"]) | set(b["seed"]))
    return joined["m"].to_numpy(float), joined["b"].to_numpy(float), False, used


def _better(diff: float, direction: str | None) -> str:
    if direction not in ("higher", "lower") or not math.isfinite(diff) or diff == 0:
        return ""
    return "method" if (diff > 0) == (direction == "higher") else "baseline"


def compare_to_baseline(
    scores: pd.DataFrame,
    metas: dict[str, MetricMeta],
    *,
    baseline: str,
    test: str = "wilcoxon",
    correction: str = "holm",
    alpha: float = 0.05,
    pairing: str = "mean",
    bootstrap: int = 0,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """stats.csv: one row per (explainer, setting, metric, method != baseline)."""
    rows = []
    groups = scores.groupby(["explainer", "setting", "metric"], sort=False)
    for (explainer, setting, metric), part in groups:
        labels = list(dict.fromkeys(part["label"]))
        if baseline not in labels:
            continue
        meta = metas[metric]
        for label in sorted(set(labels) - {baseline}):
            x, y, matched, seeds = paired_samples(part, label, baseline, pairing)
            d = x - y
            stat, p, note = paired_test(x, y, test)
            lo, hi = bootstrap_ci(d, bootstrap, ci_level, seed) if bootstrap else (math.nan, math.nan)
            mean_diff = float(d.mean()) if len(d) else math.nan
            rb, dz = (rank_biserial(d), cohens_dz(d)) if len(d) else (math.nan, math.nan)
            rows.append({
                "explainer": explainer, "setting": setting, "metric": metric, "category": meta.category,
                "direction": meta.direction or "", "method": label, "baseline": baseline, "test": test,
                "pairing": pairing if matched else "mean", "seed_matched": matched,
                "seeds": " ".join(map(str, seeds)), "n_pairs": len(d),
                "mean_method": float(x.mean()) if len(x) else math.nan,
                "mean_baseline": float(y.mean()) if len(y) else math.nan,
                "mean_diff": mean_diff, "median_diff": float(np.median(d)) if len(d) else math.nan,
                "statistic": stat, "p_value": p, "rank_biserial": rb, "cohens_dz": dz,
                "effect_size": rb if test == "wilcoxon" else dz,
                "effect_measure": "rank_biserial" if test == "wilcoxon" else "cohens_dz",
                "better": _better(mean_diff, meta.direction),
                "ci_low": lo, "ci_high": hi, "ci_level": ci_level if bootstrap else math.nan,
                "note": note,
            })
    frame = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if len(frame):
        frame["p_adjusted"] = correct(frame["p_value"].to_numpy(float), correction)
        frame["correction"] = correction
        frame["significant"] = frame["p_adjusted"] < alpha
    return frame
