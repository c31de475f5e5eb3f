"""The summary table of one run's scores, written by ``xairobust score`` beside its CSV.

``scores/<explainer>.tex`` and ``.md`` are the report's table (same collection, verification,
noise floors, column order, rounding and renderers as ``xairobust report``) with one row, the
run, whose cells are the mean ± sample standard deviation (ddof=1) over the test samples scored
(NaN scores, i.e. dropped samples, left out), ``n`` the samples with a value. The report's table
instead shows mean ± std over runs (seeds) of per-run means; the caption says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xairobust.layout import RunLayout
from xairobust.report.collect import collect_runs, collect_scores, verify_run
from xairobust.report.meta import MetricMeta, metric_meta, order_metrics
from xairobust.report.render import caption_parts, latex_document, latex_table, markdown_table
from xairobust.report.stats import FLOOR, attach_floors
from xairobust.report.tables import Table, build_tables, columns_for, fmt
from xairobust.runs import write_text_atomic

SPREAD = ("mean ± sd over the n test samples scored (samples a metric dropped are left out, so n may be"
          " smaller for that metric); one run")


@dataclass
class RunSummary:
    """One run's per-metric summary: the rendered table and its rows for the terminal."""

    run: Path
    explainer: str
    label: str
    table: Table
    metas: list[MetricMeta]
    tex: str
    md: str

    def rows(self) -> list[dict[str, object]]:
        """metric, direction, mean, sd, n, floor (NaN: none) and the decimals shown, in table order."""
        (block,) = self.table.blocks
        out = []
        for meta in self.metas:
            cell = block.cells[(self.label, meta.name)]
            out.append({"metric": meta.name, "direction": meta.direction, "mean": cell.mean, "sd": cell.std,
                        "n": cell.n, "floor": cell.floor, "decimals": self.table.decimals[meta.name]})
        return out

    def text(self) -> str:
        """The terminal table: metric, direction, mean ± sd, n, noise floor (where there is one)."""
        rows = self.rows()
        floors = any(math.isfinite(r["floor"]) for r in rows)
        head = ["metric", "better", "mean ± sd", "n"] + (["noise floor"] if floors else [])
        body = []
        for r in rows:
            d = int(r["decimals"])
            value = fmt(r["mean"], d) or "nan"
            if int(r["n"]) > 1 and math.isfinite(r["sd"]):
                value += f" ± {fmt(r['sd'], d)}"
            line = [str(r["metric"]), str(r["direction"] or "-"), value, str(r["n"])]
            if floors:
                line.append(fmt(r["floor"], d) if math.isfinite(r["floor"]) else "-")
            body.append(line)
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        right = {2, 3, 4}

        def join(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

        return "\n".join([f"{self.explainer} scores of {self.run} ({self.label}):", join(head),
                          *(join(b) for b in body)])


def sample_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """The long summary ``build_tables`` reads (explainer, setting, label, column, mean, std, n,
    floor), aggregated over samples instead of over runs."""
    keys = ["explainer", "setting", "label", "metric"]
    grouped = scores.groupby(keys, sort=False)
    out = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    out["floor"] = grouped[FLOOR].mean().to_numpy() if FLOOR in scores.columns else math.nan
    return out.rename(columns={"metric": "column"})


def summarise_run(run_dir: str | Path, explainer: str, digits: int = 3) -> RunSummary:
    """The summary of ``run_dir``'s ``scores/<explainer>.csv`` after verifying its provenance chain."""
    (run,) = collect_runs([Path(run_dir)])
    verify_run(run, [explainer])  # never a table of scores computed from other weights
    scores, _ = collect_scores([run], [explainer])
    scores = attach_floors(scores, [run], [explainer])
    metas = order_metrics([metric_meta(name) for name in dict.fromkeys(scores["metric"])])
    summary = sample_summary(scores)
    columns = columns_for(metas, summary)
    (table,) = build_tables(summary, columns, combined=False, baseline=run.label, order=[], digits=digits)
    caption = caption_parts(table, run.label, "wilcoxon", "none", 0.05, have_stats=False)
    caption["what"] = f"explainer {explainer}, run {run.label}"
    (block,) = table.blocks
    fewer = [f"{c.label} {block.cells[(run.label, c.key)].n}" for c in columns
             if block.cells[(run.label, c.key)].n < block.n[run.label]]
    caption["spread"] = SPREAD + (f" (n: {', '.join(fewer)})" if fewer else "") + "."
    caption["marks"] = False  # one row: nothing to rank
    caption["rows"] = "Run"
    if scores[FLOOR].notna().any():  # no statistics for one run: the floor note goes with the spread
        caption["spread"] = caption["spread"][:-1] + "; [floor x]: the mean noise floor (the metric at zero input perturbation)."
    tex = latex_document([latex_table(table, caption)], writer="xairobust score", name=f"{explainer}.tex")[1]
    md = markdown_table(table, caption)
    return RunSummary(run.path, explainer, run.label, table, metas, tex, md)


def write_run_tables(run_dir: str | Path, explainer: str, digits: int = 3) -> tuple[RunSummary, list[Path]]:
    """Write ``scores/<explainer>.tex`` (a table for ``\\input{}``) and ``.md`` atomically."""
    summary = summarise_run(run_dir, explainer, digits)
    csv = RunLayout(run_dir).score(explainer)[0]
    tex, md = csv.with_suffix(".tex"), csv.with_suffix(".md")
    write_text_atomic(tex, summary.tex)
    write_text_atomic(md, summary.md)
    return summary, [tex, md]
