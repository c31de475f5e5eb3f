"""Section: attribution scores — the comparison tables (table.tex / table_body.tex / table.md /
table.html / table.csv), the per-sample tests (stats.csv), every per-sample value behind them
(samples.csv) and the attribution grid and metric distribution figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from xairobust.layout import RunLayout as L
from xairobust.report.samples import SAMPLES_CSV
from xairobust.report.sections import SECTIONS, ReportContext, Section


@SECTIONS.register("scores")
class ScoresSection(Section):
    name = "scores"
    order = 10
    reads = (L.SCORES, L.ATTRIBUTIONS)  # and each run's run.json / weights / robustness.json (accuracy columns)

    def collect(self, ctx: ReportContext) -> Any:
        return ()  # the compare step reads and verifies the scores

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        cmp = ctx.comparison
        if cmp is None:
            return
        tables, captions = _tables(ctx)
        from xairobust.report.render import html_table, latex_document, latex_table, markdown_table
        from xairobust.report.tables import wide_frame

        pairs = list(zip(tables, captions, strict=True))
        tex, tex_body = latex_document([latex_table(t, c) for t, c in pairs])
        (folder / "table.tex").write_text(tex)
        (folder / "table_body.tex").write_text(tex_body)
        (folder / "table.md").write_text("\n".join(markdown_table(t, c) for t, c in pairs))
        (folder / "table.html").write_text("\n".join(html_table(t, c) for t, c in pairs))  # the study page's
        wide_frame(tables).to_csv(folder / "table.csv", index=False)
        cmp.stats.to_csv(folder / "stats.csv", index=False)
        # The per-sample values behind every mean and star, with the weights they came from, so
        # a reader can recompute the tables without the run directories (scripts/check_results.py).
        samples_frame(cmp.scores, ctx.runs).to_csv(folder / SAMPLES_CSV, index=False)
        if ctx.conf.figures:
            _figures(ctx, folder / "figures")


def _tables(ctx: ReportContext) -> tuple[list, list[dict[str, str]]]:
    """The Table objects (tables.build_tables) and their captions (render.caption_parts)."""
    import xairobust.report.analysis as analysis
    from xairobust.report.render import caption_parts
    from xairobust.report.stats import FLOOR_NOTE
    from xairobust.report.tables import build_tables, columns_for

    cmp, conf = ctx.comparison, ctx.conf
    significant = {(r.explainer, r.setting, r.method, r.metric) for r in cmp.stats.itertuples(index=False) if r.significant}
    tables = build_tables(cmp.summary, columns_for(cmp.ordered, cmp.summary), combined=conf.combined,
                          baseline=conf.baseline, order=list(conf.order), digits=conf.digits, significant=significant)
    have_stats = not cmp.stats.empty
    captions = [caption_parts(t, conf.baseline, conf.test, conf.correction, conf.alpha, have_stats) for t in tables]
    if cmp.floor:
        floor = f"[floor x]: noise floor; {FLOOR_NOTE}" if have_stats else "[floor x]: noise floor"
        for c in captions:
            c["sig"] = "; ".join(filter(None, [c["sig"], floor]))
    if cmp.counts is not None:
        for t, c in zip(tables, captions, strict=True):
            words = analysis.common_correct_caption(cmp.counts, [(b.explainer, b.setting) for b in t.blocks])
            c["what"] = f"{c['what']} {words}".strip()
    return tables, captions


def samples_frame(scores: pd.DataFrame, runs: list) -> pd.DataFrame:
    """samples.csv: the long score frame the tables and tests were computed from (floors included),
    plus each run's weights sha256 (recorded in run.json, verified by verify_run before this)."""
    from xairobust.report.samples import with_weights
    from xairobust.report.stats import FLOOR

    keep = [c for c in ("explainer", "setting", "label", "method", "seed", "run", "index", "target", "metric",
                        "value", FLOOR) if c in scores.columns]
    return with_weights(scores[keep], runs)


def _figures(ctx: ReportContext, folder: Path) -> None:
    """Per setting: the attribution grid, and per explainer the metric distributions (box/violin)."""
    import xairobust.report.figures as figs
    from xairobust.progress import track
    from xairobust.report.output import warn
    from xairobust.report.tables import order_rows

    cmp, conf = ctx.comparison, ctx.conf
    folder.mkdir(exist_ok=True)
    settings = list(dict.fromkeys(r.setting for r in ctx.runs))
    multi = len(settings) > 1
    jobs = []
    for setting in settings:
        suffix = f"_{figs.slug(setting)}" if multi else ""
        mine = [r for r in ctx.runs if r.setting == setting]
        rows = order_rows(list(dict.fromkeys(r.label for r in mine)), conf.baseline, list(conf.order))
        jobs.append(("attributions" + suffix, mine, rows, None))
        jobs += [(f"{conf.plot}_{figs.slug(e)}{suffix}", mine, rows, e) for e in cmp.explainers]
    for stem, mine, rows, explainer in track(jobs, len(jobs), "report figures", ctx.quiet):
        if explainer is None:
            fig, why = figs.attribution_grid(mine, rows, cmp.explainers, conf.grid_images)
            if fig is None:
                warn(f"no attribution grid{' for ' + mine[0].setting if multi else ''}: {why}")
                continue
        else:
            part = cmp.scores[(cmp.scores["explainer"] == explainer) & (cmp.scores["setting"] == mine[0].setting)]
            present = [m for m in cmp.ordered if m.name in set(part["metric"])]
            fig = figs.metric_distributions(part, present, rows, conf.plot)
        figs.save(fig, folder, stem, list(conf.formats), conf.dpi)
