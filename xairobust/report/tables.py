"""Summary tables: rows = training methods (mean ± std over seeds, with n), columns = metrics
grouped by criterion, plus Clean and Robust accuracy; best/second marks follow each column's
direction.

Aggregation: a run's value for a metric is the mean over its samples (NaN scores, i.e. dropped
samples, are skipped); a row's value is the mean and sample standard deviation (ddof=1) of those
run values over the runs (seeds) with that label; ``n`` is the number of runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xairobust.report.meta import MetricMeta

# (key in the run frame, header, criterion group, direction); shown only when some run has a value.
ACCURACY_COLUMNS = (
    ("clean_accuracy", "Clean", "Accuracy", "higher"),
    ("robust_accuracy", "Robust", "Accuracy", "higher"),
    ("clean_mae", "MAE", "Error", "lower"),  # regression models (e.g. music emotion)
    ("delta_mae", "ΔMAE", "Error", "lower"),  # MAE increase under the headline attack
)
RUN_GROUPS = {"Accuracy", "Error"}


@dataclass(frozen=True)
class Column:
    key: str  # metric name, or a run-level column (clean_accuracy, robust_accuracy, clean_mae, delta_mae)
    label: str  # short header, e.g. "Max"
    group: str  # criterion header, e.g. "Sensitivity"
    direction: str | None  # "higher" | "lower" | None

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.direction or "", "")


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    mark: int = 0  # 1 = best, 2 = second best, 0 = neither
    significant: bool = False  # differs from the baseline after multiple-comparison correction
    floor: float = math.nan  # mean noise floor (stochastic explainers' sensitivity metrics), shown beside the mean


@dataclass
class Block:
    """Rows compared with each other (one explainer on one dataset/model setting)."""

    explainer: str
    setting: str
    title: str | None
    rows: list[str]
    n: dict[str, int]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)


@dataclass
class Table:
    name: str  # the explainer, or "combined"
    columns: list[Column]
    blocks: list[Block]
    decimals: dict[str, int]


def run_means(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over samples per run and metric (NaN scores skipped)."""
    keys = ["explainer", "setting", "label", "seed", "run", "metric"]
    return scores.groupby(keys, sort=False)["value"].mean().reset_index()


