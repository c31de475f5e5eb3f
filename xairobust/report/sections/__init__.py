"""Report sections: one file each, picked up by the registry (no list to edit).

A report is one pipeline (``xairobust.report.pipeline``): **collect** (every section reads and
verifies its own inputs, before anything is written) -> **compare** (the score comparison's
statistics, once, shared by the sections that show them) -> **render** (each section writes its
files into the report's staging folder). A section declares

* ``reports``: the report kinds that render it (``report``, ``manipulation-report``, ``mer-report``);
* ``order``: its place among them;
* ``reads``: what it reads inside each run directory (hashed into report.json by report_inputs);
* ``optional``: files it writes only sometimes (an earlier report's copy is removed when it does not);
* ``collect(ctx)``: its data read from the runs, or None when the runs have none (nothing rendered);
* ``render(ctx, data, folder)``: its files, from ``data`` and ``ctx.comparison`` only.

Adding a section: a module here with ``@SECTIONS.register("name") class MySection(Section): ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xairobust.registry import Registry, import_submodules

SECTIONS: Registry = Registry("report section", lambda: import_submodules("xairobust.report.sections"))


@dataclass
class ReportContext:
    """What every section sees: the runs (report.collect.RunRecord, or a kind's own records),
    the report's config, the metric registry, and the compare step's result (None: no scores)."""

    runs: list[Any]
    conf: Any
    registry: Registry | None = None
    quiet: bool = False
    baseline: str = "standard"
    comparison: Any = None


class Section:
    """Base of a report section (see the module doc)."""

    name: ClassVar[str] = ""
    reports: ClassVar[tuple[str, ...]] = ("report",)
    order: ClassVar[int] = 50
    reads: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()

    def collect(self, ctx: ReportContext) -> Any:
        raise NotImplementedError

    def render(self, ctx: ReportContext, data: Any, folder: Path) -> None:
        raise NotImplementedError


def sections_for(report: str) -> list[Section]:
    """The registered sections of a report kind, in their order (ties: by name)."""
    found = [SECTIONS.get(n)() for n in SECTIONS.names()]
    return sorted((s for s in found if report in s.reports), key=lambda s: (s.order, s.name))


def run_folders(report: str) -> tuple[str, ...]:
    """Every run-relative path the sections of ``report`` read (report_inputs hashes them)."""
    return tuple(dict.fromkeys(p for s in sections_for(report) for p in s.reads))


def report_inputs(report: str, run_paths: list[Path]) -> dict[str, Path]:
    """Every file a report of kind ``report`` reads from its runs, by role ``<run key>:<file>``
    (collect.run_keys: the weights' sha256, not the path; hashed into its provenance): each run's run.json / weights / robustness.json and the folders its
    sections declare in ``reads`` (single files there, e.g. history.csv, are not hashed)."""
    from xairobust.report.collect import run_inputs

    return run_inputs(run_paths, tuple(p for p in run_folders(report) if not Path(p).suffix))

