"""Section: seeds as the unit of analysis, the mixed model, common-correct counts and the
dose-response (issue 19): seed_stats.csv, seeds.md, mixed.csv, common_correct.csv, dose_response.csv."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.layout import RunLayout as L
from xairobust.report.analysis import ONE_SEED_NOTE
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("seeds")
class SeedsSection(Section):
    name = "seeds"
    order = 20
    reads = (L.SCORES, L.ATTRIBUTIONS)  # the compare step's frame; `correct` from the attributions
    optional = ("mixed.csv", "common_correct.csv", "dose_response.csv")  # written only when asked / possible

    def collect(self, ctx: ReportContext) -> Any:
        return ()  # renders the compare step's numbers

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        cmp, conf = ctx.comparison, ctx.conf
        if cmp is None:
            return
        cmp.seed_stats.to_csv(folder / "seed_stats.csv", index=False)
        (folder / "seeds.md").write_text(seed_section_markdown(
            cmp.seed_stats, cmp.mixed, baseline=conf.baseline, correction=conf.correction, alpha=conf.alpha,
            counts=cmp.counts, floor=cmp.floor, ci_level=conf.ci_level, dose=cmp.dose))
        for name, frame in (("mixed.csv", cmp.mixed), ("common_correct.csv", cmp.counts), ("dose_response.csv", cmp.dose)):
            if frame is not None:
                frame.to_csv(folder / name, index=False)


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(v) else f"{v:.{digits}g}"


def seed_section_markdown(
    seeds: pd.DataFrame, mixed: pd.DataFrame | None, *, baseline: str, correction: str, alpha: float,
    counts: pd.DataFrame | None = None, floor: bool = False, ci_level: float = 0.95,
    dose: pd.DataFrame | None = None,
) -> str:
    """seeds.md: the seeds-as-unit table (and the mixed model's, when fitted), captions naming the unit."""
    from xairobust.report.render import CORRECTION_NAMES, md_escape

    corr = CORRECTION_NAMES[correction]
    level = f"{100 * ci_level:g} %"
    restricted = ""
    if counts is not None and len(counts):
        each = md_escape(", ".join(f"{r.explainer} {r.setting}: {r.n_common_correct} of {r.n_samples_before}"
                                   for r in counts.itertuples(index=False)))
        restricted = f" Only the samples every model of the comparison classifies correctly are used ({each})."
    floor_note = (" Sensitivity metrics of stochastic explainers are the metric minus the sample's noise floor."
                  if floor else "")
    images_only = len(seeds) and (seeds["unit"] == "images only").all()
    lines = ["### Seeds as the unit", ""]
    if images_only:
        lines += [f"Every method has one training seed here: {ONE_SEED_NOTE}. There is no between-seed test; the"
                  " stars of table.md are about images.", ""]
    lines += [
        "Each run's mean over its test samples is one observation (n = seeds); each method is compared with"
        f" {md_escape(baseline)}: paired t-test on seeds where the two share seeds (same seed: same initialisation),"
        f" Welch's t-test otherwise; Δ = method − {md_escape(baseline)} with its {level} CI (t)."
        f" \\*: {corr} p < {alpha:g} over all rows — **the stars are about training runs (seeds), not images**."
        + restricted + floor_note,
        "",
        f"| Explainer | Setting | Metric | Method | seeds (m/b) | test | Δ [{level} CI] | p ({correction}) | |",
        "| :-- | :-- | :-- | :-- | --: | :-- | --: | --: | :-- |",
    ]
    for r in seeds.itertuples(index=False):
        ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
        test = r.test if r.unit == "seeds" and math.isfinite(r.p_value) else (r.note or "–")
        lines.append("| " + " | ".join([
            md_escape(r.explainer), md_escape(r.setting), md_escape(r.metric), md_escape(r.label),
            f"{r.n_seeds_method}/{r.n_seeds_baseline}", md_escape(test), _fmt(r.mean_diff) + ci,
            _fmt(r.p_adjusted), "\\*" if r.significant else ""]) + " |")
    if mixed is not None and len(mixed):
        formula = mixed["formula"].iloc[0] if mixed["formula"].nunique() == 1 else "per row (mixed.csv)"
        lines += [
            "", "### Mixed model over all samples", "",
            f"One REML mixed model per explainer, setting and metric over every sample of every run: `{formula}`"
            " (statsmodels MixedLM, crossed random effects); Δ = the method's fixed effect (difference from"
            f" {md_escape(baseline)}) with a {level} Wald CI that accounts for seed, run and image variance."
            f" \\*: {corr} p < {alpha:g} — the stars are about methods, with seeds and images both as sources"
            " of variance." + restricted + floor_note,
            "",
            f"| Explainer | Setting | Metric | Method | n obs | seeds | Δ [{level} CI] | p ({correction}) | |",
            "| :-- | :-- | :-- | :-- | --: | --: | --: | --: | :-- |",
        ]
        for r in mixed.itertuples(index=False):
            ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
            lines.append("| " + " | ".join([
                md_escape(r.explainer), md_escape(r.setting), md_escape(r.metric), md_escape(r.label),
                str(r.n_obs), str(r.n_seeds), _fmt(r.estimate) + ci, _fmt(r.p_adjusted),
                "\\*" if r.significant else ""]) + " |")
    if dose is not None and np.isfinite(dose["spearman"].to_numpy(float)).any():
        method = dose["corr_ci_method"].iloc[0] or "no CI"
        lines += [
            "", "### Dose-response over runs", "",
            "Points are runs: robust accuracy (robustness.json) against the run's mean of the metric. Spearman and"
            f" Kendall (tau-b) with {level} CIs ({md_escape(method)}); slope: OLS change of the metric per +10 points"
            " of robust accuracy with its t CI; adjusted: the same with clean accuracy as a covariate."
            + restricted + floor_note,
            "",
            "| Explainer | Setting | Metric | runs | Spearman [CI] | Kendall [CI] | slope / +10 pts [CI] |"
            " adjusted for clean acc. [CI] | |",
            "| :-- | :-- | :-- | --: | --: | --: | --: | --: | :-- |",
        ]
        for r in dose.itertuples(index=False):
            def ci(v, lo, hi):
                return _fmt(v) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else "")
            lines.append("| " + " | ".join([
                md_escape(r.explainer), md_escape(r.setting), md_escape(r.metric), str(r.n_runs),
                ci(r.spearman, r.spearman_ci_low, r.spearman_ci_high), ci(r.kendall, r.kendall_ci_low, r.kendall_ci_high),
                ci(r.slope_per10, r.slope_ci_low, r.slope_ci_high), ci(r.adj_slope_per10, r.adj_ci_low, r.adj_ci_high),
                md_escape(r.adjustment_note or r.note)]) + " |")
    return "\n".join(lines) + "\n"
