"""Section: the music-emotion study's Table 1, t-tests and figures (the ``mer-report`` kind;
reads each run's robustness.json bim-regression entries and their per-sample files; report/mer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("mer")
class MerSection(Section):
    name = "mer"
    reports = ("mer-report",)
    order = 10
    reads = (L.ROBUSTNESS, L.ATTACKS)

    def collect(self, ctx: ReportContext) -> Any:
        from xairobust.report.mer import collect_section

        return collect_section(ctx.conf)

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        from xairobust.report.mer import render_section

        render_section(ctx.conf, data, folder)