def summarise(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Long summary: explainer, setting, label, column, mean, std, n (runs with a value).

    Accuracy columns use the runs that have scores for that explainer, so their n matches.
    """
    per_run = run_means(scores).rename(columns={"metric": "column"})
    scored = scores[["explainer", "setting", "label", "seed", "run"]].drop_duplicates()
    keys = [k for k, *_ in ACCURACY_COLUMNS]
    acc = scored.merge(runs[["run", *keys]], on="run", how="left")
    acc = acc.melt(id_vars=["explainer", "setting", "label", "seed", "run"],
                   value_vars=keys, var_name="column", value_name="value")
    both = pd.concat([per_run, acc], ignore_index=True)
    grouped = both.groupby(["explainer", "setting", "label", "column"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    if "floor" in scores.columns and scores["floor"].notna().any():
        keys = ["explainer", "setting", "label", "seed", "run", "metric"]
        floors = scores.groupby(keys, sort=False)["floor"].mean().reset_index().rename(columns={"metric": "column"})
        floors = floors.groupby(["explainer", "setting", "label", "column"], sort=False)["floor"].mean().reset_index()
        out = out.merge(floors, on=["explainer", "setting", "label", "column"], how="left")
    else:
        out["floor"] = np.nan
    return out


def columns_for(metas: list[MetricMeta], summary: pd.DataFrame) -> list[Column]:
    """Metric columns in criterion order, then the accuracy columns that have any value."""
    cols = [Column(m.name, m.label, m.category.capitalize() if m.category != "other" else "Other",
                   m.direction) for m in metas]
    for key, label, group, direction in ACCURACY_COLUMNS:
        if summary.loc[summary["column"] == key, "mean"].notna().any():
            cols.append(Column(key, label, group, direction))
    return cols


def order_rows(labels: list[str], baseline: str, order: list[str]) -> list[str]:
    """Baseline first, then the labels named in ``order``, then the rest alphabetically."""
    rest = sorted(set(labels) - {baseline} - set(order))
    ranked = ([baseline] if baseline in labels else []) + [x for x in order if x in labels and x != baseline]
    return ranked + rest


def decimals_for(values: list[float], digits: int) -> int:
    """Decimals showing ``digits`` significant digits of the column's largest |mean| (0..8)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    if top == 0.0:
        return digits
    return int(min(8, max(0, digits - 1 - math.floor(math.log10(top)))))


def rank_marks(values: list[float], direction: str | None) -> list[int]:
    """1 for the best value, 2 for the second best (distinct values; ties share a mark), else 0.

    Nothing is marked without a direction or with fewer than two comparable rows, and the second
    best only from three rows on (with two rows it would just underline the worse one).
    """
    finite = sorted({v for v in values if math.isfinite(v)}, reverse=direction == "higher")
    count = sum(math.isfinite(v) for v in values)
    if direction not in ("higher", "lower") or count < 2:
        return [0] * len(values)
    best = finite[0]
    second = finite[1] if len(finite) > 1 and count >= 3 else None
    return [1 if v == best else 2 if second is not None and v == second else 0 for v in values]


def build_tables(
    summary: pd.DataFrame,
    columns: list[Column],
    *,
    combined: bool,
    baseline: str,
    order: list[str],
    digits: int,
    significant: set[tuple[str, str, str, str]] | None = None,
) -> list[Table]:
    """Tables (one per explainer, or one combined) with marks computed on the displayed values.

    Marks compare means rounded to the column's displayed decimals, so two values that print the
    same are never one bold and one plain. ``significant`` holds (explainer, setting, label,
    metric) keys whose comparison with the baseline is significant after correction.
    """
    significant = significant or set()
    lookup = {(r.explainer, r.setting, r.label, r.column): r for r in summary.itertuples(index=False)}
    explainers = list(dict.fromkeys(summary["explainer"]))
    settings = list(dict.fromkeys(summary["setting"]))
    groups = [explainers] if combined else [[e] for e in explainers]
    tables = []
    for group in groups:
        blocks = []
        for explainer in group:
            for setting in settings:
                part = summary[(summary["explainer"] == explainer) & (summary["setting"] == setting)]
                if part.empty:
                    continue
                rows = order_rows(list(dict.fromkeys(part["label"])), baseline, order)
                n = {lab: int(part.loc[part["label"] == lab, "n"].max()) for lab in rows}
                title_parts = ([explainer] if combined else []) + ([setting] if len(settings) > 1 else [])
                blocks.append(Block(explainer, setting, " · ".join(title_parts) or None, rows, n))
        decimals = {}
        for col in columns:
            vals = [lookup[k].mean for b in blocks for lab in b.rows
                    if (k := (b.explainer, b.setting, lab, col.key)) in lookup]
            decimals[col.key] = decimals_for(vals, digits)
        for b in blocks:
            for col in columns:
                cells = []
                for lab in b.rows:
                    rec = lookup.get((b.explainer, b.setting, lab, col.key))
                    cell = Cell(math.nan, math.nan, 0) if rec is None else Cell(
                        float(rec.mean), float(rec.std), int(rec.n), floor=float(getattr(rec, "floor", math.nan)))
                    cell.significant = (b.explainer, b.setting, lab, col.key) in significant
                    cells.append(cell)
                shown = [round(c.mean, decimals[col.key]) if math.isfinite(c.mean) else math.nan for c in cells]
                for lab, cell, mark in zip(b.rows, cells, rank_marks(shown, col.direction), strict=True):
                    cell.mark = mark
                    b.cells[(lab, col.key)] = cell
        tables.append(Table("combined" if combined else group[0], columns, blocks, decimals))
    return tables


def wide_frame(tables: list[Table]) -> pd.DataFrame:
    """table.csv: one row per (explainer, setting, method) with <column>_mean/_std/_n, full precision."""
    rows = []
    for t in tables:
        for b in t.blocks:
            for lab in b.rows:
                row: dict[str, object] = {"explainer": b.explainer, "setting": b.setting, "method": lab, "n": b.n[lab]}
                for col in t.columns:
                    c = b.cells[(lab, col.key)]
                    row[f"{col.key}_mean"] = c.mean
                    row[f"{col.key}_std"] = c.std
                    row[f"{col.key}_n"] = c.n
                    row[f"{col.key}_mark"] = {1: "best", 2: "second"}.get(c.mark, "")
                    if any(math.isfinite(bc.floor) for bb in t.blocks for bc in bb.cells.values()):
                        row[f"{col.key}_floor"] = c.floor
                    if col.group not in RUN_GROUPS:
                        row[f"{col.key}_significant"] = c.significant
                rows.append(row)
    return pd.DataFrame(rows)


def fmt(value: float, decimals: int) -> str:
    """Fixed decimals; never '-0.000'."""
    if not math.isfinite(value):
        return ""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def cell_text(cell: Cell, decimals: int, pm: str) -> tuple[str, str]:
    """(mean, '± std' or '') as text; std is omitted when there is only one run."""
    mean = fmt(cell.mean, decimals)
    std = f"{pm}{fmt(cell.std, decimals)}" if cell.n > 1 and np.isfinite(cell.std) else ""
    if mean and math.isfinite(cell.floor):  # the explainer's own noise, beside the value (issue 14)
        std += f" [floor {fmt(cell.floor, decimals)}]"
    return mean, std
