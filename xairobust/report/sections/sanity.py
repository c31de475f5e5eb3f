"""Section: sanity checks (control rows, blur control, MPRT per layer, verdicts; report/sanity.py).

Rendered with ``--controls`` (default on) when some run has control-explainer scores or MPRT
diagnostics; its verdicts use the compare step's statistics (stats.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("sanity")
class SanitySection(Section):
    name = "sanity"
    order = 60
    reads = (L.SCORES,)

    def collect(self, ctx: ReportContext) -> Any:
        return () if ctx.conf.controls else None  # reads the scores the compare step verified

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        import xairobust.report.sanity as sanity

        cmp, c = ctx.comparison, ctx.conf
        if cmp is not None:
            sanity.write_section(ctx.runs, folder, cmp.stats, c.baseline, ctx.registry, c.figures, tuple(c.formats), c.dpi,
                                 common_correct=c.common_correct, explainers=list(cmp.explainers),
                                 selected=bool(c.explainer), order=list(c.order))
