"""The compare step of the report pipeline: the score comparison, computed once from the runs'
scores and shared by the sections that show it (scores, seeds, sanity). Sections render; this
module and the statistics it calls (stats.py, analysis.py) are where numbers are computed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from xairobust.errors import ConfigError
from xairobust.report.collect import collect_scores, resolve_explainers, run_frame, verify_run
from xairobust.report.meta import MetricMeta, metric_meta, order_metrics
from xairobust.report.output import warn
from xairobust.report.sections import ReportContext
from xairobust.report.stats import FLOOR, attach_floors, check_comparable, compare_to_baseline
from xairobust.report.tables import summarise


@dataclass
class Comparison:
    """Every number the score sections show."""

    explainers: list[str]
    scores: pd.DataFrame  # long per-sample frame (floors beside values; common-correct when asked)
    counts: pd.DataFrame | None  # common-correct counts; None when --common-correct is off
    metas: dict[str, MetricMeta]
    ordered: list[MetricMeta]
    summary: pd.DataFrame  # per (explainer, setting, label, metric): mean/std over runs (tables.summarise)
    stats: pd.DataFrame  # stats.csv: every method against the baseline, per sample
    seed_stats: pd.DataFrame  # seed_stats.csv: seeds as the unit
    mixed: pd.DataFrame | None  # mixed.csv (--mixed)
    dose: pd.DataFrame | None  # dose_response.csv; None with fewer than 3 runs with a robust accuracy

    @property
    def floor(self) -> bool:
        return bool(self.scores[FLOOR].notna().any())


def resolve_baseline(runs: list, wanted: str) -> str:
    """The row label of ``--baseline``: a run label or a method name, matched case-insensitively.

    An exact label wins; then a label that differs only in case; then the label of the runs
    trained with that method (e.g. ``standard`` -> ``Standard``). No match, or a method whose
    runs carry several labels, is a ConfigError (one line, exit 2), not a report without statistics.
    """
    labels = list(dict.fromkeys(r.label for r in runs))
    if wanted in labels:
        return wanted
    key = wanted.casefold()
    by_label = [lab for lab in labels if lab.casefold() == key]
    if len(by_label) == 1:
        return by_label[0]
    by_method = list(dict.fromkeys(r.label for r in runs if r.method.casefold() == key))
    if len(by_method) == 1:
        return by_method[0]
    if len(by_label) > 1 or len(by_method) > 1:
        raise ConfigError(
            f"report: --baseline '{wanted}' matches several rows ({', '.join(by_label or by_method)}); give one label"
        )
    methods = sorted({r.method for r in runs})
    raise ConfigError(
        f"report: --baseline '{wanted}' matches no run label or method (labels: {', '.join(labels)};"
        f" methods: {', '.join(methods)})"
    )


def _no_comparison(scores: pd.DataFrame, baseline: str) -> str:
    """Why no method could be tested against ``baseline`` (stats.csv is empty): what is missing."""
    labels = list(dict.fromkeys(scores["label"]))
    if baseline not in labels:
        return f"no '{baseline}' scores to compare with (--baseline) in any setting"
    others = [lab for lab in labels if lab != baseline]
    if not others:
        return f"every run is '{baseline}' (the baseline): there is no other method to compare it with"
    shared = scores.groupby("setting")["label"].agg(lambda s: baseline in set(s) and len(set(s)) > 1)
    if not shared.any():
        return (f"no dataset/model setting holds both '{baseline}' and another method ({', '.join(others)}"
                " are scored on other settings), so nothing can be compared")
    return f"no method could be tested against '{baseline}'"


def compare(ctx: ReportContext) -> Comparison | None:
    """The comparison of ``ctx.runs``' scores (None for a report of visualisations only).

    Resolves ``--baseline`` to a row label (``ctx.conf`` is replaced by the resolved config).
    """
    import xairobust.report.analysis as analysis
    import xairobust.report.visual as visual

    runs, conf = ctx.runs, ctx.conf
    if visual.has_visual(runs) and not any(r.explainers() for r in runs):  # visualisations only
        return None
    explainers = resolve_explainers(runs, list(conf.explainer))
    for run in runs:
        verify_run(run, explainers)  # nothing computed from other weights reaches the tables
    baseline = resolve_baseline(runs, conf.baseline)
    if baseline != conf.baseline:
        ctx.conf = conf = dataclasses.replace(conf, baseline=baseline)
    scores, notes = collect_scores(runs, explainers)
    check_comparable(runs, explainers)  # one preset / metric parameters per table (issue 14)
    scores = attach_floors(scores, runs, explainers)  # noise floors beside values, floor-corrected tests
    counts = None
    if conf.common_correct:  # the clean-accuracy confound (issue 19): common-correct samples only
        scores, counts = analysis.restrict_common_correct(scores, runs, explainers)
    for note in notes:
        warn(note)
    metas = {name: metric_meta(name, ctx.registry) for name in dict.fromkeys(scores["metric"])}
    for m in metas.values():
        if m.direction is None:
            warn(f"metric '{m.name}' is not registered with a direction; no arrow or best/second marks")
    stats = compare_to_baseline(
        scores, metas, baseline=conf.baseline, test=conf.test, correction=conf.correction, alpha=conf.alpha,
        pairing=conf.pairing, bootstrap=conf.bootstrap, ci_level=conf.ci_level, seed=conf.seed,
    )
    if stats.empty:
        warn(f"{_no_comparison(scores, conf.baseline)}; stats.csv has no rows")
    seed_frame = analysis.apply_floor(analysis.long_frame(runs, scores, ctx.registry))
    seed_stats = analysis.seed_tests(seed_frame, conf.baseline, correction=conf.correction, alpha=conf.alpha,
                                     ci_level=conf.ci_level)
    mixed = (analysis.mixed_effects(seed_frame, conf.baseline, ci_level=conf.ci_level, correction=conf.correction,
                                    alpha=conf.alpha, quiet=ctx.quiet) if conf.mixed else None)
    dose: Any = analysis.dose_response(seed_frame, n_boot=2000, ci_level=conf.ci_level, seed=conf.seed, alpha=conf.alpha)
    if not dose["spearman"].notna().any():
        dose = None  # fewer than 3 runs with a robust accuracy: no dose-response
    return Comparison(explainers=explainers, scores=scores, counts=counts, metas=metas,
                      ordered=order_metrics(list(metas.values())), summary=summarise(scores, run_frame(runs)),
                      stats=stats, seed_stats=seed_stats, mixed=mixed, dose=dose)
