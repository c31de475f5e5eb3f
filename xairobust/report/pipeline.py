"""The one report pipeline: collect -> compare -> render, over the registered sections
(``xairobust.report.sections``). ``report``, ``manipulation-report`` and ``mer-report`` are
report kinds of this pipeline; they differ only in which sections they render."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from xairobust.report.output import move_into, staging
from xairobust.report.sections import ReportContext, Section, sections_for


def collect(ctx: ReportContext, report: str) -> list[tuple[Section, Any]]:
    """Every section's data, read and verified before anything is written (None: not present)."""
    return [(s, s.collect(ctx)) for s in sections_for(report)]


def render(ctx: ReportContext, out: Path, collected: list[tuple[Section, Any]], marker: str | None) -> list[Path]:
    """Render the present sections into a staging folder, then move the files into ``out``; an
    optional file a section did not write this time is removed (the folder never mixes two reports)."""
    out = Path(out)
    with staging(out) as folder:
        for section, data in collected:
            if data is not None:
                section.render(ctx, data, folder)
        if marker is not None:
            from xairobust.validate import mark_folder

            mark_folder(out, marker)  # before its files: a killed report's folder is still known as one
        else:
            out.mkdir(parents=True, exist_ok=True)
        written = move_into(folder, out)
    for section, _ in collected:
        for name in section.optional:
            if out / name not in written:
                (out / name).unlink(missing_ok=True)
    return written


def run(ctx: ReportContext, out: Path, report: str, *, compare: Callable[[ReportContext], Any] | None = None,
        marker: str | None = None) -> list[Path]:
    """collect -> compare (``ctx.comparison``) -> render of the sections of ``report``."""
    collected = collect(ctx, report)
    if compare is not None:
        ctx.comparison = compare(ctx)
    return render(ctx, out, collected, marker)
