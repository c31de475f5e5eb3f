"""Section: explanation manipulation (``RUN/manipulation/<attack>_<explainer>.*``; report/manipulation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("manipulation")
class ManipulationSection(Section):
    name = "manipulation"
    reports = ("report", "manipulation-report")
    order = 50
    reads = (L.MANIPULATION,)

    def collect(self, ctx: ReportContext) -> Any:
        from xairobust.report.manipulation import collect

        df = collect(ctx.runs)  # provenance and CSV of every document verified
        return None if df.empty else df

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        from xairobust.report.manipulation import write_section

        c = ctx.conf
        write_section(ctx.runs, data, folder, c.baseline, c.test, c.correction, c.alpha, c.figures, tuple(c.formats), c.dpi)
