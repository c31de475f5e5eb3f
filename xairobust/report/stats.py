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

Noise floor (issue 14). For a stochastic explainer (Gradient SHAP, Expected Gradients) the
sensitivity metrics measure the explainer's own randomness as well as the input's effect; the
score stage records, per sample, the same metric at zero input perturbation (the floor; LLE's
floor keeps its radius fixed, see xairobust.metrics.native.lle_floor). Where a metric has a
floor, the test is on floor-corrected per-sample values (metric - floor of the same sample),
``floor_corrected`` is True and ``mean_floor_method`` / ``mean_floor_baseline`` give the floors;
``mean_method`` / ``mean_baseline`` stay the raw means shown in the table.

Comparability: :func:`check_comparable` refuses runs whose scores of one explainer were computed
with different presets or metric parameters, or at different precisions (fp32 / bf16, of the
scores or of the attributions they score): one line naming two such runs.
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
    "floor_corrected", "mean_floor_method", "mean_floor_baseline",
]
FLOOR = "floor"  # column of the scores frame: the sample's noise floor for that metric (NaN: none)
FLOOR_NOTE = "sensitivity metrics of stochastic explainers are tested on metric - noise floor of the same sample"


def check_comparable(runs: list, explainers: list[str]) -> None:
    """ConfigError when two runs' scores of one explainer differ in preset or metric parameters."""
    from xairobust.errors import ConfigError
    from xairobust.runs import read_json

    for explainer in explainers:
        seen: dict[str, tuple[str, object]] = {}
        seen_precision: dict[str, str] = {}
        for r in runs:
            path = r.score_file(explainer).with_suffix(".json")
            if not path.is_file():
                continue
            doc = read_json(path)
            # bf16 changes values (xairobust.runtime): fp32 and bf16 scores never share a table
            precision = "/".join(sorted({doc.get("precision", "fp32"), doc.get("explainer_precision", "fp32")}))
            for other_run, other_precision in seen_precision.items():
                if other_precision != precision:
                    raise ConfigError(
                        f"report: {explainer} scores of {other_run} (precision {other_precision}) and {r.path} (precision"
                        f" {precision}) were computed at different precisions; re-run explain and score with the same --precision"
                    )
            seen_precision.setdefault(str(r.path), precision)
            params = {m: (e or {}).get("params") for m, e in (doc.get("metrics") or {}).items()}
            key = repr((doc.get("preset"), sorted(params.items(), key=lambda kv: kv[0])))
            for other_key, (other_run, other_preset) in seen.items():
                if other_key != key:
                    raise ConfigError(
                        f"report: {explainer} scores of {other_run} (preset {other_preset}) and {r.path} (preset"
                        f" {doc.get('preset')}) were computed with different presets or metric parameters;"
                        f" re-score them with the same --metrics"
                    )
            seen.setdefault(key, (str(r.path), doc.get("preset")))


def attach_floors(scores: pd.DataFrame, runs: list, explainers: list[str]) -> pd.DataFrame:
    """``scores`` with a ``floor`` column: each sample's noise floor from scores/<explainer>.json
    (``diagnostics.noise_floor.per_sample``, in the CSV's row order), NaN where there is none."""
    from xairobust.runs import read_json

    out = scores.copy()
    out[FLOOR] = np.nan
    for explainer in explainers:
        for r in runs:
            path = r.score_file(explainer).with_suffix(".json")
            if not path.is_file():
                continue
            doc = read_json(path)
            for metric, entry in (doc.get("metrics") or {}).items():
                per = (((entry or {}).get("diagnostics") or {}).get("noise_floor") or {}).get("per_sample")
                if not per:
                    continue
                mask = (out["explainer"] == explainer) & (out["run"] == str(r.path)) & (out["metric"] == metric)
                if int(mask.sum()) == len(per):
                    out.loc[mask, FLOOR] = np.asarray(per, dtype=float)
    return out


CORRECTIONS = {"holm": "holm", "bonferroni": "bonferroni", "none": None}  # ours -> statsmodels' method


def adjust_p(p: np.ndarray, method: str) -> np.ndarray:
    """Family-wise adjusted p-values (statsmodels ``multipletests``) of every report section.

    NaN entries (no test was possible) stay NaN and do not count in the family's size m;
    ``none`` returns the p-values unchanged.
    """
    from statsmodels.stats.multitest import multipletests

    if method not in CORRECTIONS:
        from xairobust.errors import ConfigError

        raise ConfigError(f"report: correction must be one of {', '.join(CORRECTIONS)}, got '{method}'")
    p = np.asarray(p, dtype=float)
    out = p.copy()
    valid = ~np.isnan(p)
    if CORRECTIONS[method] is not None and valid.any():
        out[valid] = multipletests(p[valid], method=CORRECTIONS[method])[1]
    return out


def mark_significant(frame: pd.DataFrame, correction: str, alpha: float, p_column: str = "p_value") -> pd.DataFrame:
    """``frame`` with p_adjusted / correction / significant over all its rows (one family)."""
    if len(frame):
        frame["p_adjusted"] = adjust_p(frame[p_column].to_numpy(float), correction)
        frame["correction"] = correction
        frame["significant"] = frame["p_adjusted"] < alpha
    return frame


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


def better_side(diff: float, direction: str | None) -> str:
    """'method' / 'baseline': which side a difference (method - baseline) favours; '' when neither."""
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
        has_floor = FLOOR in part.columns and part[FLOOR].notna().any()
        raw = part
        if has_floor:
            part = part.assign(value=part["value"] - part[FLOOR])
        for label in sorted(set(labels) - {baseline}):
            x, y, matched, seeds = paired_samples(part, label, baseline, pairing)
            floors = {}
            if has_floor:
                xr, yr, _, _ = paired_samples(raw, label, baseline, pairing)
                fl = raw.assign(value=raw[FLOOR])
                fx, fy, _, _ = paired_samples(fl, label, baseline, pairing)
                floors = {"floor_corrected": True, "mean_floor_method": float(fx.mean()) if len(fx) else math.nan,
                          "mean_floor_baseline": float(fy.mean()) if len(fy) else math.nan}
            else:
                xr, yr = x, y
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
                "mean_method": float(xr.mean()) if len(xr) else math.nan,
                "mean_baseline": float(yr.mean()) if len(yr) else math.nan,
                "mean_diff": mean_diff, "median_diff": float(np.median(d)) if len(d) else math.nan,
                "statistic": stat, "p_value": p, "rank_biserial": rb, "cohens_dz": dz,
                "effect_size": rb if test == "wilcoxon" else dz,
                "effect_measure": "rank_biserial" if test == "wilcoxon" else "cohens_dz",
                "better": better_side(mean_diff, meta.direction),
                "ci_low": lo, "ci_high": hi, "ci_level": ci_level if bootstrap else math.nan,
                "note": note,
                "floor_corrected": False, "mean_floor_method": math.nan, "mean_floor_baseline": math.nan,
                **floors,
            })
    return mark_significant(pd.DataFrame(rows, columns=STATS_COLUMNS), correction, alpha)
