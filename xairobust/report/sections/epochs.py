"""Section: metric-vs-epoch curves, rendered from the stored per-epoch score files
(``scores/epochs/<explainer>_epoch_NNN.csv``, written by the score-epochs stage) and history.csv.
It reads; it computes nothing (no explain, no score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout as L
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("epochs")
class EpochsSection(Section):
    name = "epochs"
    order = 30
    reads = (f"{L.SCORES}/{L.EPOCHS}", L.HISTORY_CSV)

    def collect(self, ctx: ReportContext) -> Any:
        from xairobust.report.collect import available_explainers, collect_epoch_scores

        if not ctx.conf.figures:
            return None
        wanted = list(ctx.conf.explainer) or available_explainers(ctx.runs)
        frame = collect_epoch_scores(ctx.runs, wanted)
        return None if frame.empty else frame

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        import xairobust.report.figures as figs

        cmp, conf = ctx.comparison, ctx.conf
        if cmp is None:
            return
        folder = folder / "figures"
        folder.mkdir(exist_ok=True)
        settings = list(dict.fromkeys(r.setting for r in ctx.runs))
        for setting in settings:
            suffix = f"_{figs.slug(setting)}" if len(settings) > 1 else ""
            mine = [r for r in ctx.runs if r.setting == setting]
            for explainer in cmp.explainers:
                part = data[(data["explainer"] == explainer) & (data["setting"] == setting)]
                if len(part):
                    present = [m for m in cmp.ordered if m.name in set(part["metric"])]
                    figs.save(figs.epoch_curves(part, mine, present), folder, f"epochs_{figs.slug(explainer)}{suffix}",
                              list(conf.formats), conf.dpi)
