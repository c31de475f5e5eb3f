"""Section: seeds as the unit of analysis, the mixed model, common-correct counts and the
dose-response (issue 19): seed_stats.csv, seeds.md, mixed.csv, common_correct.csv, dose_response.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("seeds")
class SeedsSection(Section):
    name = "seeds"
    order = 20
    reads = ("scores", "attributions")  # the compare step's frame; `correct` from the attributions
    optional = ("mixed.csv", "common_correct.csv", "dose_response.csv")  # written only when asked / possible

    def collect(self, ctx: ReportContext) -> Any:
        return ()  # renders the compare step's numbers

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        from xairobust.report import analysis

        cmp, conf = ctx.comparison, ctx.conf
        if cmp is None:
            return
        cmp.seed_stats.to_csv(folder / "seed_stats.csv", index=False)
        (folder / "seeds.md").write_text(analysis.seed_section_markdown(
            cmp.seed_stats, cmp.mixed, baseline=conf.baseline, correction=conf.correction, alpha=conf.alpha,
            counts=cmp.counts, floor=cmp.floor, ci_level=conf.ci_level, dose=cmp.dose))
        for name, frame in (("mixed.csv", cmp.mixed), ("common_correct.csv", cmp.counts), ("dose_response.csv", cmp.dose)):
            if frame is not None:
                frame.to_csv(folder / name, index=False)
