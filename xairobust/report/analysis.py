"""Statistics for "by how much" (issue 19): seeds as the unit, a crossed mixed model over all
samples, the common-correct filter against the clean-accuracy confound, and dose-response over runs.

Every function works on the *long frame* (:data:`LONG_COLUMNS`, one row per run x explainer x
metric x sample) that :func:`collect_long` builds from run directories through
``xairobust.report.collect``; none writes files. The choices, stated once:

* **Seeds as the unit** (:func:`seed_tests`). A run's score for a metric is its mean over samples;
  a method is compared with the baseline on these per-seed means. When the two share at least two
  seeds the test is paired by seed (``scipy.stats.ttest_rel``): the same seed means the same
  initialisation (and data order) when trained from scratch, and the same starting run when
  fine-tuned from a seed's standard run. Otherwise the test is Welch's (``scipy.stats.ttest_ind``,
  ``equal_var=False``). With one seed on either side there is no between-seed test: the result is
  about images only (:data:`ONE_SEED_NOTE`), and the per-sample tests of ``stats.csv`` are all there is.
* **Mixed model** (:func:`mixed_effects`). ``value ~ C(label, Treatment(baseline)) + (1|seed) +
  (1|run) + (1|sample)``, REML, statsmodels ``MixedLM`` with crossed random effects written the
  way statsmodels supports them: one group holding every row (``groups`` constant,
  ``re_formula="0"``) and one variance component per factor (``vc_formula``). ``(1|run)`` -- a
  run is a label x seed -- is added to the issue's formula because without it the run-to-run
  variation of a method is counted as per-image noise, and with many images per run the CI of a
  method's difference would shrink with the number of images instead of the number of seeds
  (``run_effect=False`` fits the issue's formula exactly). CIs and p-values are Wald (normal).
* **Common-correct** (:func:`common_correct`): a comparison (one explainer on one setting, every
  run of it) is restricted to the samples that every one of its runs has scored and classifies
  correctly, so a robust model's lower clean accuracy cannot show up as "different explanations
  of images it gets wrong". Correctness per sample is recorded by ``explain`` (tensor ``correct``).
* **Dose-response** (:func:`dose_response`): points are runs (robust accuracy from
  robustness.json, the run's mean of the metric). Spearman and Kendall (tau-b) from scipy with a
  percentile bootstrap CI over runs (seeded; resamples in which either variable is constant, so the
  rank correlation is undefined, are dropped and counted). Slopes are OLS (statsmodels) of the
  per-run mean on robust accuracy in percentage points, times 10: the change of the metric per
  +10 points of robust accuracy, with a t CI; the adjusted slope adds clean accuracy (points) as a
  covariate. Where adjusting flips the sign or the significance, ``adjustment_note`` says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sst

from xairobust.errors import ConfigError, RunError
from xairobust.layout import RunLayout
from xairobust.registry import Registry
from xairobust.report.stats import better_side, mark_significant

LONG_COLUMNS = [
    "run", "setting", "family", "label", "seed", "ladder_param", "ladder_value", "eps", "init",
    "clean_acc", "robust_acc", "explainer", "metric", "direction", "sample", "value", "correct", "floor",
]
RUN_COLUMNS = [
    "explainer", "setting", "metric", "direction", "label", "family", "seed", "run", "ladder_param",
    "ladder_value", "eps", "clean_acc", "robust_acc", "mean", "n_samples",
]
SEED_TEST_COLUMNS = [
    "explainer", "setting", "metric", "direction", "label", "baseline", "unit", "test", "n_seeds_method",
    "n_seeds_baseline", "n_pairs", "seeds", "mean_method", "mean_baseline", "mean_diff", "ci_low", "ci_high",
    "ci_level", "statistic", "df", "p_value", "p_adjusted", "correction", "significant", "better", "note",
]
MIXED_COLUMNS = [
    "explainer", "setting", "metric", "direction", "label", "baseline", "estimate", "se", "ci_low", "ci_high",
    "ci_level", "z", "p_value", "p_adjusted", "correction", "significant", "better", "n_obs", "n_seeds",
    "n_samples", "n_runs", "var_seed", "var_run", "var_sample", "var_residual", "formula", "converged", "note",
]
DOSE_COLUMNS = [
    "explainer", "setting", "metric", "direction", "n_runs", "spearman", "spearman_p", "spearman_ci_low",
    "spearman_ci_high", "kendall", "kendall_p", "kendall_ci_low", "kendall_ci_high", "corr_ci_method",
    "slope_per10", "slope_se", "slope_ci_low", "slope_ci_high", "slope_p", "adj_slope_per10", "adj_slope_se",
    "adj_ci_low", "adj_ci_high", "adj_p", "clean_slope_per10", "adjustment_changes", "adjustment_note", "note",
]
LADDER_COLUMNS = [
    "explainer", "setting", "metric", "direction", "label", "family", "ladder_param", "ladder_value", "n_seeds",
    "mean", "ci_low", "ci_high", "ci_level", "robust_acc", "robust_acc_sd", "clean_acc",
]
# The hyper-parameter a family's ladder varies (issue 19 item 1); families not listed have none.
LADDER_PARAM = {"pgd": "eps", "jacobian": "lam", "nsloss": "lam", "fool": "lam"}
GROUP = ["explainer", "setting", "metric"]
ONE_SEED_NOTE = "one seed: the result is about images only (per-sample tests), not about training runs"
CORRELATION_CI = "percentile bootstrap over runs"


# -- collecting ------------------------------------------------------------------------------------


def collect_long(
    paths: Sequence[str | Path], explainers: Sequence[str] | None = None, registry: Registry | None = None,
    *, verify: bool = True,
) -> pd.DataFrame:
    """The long frame of the runs in/below ``paths`` (run directories or folders holding them).

    Reads through ``xairobust.report.collect`` (the report's own readers and checks: duplicate
    runs, malformed files and, with ``verify``, scores computed from other weights are errors).
    Notes about runs without scores for an explainer are in ``frame.attrs["notes"]``.
    """
    from xairobust.report.collect import collect_runs, collect_scores, resolve_explainers, verify_run
    from xairobust.report.stats import attach_floors

    runs = collect_runs(list(paths))
    names = resolve_explainers(runs, list(explainers or []))
    if verify:
        for r in runs:
            verify_run(r, names)
    scores, notes = collect_scores(runs, names)
    scores = attach_floors(scores, runs, names)
    frame = long_frame(runs, scores, registry)
    frame.attrs["notes"] = notes
    return frame


def collect_correct(runs: list, explainers: Iterable[str]) -> pd.DataFrame:
    """(run, explainer, index, correct) from each run's attributions/<explainer>.safetensors.

    Only the ``indices`` and ``correct`` tensors are read. Files written before ``explain`` recorded
    correctness (or of a regression model) contribute no rows: their samples' correctness is unknown.
    """
    from safetensors import SafetensorError, safe_open

    frames = []
    for explainer in explainers:
        for r in runs:
            path = RunLayout(r.path).attribution(explainer)[0]
            if not path.is_file():
                continue
            try:
                with safe_open(str(path), framework="np") as fh:
                    if "correct" not in fh.keys():
                        continue
                    idx, ok = fh.get_tensor("indices"), fh.get_tensor("correct")
            except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                raise RunError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None
            if idx.shape != ok.shape:
                raise RunError(f"{path}: 'correct' has {ok.size} entries for {idx.size} indices")
            frames.append(pd.DataFrame({"run": str(r.path), "explainer": explainer,
                                        "index": idx.astype(np.int64), "correct": ok.astype(bool)}))
    if not frames:
        return pd.DataFrame({"run": pd.Series(dtype=str), "explainer": pd.Series(dtype=str),
                             "index": pd.Series(dtype=np.int64), "correct": pd.Series(dtype=bool)})
    return pd.concat(frames, ignore_index=True)


def attach_correct(scores: pd.DataFrame, runs: list, explainers: Iterable[str]) -> pd.DataFrame:
    """``scores`` (report's frame: run, explainer, index, ...) with a nullable-boolean ``correct`` column."""
    corr = collect_correct(runs, explainers)
    out = scores.drop(columns=["correct"], errors="ignore").merge(corr, on=["run", "explainer", "index"], how="left")
    out["correct"] = out["correct"].astype("boolean")
    return out


def long_frame(runs: list, scores: pd.DataFrame, registry: Registry | None = None) -> pd.DataFrame:
    """The long frame from report objects: RunRecords and ``collect_scores`` output (+ optional floor)."""
    from xairobust.report.meta import metric_meta
    from xairobust.runs import read_run_meta

    info = []
    for r in runs:
        meta = read_run_meta(r.path)
        method = meta.get("method") if isinstance(meta.get("method"), dict) else {}
        params = method.get("params") if isinstance(method.get("params"), dict) else {}
        param = LADDER_PARAM.get(r.method, "")
        init = meta.get("init_from") if isinstance(meta.get("init_from"), dict) else {}
        info.append({
            "run": str(r.path), "family": r.method, "ladder_param": param,
            "ladder_value": _float(params.get(param)) if param else math.nan,
            "eps": _float(params.get("eps")) if r.method == "pgd" else math.nan,
            "init": str(init.get("run") or ""), "clean_acc": r.clean_accuracy, "robust_acc": r.robust_accuracy,
        })
    per_run = pd.DataFrame(info, columns=["run", "family", "ladder_param", "ladder_value", "eps", "init",
                                          "clean_acc", "robust_acc"])
    df = scores.rename(columns={"index": "sample"}).drop(columns=["method", "target"], errors="ignore")
    df = df.merge(per_run, on="run", how="left")
    directions = {m: (metric_meta(m, registry).direction or "") for m in df["metric"].unique()}
    df["direction"] = df["metric"].map(directions)
    if "floor" not in df.columns:
        df["floor"] = np.nan
    if "correct" not in df.columns:
        df = attach_correct(df.rename(columns={"sample": "index"}), runs, df["explainer"].unique()).rename(
            columns={"index": "sample"})
    return df[LONG_COLUMNS].reset_index(drop=True)


def _float(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


# -- common-correct ---------------------------------------------------------------------------------


def common_correct(
    frame: pd.DataFrame, by: Sequence[str] = ("explainer", "setting"), sample_col: str = "sample",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep, per comparison (a ``by`` group), the samples every run of it has and classifies correctly.

    Returns (filtered frame, counts) with counts columns ``[*by, n_runs, n_samples_before,
    n_common_correct]``; n_samples_before counts the distinct samples of the group before filtering.
    A run whose correctness is unknown for a sample of the group is a ConfigError (one line naming it).
    """
    by = list(by)
    missing = [c for c in [*by, "run", sample_col, "correct"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"common-correct: the frame has no column(s) {', '.join(missing)}")
    return _common_correct(frame, by, sample_col)


def _common_correct(frame: pd.DataFrame, by: list[str], sample_col: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = frame[[*by, "run", sample_col, "correct"]].drop_duplicates([*by, "run", sample_col])
    unknown = keys[keys["correct"].isna()]
    if len(unknown):
        row = unknown.iloc[0]
        what = f" for {row['explainer']}" if "explainer" in by else ""
        raise ConfigError(
            f"--common-correct: {row['run']} records no per-sample correctness{what} (its attributions predate it);"
            f" re-run `xairobust explain --run {row['run']}` and `xairobust score` for it, or leave --common-correct off"
        )
    keys = keys.assign(correct=keys["correct"].astype(bool))
    counts, keep = [], []
    for group, part in keys.groupby(by, sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        n_runs = part["run"].nunique()
        per = part.groupby(sample_col)["correct"].agg(["sum", "size"])
        good = per.index[(per["sum"] == n_runs) & (per["size"] == n_runs)]
        counts.append({**dict(zip(by, group, strict=True)), "n_runs": int(n_runs),
                       "n_samples_before": int(len(per)), "n_common_correct": int(len(good))})
        keep.append(pd.DataFrame({**{k: [v] * len(good) for k, v in zip(by, group, strict=True)},
                                  sample_col: good.to_numpy()}))
    kept = pd.concat(keep, ignore_index=True) if keep else pd.DataFrame(columns=[*by, sample_col])
    kept = kept.astype({c: frame[c].dtype for c in [*by, sample_col]})
    out = frame.merge(kept, on=[*by, sample_col], how="inner")
    return out, pd.DataFrame(counts, columns=[*by, "n_runs", "n_samples_before", "n_common_correct"])


# -- per-run means --------------------------------------------------------------------------------


def run_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (explainer, setting, metric, run): the run's mean over its non-NaN samples."""
    if "value" not in frame.columns and "mean" in frame.columns:
        return frame  # already per run
    keys = [*GROUP, "label", "seed", "run"]
    missing = [c for c in [*keys, "value"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"per-run means: the frame has no column(s) {', '.join(missing)}")
    # run-level columns a hand-built frame may lack: text ones default to "", numbers to NaN
    defaults = {"direction": "", "family": "", "ladder_param": "", "ladder_value": math.nan, "eps": math.nan,
                "clean_acc": math.nan, "robust_acc": math.nan}
    frame = frame.assign(**{c: v for c, v in defaults.items() if c not in frame.columns})
    agg = frame.groupby(keys, sort=False, dropna=False).agg(
        mean=("value", "mean"), n_samples=("value", "count"), **{c: (c, "first") for c in defaults})
    return agg.reset_index()[RUN_COLUMNS]


def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-seed means: one row per (explainer, setting, metric, label, seed) (= per run)."""
    return run_means(frame)


# -- (a) seeds as the unit ------------------------------------------------------------------------


def seed_tests(
    frame: pd.DataFrame, baseline: str, *, pairing: str = "auto", correction: str = "holm",
    alpha: float = 0.05, ci_level: float = 0.95,
) -> pd.DataFrame:
    """Between-seed test of every label against ``baseline`` per (explainer, setting, metric).

    ``pairing``: "auto" (paired by seed when >= 2 seeds are shared, else Welch), "paired", "welch".
    Differences are method - baseline; p-values are corrected over all rows (``correction``).
    """
    if pairing not in ("auto", "paired", "welch"):
        raise ConfigError(f"seed tests: pairing must be auto, paired or welch, got '{pairing}'")
    if correction not in ("holm", "bonferroni", "none"):
        raise ConfigError(f"seed tests: correction must be holm, bonferroni or none, got '{correction}'")
    if not 0 < ci_level < 1 or not 0 < alpha < 1:
        raise ConfigError("seed tests: ci_level and alpha must be in (0, 1)")
    return _seed_tests(run_means(frame), baseline, pairing, correction, alpha, ci_level)


def _seed_tests(means: pd.DataFrame, baseline: str, pairing: str, correction: str, alpha: float,
                ci_level: float) -> pd.DataFrame:
    rows = []
    for (explainer, setting, metric), part in means.groupby(GROUP, sort=False):
        if baseline not in set(part["label"]):
            continue
        direction = str(part["direction"].iloc[0] or "")
        b = part[part["label"] == baseline].dropna(subset=["mean"]).set_index("seed")["mean"]
        for label in sorted(set(part["label"]) - {baseline}):
            a = part[part["label"] == label].dropna(subset=["mean"]).set_index("seed")["mean"]
            row = {"explainer": explainer, "setting": setting, "metric": metric, "direction": direction,
                   "label": label, "baseline": baseline, "ci_level": ci_level,
                   **_seed_test(a, b, pairing, ci_level)}
            row["better"] = better_side(row["mean_diff"], direction)
            rows.append(row)
    return mark_significant(pd.DataFrame(rows, columns=SEED_TEST_COLUMNS), correction, alpha)


def _seed_test(a: pd.Series, b: pd.Series, pairing: str, ci_level: float) -> dict:
    """Test of per-seed means ``a`` (method) against ``b`` (baseline), both indexed by seed."""
    common = sorted(set(a.index) & set(b.index))
    paired = pairing == "paired" or (pairing == "auto" and len(common) >= 2)
    nan = math.nan
    base = {"n_seeds_method": len(a), "n_seeds_baseline": len(b), "statistic": nan, "df": nan, "p_value": nan,
            "ci_low": nan, "ci_high": nan, "note": ""}
    if len(a) < 2 or len(b) < 2 or (paired and len(common) < 2):
        x, y = (a[common], b[common]) if paired and common else (a, b)
        note = ONE_SEED_NOTE if min(len(a), len(b)) < 2 else "fewer than 2 shared seeds for a paired test"
        return {**base, "unit": "images only" if min(len(a), len(b)) < 2 else "seeds",
                "test": "paired t" if paired else "welch t", "n_pairs": len(common) if paired else 0,
                "seeds": " ".join(map(str, sorted(set(x.index) | set(y.index)))),
                "mean_method": _mean(x), "mean_baseline": _mean(y), "mean_diff": _mean(x) - _mean(y), "note": note}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy returns NaN, noted below
        if paired:
            x, y = a[common].to_numpy(float), b[common].to_numpy(float)
            res = sst.ttest_rel(x, y)
            seeds = common
        else:
            x, y = a.to_numpy(float), b.to_numpy(float)
            res = sst.ttest_ind(x, y, equal_var=False)
            seeds = sorted(set(a.index) | set(b.index))
        ci = res.confidence_interval(ci_level)
    note = "" if math.isfinite(res.pvalue) else "zero variance between seeds: no test"
    return {**base, "unit": "seeds", "test": "paired t" if paired else "welch t",
            "n_pairs": len(common) if paired else 0, "seeds": " ".join(map(str, seeds)),
            "mean_method": float(x.mean()), "mean_baseline": float(y.mean()), "mean_diff": float(x.mean() - y.mean()),
            "statistic": float(res.statistic), "df": float(res.df), "p_value": float(res.pvalue),
            "ci_low": float(ci.low), "ci_high": float(ci.high), "note": note}


def _mean(s) -> float:
    return float(np.mean(s)) if len(s) else math.nan


def ladder_points(frame: pd.DataFrame, ci_level: float = 0.95) -> pd.DataFrame:
    """One point per (explainer, setting, metric, label) for a dose-response curve: the mean over
    seeds of the per-run means with a between-seed t CI (NaN with one seed), and the seeds' mean
    robust / clean accuracy (robust_acc_sd: their standard deviation)."""
    means = run_means(frame)
    rows = []
    for (explainer, setting, metric, label), part in means.groupby([*GROUP, "label"], sort=False):
        vals = part["mean"].dropna().to_numpy(float)
        n = len(vals)
        m = float(vals.mean()) if n else math.nan
        lo = hi = math.nan
        if n >= 2:
            half = sst.t.ppf(0.5 + ci_level / 2, n - 1) * vals.std(ddof=1) / math.sqrt(n)
            lo, hi = m - half, m + half
        rob = part["robust_acc"].to_numpy(float)
        rows.append({"explainer": explainer, "setting": setting, "metric": metric,
                     "direction": part["direction"].iloc[0], "label": label, "family": part["family"].iloc[0],
                     "ladder_param": part["ladder_param"].iloc[0], "ladder_value": part["ladder_value"].iloc[0],
                     "n_seeds": n, "mean": m, "ci_low": lo, "ci_high": hi, "ci_level": ci_level,
                     "robust_acc": float(np.nanmean(rob)) if np.isfinite(rob).any() else math.nan,
                     "robust_acc_sd": float(np.nanstd(rob, ddof=1)) if np.isfinite(rob).sum() >= 2 else math.nan,
                     "clean_acc": float(part["clean_acc"].mean())})
    return pd.DataFrame(rows, columns=LADDER_COLUMNS)


# -- (b) mixed model ------------------------------------------------------------------------------


def mixed_formula(run_effect: bool = True) -> str:
    """The model :func:`mixed_effects` fits, in lme4 notation (the exact statsmodels call is in its doc)."""
    return ("value ~ C(label, Treatment(baseline)) + (1|seed) + " + ("(1|run) + " if run_effect else "")
            + "(1|sample)")


def mixed_effects(
    frame: pd.DataFrame, baseline: str, *, ci_level: float = 0.95, run_effect: bool = True,
    correction: str = "holm", alpha: float = 0.05, quiet: bool = True,
) -> pd.DataFrame:
    """Each label's difference from ``baseline`` per (explainer, setting, metric), from one crossed
    mixed model over all samples of that group (see the module doc):

        smf.mixedlm("value ~ C(lab, Treatment(reference='L0'))", data, groups=np.ones(n), re_formula="0",
                    vc_formula={"seed": "0 + C(seed)", "run": "0 + C(run)", "sample": "0 + C(sample)"}).fit(reml=True)

    (``lab`` codes the labels with the baseline as L0.) A factor with a single level is left out
    (one seed overall: no seed term; one seed per label: the run term is the fixed effect, left
    out); ``formula`` records what was fitted. Rows with NaN values are dropped.
    """
    if correction not in ("holm", "bonferroni", "none"):
        raise ConfigError(f"mixed model: correction must be holm, bonferroni or none, got '{correction}'")
    if not 0 < ci_level < 1 or not 0 < alpha < 1:
        raise ConfigError("mixed model: ci_level and alpha must be in (0, 1)")
    missing = [c for c in [*GROUP, "label", "seed", "run", "sample", "value"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"mixed model: the frame has no column(s) {', '.join(missing)}")
    from xairobust.progress import track
    groups = [(k, p) for k, p in frame.groupby(GROUP, sort=False) if baseline in set(p["label"])]
    rows = []
    for (explainer, setting, metric), part in track(groups, len(groups), "mixed models", quiet):
        direction = str(part["direction"].iloc[0] or "") if "direction" in part.columns else ""
        for r in _mixed_one(part.dropna(subset=["value"]), baseline, ci_level, run_effect):
            rows.append({"explainer": explainer, "setting": setting, "metric": metric, "direction": direction,
                         "baseline": baseline, "ci_level": ci_level, **r,
                         "better": better_side(r["estimate"], direction)})
    return mark_significant(pd.DataFrame(rows, columns=MIXED_COLUMNS), correction, alpha)


def _mixed_one(part: pd.DataFrame, baseline: str, ci_level: float, run_effect: bool) -> list[dict]:
    labels = [baseline] + sorted(set(part["label"]) - {baseline})
    lab = pd.Categorical(part["label"], categories=labels)
    factors = {"seed": pd.Categorical(part["seed"].astype(str)), "run": pd.Categorical(part["run"].astype(str)),
               "sample": pd.Categorical(part["sample"].astype(str))}
    n_seeds, n_runs, n_samples = (len(factors[k].categories) for k in ("seed", "run", "sample"))
    use = [k for k, on in (("seed", n_seeds > 1), ("run", run_effect and n_runs > len(labels)),  # run != label
                           ("sample", n_samples > 1)) if on]
    formula = "value ~ C(label, Treatment(baseline))" + "".join(f" + (1|{k})" for k in use)
    counts = {"n_obs": len(part), "n_seeds": n_seeds, "n_samples": n_samples, "n_runs": n_runs, "formula": formula}
    nan = math.nan
    empty = {"estimate": nan, "se": nan, "ci_low": nan, "ci_high": nan, "z": nan, "p_value": nan,
             "var_seed": nan, "var_run": nan, "var_sample": nan, "var_residual": nan, "converged": False}
    if not use or baseline not in set(part["label"]):
        why = "no random effect to fit (one seed and one sample)" if not use else "the baseline has no values"
        return [{**empty, **counts, "label": lb, "note": why} for lb in labels[1:]]
    res, vcomp, notes = _fit_crossed(part["value"].to_numpy(float), lab, {k: factors[k] for k in use})
    if res is None:
        return [{**empty, **counts, "label": lb, "note": notes[0]} for lb in labels[1:]]
    ci = np.asarray(res.conf_int(alpha=1 - ci_level))
    out = []
    for j, lb in enumerate(labels[1:], start=1):
        out.append({
            **counts, "label": lb, "estimate": float(res.fe_params[j]), "se": float(res.bse_fe[j]),
            "ci_low": float(ci[j, 0]), "ci_high": float(ci[j, 1]), "z": float(res.fe_params[j] / res.bse_fe[j]),
            "p_value": float(res.pvalues[j]), "var_seed": vcomp.get("seed", nan), "var_run": vcomp.get("run", nan),
            "var_sample": vcomp.get("sample", nan), "var_residual": float(res.scale),
            "converged": bool(res.converged), "note": "; ".join(notes),
        })
    return out


def _fit_crossed(y: np.ndarray, lab: pd.Categorical, factors: dict[str, pd.Categorical]):
    """REML fit of y ~ lab (treatment coding, first category the reference) + crossed random
    intercepts of ``factors``: one group, one variance component per factor. The design matrices
    are built here (indicator columns, exactly what ``mixedlm``'s formulas ``0 + C(f)`` build) because
    patsy's per-component formula evaluation costs more than the fit on small data.

    L-BFGS first; where it fails to converge or lands on the boundary of the variance space, Powell
    too, keeping the fit with the higher restricted likelihood (the two can stop at different
    points when a component is near zero). Returns (result, variance components by name, notes).
    """
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    n = len(y)
    X = np.column_stack([np.ones(n)] + [(lab.codes == j).astype(float) for j in range(1, len(lab.categories))])
    names, colnames, mats = [], [], []
    for name, f in factors.items():
        Z = np.zeros((n, len(f.categories)))
        Z[np.arange(n), f.codes] = 1.0
        names.append(name)
        colnames.append([[str(c) for c in f.categories]])
        mats.append([Z])
    model = MixedLM(y, X, groups=np.ones(n), exog_vc=VCSpec(names, colnames, mats))
    best, notes = None, []
    for method in ("lbfgs", "powell"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError) as exc:
                notes = [f"fit failed: {str(exc).splitlines()[0]}"]
                continue
        boundary = any(issubclass(w.category, ConvergenceWarning) and "boundary" in str(w.message) for w in caught)
        if best is None or res.llf > best[0].llf:
            best = (res, boundary)
        if res.converged and not boundary:
            break
    if best is None:
        return None, {}, notes
    res, boundary = best
    vcomp = dict(zip(names, np.asarray(res.vcomp, float), strict=True))
    return res, vcomp, ["a variance component is on the boundary (estimated 0)"] if boundary else []


# -- (d) dose-response ----------------------------------------------------------------------------


def dose_response(
    frame: pd.DataFrame, *, n_boot: int = 2000, ci_level: float = 0.95, seed: int = 0, alpha: float = 0.05,
) -> pd.DataFrame:
    """Rank correlations and slopes of each metric's per-run mean against robust accuracy."""
    if n_boot < 0 or (0 < n_boot < 100):
        raise ConfigError(f"dose-response: n_boot must be 0 (no correlation CI) or at least 100, got {n_boot}")
    if not 0 < ci_level < 1 or not 0 < alpha < 1:
        raise ConfigError("dose-response: ci_level and alpha must be in (0, 1)")
    means = run_means(frame)
    rows = []
    for (explainer, setting, metric), part in means.groupby(GROUP, sort=False):
        part = part[np.isfinite(part["robust_acc"].to_numpy(float)) & np.isfinite(part["mean"].to_numpy(float))]
        rows.append({"explainer": explainer, "setting": setting, "metric": metric,
                     "direction": str(part["direction"].iloc[0] or "") if len(part) else "",
                     **_dose_one(part, n_boot, ci_level, seed, alpha)})
    return pd.DataFrame(rows, columns=DOSE_COLUMNS)


def _dose_one(part: pd.DataFrame, n_boot: int, ci_level: float, seed: int, alpha: float) -> dict:
    nan = math.nan
    x = 100 * part["robust_acc"].to_numpy(float)
    y = part["mean"].to_numpy(float)
    n = len(x)
    out = {k: nan for k in DOSE_COLUMNS[5:] if k not in ("corr_ci_method", "adjustment_note", "note")}
    out.update(n_runs=n, corr_ci_method=f"{CORRELATION_CI} ({n_boot} resamples, seed {seed})" if n_boot else "",
               adjustment_changes=False, adjustment_note="", note="")
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        out["note"] = "fewer than 3 runs with a robust accuracy" if n < 3 else "robust accuracy or metric is constant over runs"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp, kt = sst.spearmanr(x, y), sst.kendalltau(x, y)
    out.update(spearman=float(sp.statistic), spearman_p=float(sp.pvalue), kendall=float(kt.statistic),
               kendall_p=float(kt.pvalue))
    if n_boot:
        (slo, shi), (klo, khi), dropped = _bootstrap_corr(x, y, n_boot, ci_level, seed)
        out.update(spearman_ci_low=slo, spearman_ci_high=shi, kendall_ci_low=klo, kendall_ci_high=khi)
        if dropped:
            out["corr_ci_method"] += f"; {dropped} degenerate resamples dropped"
    clean = 100 * part["clean_acc"].to_numpy(float)
    out.update(_ols_slope(y, x, None, ci_level))
    notes = []
    collinear = np.linalg.matrix_rank(np.column_stack([np.ones(n), x, clean])) < 3 if np.isfinite(clean).all() else True
    if n >= 4 and np.isfinite(clean).all() and not collinear:
        adj = _ols_slope(y, x, clean, ci_level)
        out.update({"adj_slope_per10": adj["slope_per10"], "adj_slope_se": adj["slope_se"],
                    "adj_ci_low": adj["slope_ci_low"], "adj_ci_high": adj["slope_ci_high"], "adj_p": adj["slope_p"],
                    "clean_slope_per10": adj["clean_slope_per10"]})
        changed, sentence = adjustment_change(out["slope_per10"], out["slope_p"], out["adj_slope_per10"], out["adj_p"], alpha)
        out.update(adjustment_changes=changed, adjustment_note=sentence)
    else:
        notes.append("no clean-accuracy adjustment (needs >= 4 runs whose clean accuracy is known and not a linear"
                     " function of robust accuracy)")
    out["note"] = "; ".join(notes)
    return out


def _ols_slope(y: np.ndarray, rob: np.ndarray, clean: np.ndarray | None, ci_level: float) -> dict:
    """OLS slope of y on robust accuracy (points) x 10, optionally with clean accuracy as covariate."""
    import statsmodels.api as sm

    cols = [rob] if clean is None else [rob, clean]
    X = sm.add_constant(np.column_stack(cols), has_constant="add")
    res = sm.OLS(y, X).fit()
    ci = np.asarray(res.conf_int(alpha=1 - ci_level))
    return {"slope_per10": 10 * float(res.params[1]), "slope_se": 10 * float(res.bse[1]),
            "slope_ci_low": 10 * float(ci[1, 0]), "slope_ci_high": 10 * float(ci[1, 1]),
            "slope_p": float(res.pvalues[1]),
            "clean_slope_per10": 10 * float(res.params[2]) if clean is not None else math.nan}


def adjustment_change(slope: float, p: float, adj: float, adj_p: float, alpha: float) -> tuple[bool, str]:
    """(changed, sentence) when adjusting for clean accuracy flips the slope's sign or significance."""
    if not all(map(math.isfinite, (slope, p, adj, adj_p))):
        return False, ""
    per = "per +10 points of robust accuracy"
    if slope != 0 and adj != 0 and (slope > 0) != (adj > 0):
        sig = " and it is significant" if adj_p < alpha else ""
        return True, (f"Adjusting for clean accuracy reverses the sign of the slope (from {slope:+.3g} to {adj:+.3g}"
                      f" {per}){sig}.")
    if (p < alpha) != (adj_p < alpha):
        if p < alpha:
            return True, (f"The slope ({slope:+.3g} {per}, p = {p:.2g}) is not significant once clean accuracy is"
                          f" held fixed ({adj:+.3g}, p = {adj_p:.2g}).")
        return True, (f"The slope becomes significant once clean accuracy is held fixed ({adj:+.3g} {per},"
                      f" p = {adj_p:.2g}; unadjusted {slope:+.3g}, p = {p:.2g}).")
    return False, ""


def _bootstrap_corr(x: np.ndarray, y: np.ndarray, n_boot: int, ci_level: float, seed: int):
    """Percentile bootstrap CIs of Spearman and Kendall, resampling runs (pairs) with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    bx, by = x[idx], y[idx]
    ok = (bx.max(1) > bx.min(1)) & (by.max(1) > by.min(1))
    bx, by = bx[ok], by[ok]
    # Spearman = Pearson of the average ranks (scipy's definition), vectorised over resamples.
    rx, ry = sst.rankdata(bx, axis=1), sst.rankdata(by, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    rho = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    # Kendall's tau-b (scipy's default), vectorised: sum over pairs i<j of sign(dx) sign(dy) over
    # sqrt(pairs untied in x * pairs untied in y); equal to scipy.stats.kendalltau per resample.
    iu = np.triu_indices(bx.shape[1], 1)
    sx = np.sign(bx[:, :, None] - bx[:, None, :])[:, iu[0], iu[1]]
    sy = np.sign(by[:, :, None] - by[:, None, :])[:, iu[0], iu[1]]
    tau = (sx * sy).sum(1) / np.sqrt(np.abs(sx).sum(1) * np.abs(sy).sum(1))
    q = [50 * (1 - ci_level), 50 * (1 + ci_level)]

    def pct(v):
        v = v[np.isfinite(v)]
        return tuple(float(t) for t in np.percentile(v, q)) if len(v) else (math.nan, math.nan)

    return pct(rho), pct(tau), int((~ok).sum())


# -- report section -------------------------------------------------------------------------------


def apply_floor(frame: pd.DataFrame) -> pd.DataFrame:
    """``value`` minus the sample's noise floor in every (explainer, setting, metric) that has floors
    (stochastic explainers' sensitivity metrics), as report's per-sample tests do (report/stats.py)."""
    if "floor" not in frame.columns or not frame["floor"].notna().any():
        return frame
    has = frame.groupby(GROUP, sort=False)["floor"].transform(lambda f: f.notna().any()).astype(bool)
    out = frame.copy()
    out.loc[has, "value"] = out.loc[has, "value"] - out.loc[has, "floor"]
    return out


def restrict_common_correct(scores: pd.DataFrame, runs: list, explainers: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Report's scores frame (column ``index``) restricted per (explainer, setting) to the common-correct
    samples; (frame without a ``correct`` column, counts). No such sample in a comparison is a ConfigError."""
    scored = attach_correct(scores, runs, explainers)
    kept, counts = common_correct(scored, ("explainer", "setting"), sample_col="index")
    empty = counts[counts["n_common_correct"] == 0]
    if len(empty):
        r = empty.iloc[0]
        raise ConfigError(
            f"--common-correct: no test sample of {r['explainer']}{' on ' + r['setting'] if r['setting'] else ''}"
            f" is classified correctly by all {r['n_runs']} models; leave --common-correct off or drop a model"
        )
    return kept.drop(columns=["correct"]), counts


def common_correct_caption(counts: pd.DataFrame, blocks: list[tuple[str, str]]) -> str:
    """Caption words for a table whose blocks are (explainer, setting) pairs: how many samples it uses."""
    c = counts.set_index(["explainer", "setting"])
    parts = [(e, s, int(c.loc[(e, s), "n_common_correct"]), int(c.loc[(e, s), "n_samples_before"]))
             for e, s in blocks if (e, s) in c.index]
    if not parts:
        return ""
    if len({(n, m) for *_, n, m in parts}) == 1:
        n, m = parts[0][2], parts[0][3]
        return f"on the {n} of {m} test samples every model classifies correctly"
    each = ", ".join(f"{e}{' ' + s if s else ''}: {n} of {m}" for e, s, n, m in parts)
    return f"on the test samples every model classifies correctly ({each})"
