"""Section: feature visualisation (``RUN/visualisations/``: figures, FID / feature-distance table; report/visual.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("visual")
class VisualSection(Section):
    name = "visual"
    order = 40
    reads = (L.VISUALISATIONS,)

    def collect(self, ctx: ReportContext) -> Any:
        import xairobust.report.visual as visual

        for run in ctx.runs:  # every file verified (provenance, recorded sha256, CSV) before any output
            visual.metric_docs(run)
            for kind in visual.KINDS:
                visual.load(run, kind)
        return visual.visual_frames(ctx.runs) if visual.has_visual(ctx.runs) else None

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        import xairobust.report.visual as visual

        visual.write(folder, ctx.runs, data, ctx.conf)
