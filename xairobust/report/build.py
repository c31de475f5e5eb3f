"""``build_report``: run directories -> results/NAME/{table.tex, table_body.tex, table.csv,
table.md, stats.csv, figures/*}, every input checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xairobust.config import require
from xairobust.provenance import git_commit, versions
from xairobust.registry import Registry
from xairobust.report.collect import collect_runs
from xairobust.report.compare import compare
from xairobust.stages.contract import (
    NOT_IDENTITY,
    OUTPUTS_KEY,
    STAGES,
    Stage,
    StageIdentity,
    config_identity,
    stamp_outputs,
    write_sealed,
)


@dataclass
class ReportConfig:
    """Options of ``xairobust report`` (build with ``xairobust.config.build``)."""

    explainer: list[str] = field(default_factory=list)  # empty: every explainer that has scores
    combined: bool = False  # one table with a block per explainer instead of one table each
    baseline: str = "standard"  # the row every method is tested against: a label or method name (case-insensitive)
    test: Literal["wilcoxon", "ttest"] = "wilcoxon"
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    alpha: float = 0.05  # significance level for the table's * marker (after correction)
    pairing: Literal["mean", "pool"] = "mean"  # how seeds combine into sample pairs (stats.py)
    bootstrap: int = 0  # resamples for BCa CIs of the mean difference; 0: none
    ci_level: float = 0.95
    seed: int = 0  # bootstrap seed
    digits: int = 3  # significant digits of each column's largest mean
    order: list[str] = field(default_factory=list)  # row order after the baseline; rest alphabetical
    figures: bool = True
    # issue 19: restrict every comparison to the samples all its models classify correctly (study: on)
    common_correct: bool = False
    mixed: bool = False  # also fit the crossed mixed model (mixed.csv; seconds per metric)
    grid_images: int = 6  # test images (columns) in the attribution grid
    plot: Literal["box", "violin"] = "box"
    formats: list[str] = field(default_factory=lambda: ["pdf", "png"], metadata=NOT_IDENTITY)
    dpi: int = field(default=150, metadata=NOT_IDENTITY)
    controls: bool = True  # the sanity section (control rows, blur control, MPRT per layer) when runs have them
    runs: list[str] = field(default_factory=list, metadata=NOT_IDENTITY)  # run directories (set from RUNS / the batch's runs)
    labels: dict = field(default_factory=dict)  # run directory -> row label (a zoo's `run:` entry with `label:`)

    def __post_init__(self) -> None:
        require(0 < self.alpha < 1, "report: --alpha must be in (0, 1)")
        require(0 < self.ci_level < 1, "report: --ci-level must be in (0, 1)")
        require(self.bootstrap == 0 or self.bootstrap >= 100,
                "report: --bootstrap must be 0 (off) or at least 100 resamples")
        require(1 <= self.digits <= 8, "report: --digits must be between 1 and 8")
        require(self.grid_images >= 1, "report: --grid-images must be at least 1")
        require(self.dpi >= 10, "report: --dpi must be at least 10")
        bad = [f for f in self.formats if f not in ("pdf", "png", "svg")]
        require(bool(self.formats) and not bad, f"report: formats must be among pdf, png, svg, got {bad or 'none'}")


def build_report(
    run_dirs: list[Path], out: Path, conf: ReportConfig, quiet: bool = False, *, registry: Registry | None = None
) -> list[Path]:
    """Write the report for ``run_dirs`` (run directories or folders holding them) into ``out``.

    The report pipeline (report/pipeline.py): every registered section of kind ``report`` reads
    and verifies its inputs, the compare step (report/compare.py) computes the statistics, then
    each section renders into a staging folder that is moved in file by file (each move atomic),
    so bad input writes nothing and a killed report leaves whole files only. ``registry`` is the
    metric registry for column metadata (default: METRICS). Returns the files written.
    """
    import xairobust.report.pipeline as pipeline
    from xairobust.report.sections import ReportContext

    out = Path(out)
    if not conf.runs:
        conf = dataclasses.replace(conf, runs=[str(p) for p in run_dirs])
    requested = conf
    ctx = ReportContext(collect_runs(list(run_dirs), conf.labels), conf, registry, quiet)
    written = pipeline.run(ctx, out, "report", compare=compare, marker="xairobust report")
    _remove_stale_figures(out / "figures", written)
    conf, runs = ctx.conf, ctx.runs
    # report.json last: what the tables were computed from (every input file's sha256). The
    # identity is the *requested* config's, the one `is_current` is asked about later: the
    # pipeline resolves e.g. the baseline 'standard' to the row label 'Standard' in ctx.conf, and
    # an identity of that would never match the request again (the batch then failed the job).
    resolved = ReportStage().resolve(out, requested)
    write_sealed(out / REPORT_JSON, {
        "format": ReportStage.format, "runs": [str(r.path) for r in runs],
        "explainers": ctx.comparison.explainers if ctx.comparison is not None else [],
        "baseline": conf.baseline, "files": [str(p.relative_to(out)) for p in written],
        "provenance": resolved.block(),
        # The sha256 of every file written: the one is_current then re-renders a report whose
        # table or figure was deleted or edited by hand instead of skipping it as current.
        OUTPUTS_KEY: stamp_outputs(out / REPORT_JSON, *written),
        "versions": versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return [*written, out / REPORT_JSON]


REPORT_JSON = "report.json"

# ReportConfig fields that do not change the tables (placement and inputs; inputs are hashed).


def report_inputs(run_paths: list[Path]) -> dict[str, Path]:
    """Every file a report reads from its runs, by role ``<run key>:<file>`` (collect.run_keys:
    the weights' sha256, not the path; hashed into report.json): each run's run.json / weights /
    robustness.json and the folders its sections declare."""
    import xairobust.report.sections as sections

    return sections.report_inputs("report", run_paths)


@STAGES.register("report")
class ReportStage(Stage, name="report", Config=ReportConfig, per="report", after=None, order=4):
    """runs -> results/NAME: tables, statistics, figures and report.json (see build_report)."""

    def inputs(self, run_dir: Path, conf: ReportConfig) -> dict[str, Path]:
        from xairobust.runs import find_runs

        return report_inputs(find_runs(list(conf.runs)))

    def identity(self, run_dir: Path, conf: ReportConfig) -> dict[str, Any]:
        """The config's fields, with ``labels`` keyed by the runs' keys (collect.run_keys) instead
        of their paths: where the runs live is not part of what the report shows."""
        ident = config_identity(conf)
        if conf.labels:
            from xairobust.report.collect import run_keys
            from xairobust.runs import find_runs

            keys = {str(p.resolve()): k for p, k in run_keys(find_runs(list(conf.runs))).items()}
            ident["labels"] = {keys.get(str(Path(p).resolve()), str(p)): v for p, v in sorted(conf.labels.items())}
        return ident

    def outputs(self, run_dir: Path, conf: ReportConfig) -> list[Path]:
        out = Path(run_dir)
        return [out / "table.csv", out / "table.md", out / "stats.csv", out / "seed_stats.csv", out / REPORT_JSON]

    def hint(self, run_dir: Path, conf: ReportConfig | None = None) -> str:
        runs = " ".join(conf.runs) if conf is not None and conf.runs else "RUNS..."
        return f"xairobust report {runs} --out {run_dir}"

    def compute(self, run_dir: Path, conf: ReportConfig, resolved: StageIdentity, quiet: bool) -> None:
        build_report([Path(p) for p in conf.runs], Path(run_dir), conf, quiet)  # writes report.json last


FIGURE_STEMS = ("attributions", "box_", "violin_", "epochs_", "manipulation_", "sanity_")


def _remove_stale_figures(folder: Path, written: list[Path]) -> None:
    """Delete figures an earlier report wrote here that this one did not (e.g. an explainer
    since left out), so the folder never mixes two reports. Other files are left alone."""
    if not folder.is_dir():
        return
    keep = set(written)
    for path in folder.iterdir():
        if (path.is_file() and path not in keep and path.suffix in (".pdf", ".png", ".svg")
                and path.name.startswith(FIGURE_STEMS)):
            path.unlink()
