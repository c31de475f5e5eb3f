"""``build_report``: run directories -> results/NAME/{table.tex, table_body.tex, table.csv,
table.md, stats.csv, figures/*}, every input checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from xairobust import config as cfg
from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.progress import track
from xairobust.provenance import git_commit, versions
from xairobust.registry import Registry
from xairobust.report import figures as figs
from xairobust.report import visual
from xairobust.report.collect import (
    RUN_FOLDERS,
    collect_epoch_scores,
    collect_runs,
    collect_scores,
    resolve_explainers,
    run_frame,
    run_inputs,
    verify_run,
)
from xairobust.report.meta import MetricMeta, metric_meta, order_metrics
from xairobust.report.output import move_into, staging, warn
from xairobust.report.render import caption_parts, html_table, latex_document, latex_table, markdown_table
from xairobust.report.stats import FLOOR, FLOOR_NOTE, attach_floors, check_comparable, compare_to_baseline
from xairobust.report.tables import build_tables, columns_for, order_rows, summarise, wide_frame
from xairobust.runs import WEIGHTS, file_sha256, write_json_atomic
from xairobust.stages.contract import STAGES, Stage
from xairobust.validate import mark_folder


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
    formats: list[str] = field(default_factory=lambda: ["pdf", "png"])
    dpi: int = 150
    controls: bool = True  # the sanity section (control rows, blur control, MPRT per layer) when runs have them
    runs: list[str] = field(default_factory=list)  # run directories (set from RUNS / the batch's runs)
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


def resolve_baseline(runs: list, wanted: str) -> str:
    """The row label of ``--baseline``: a run label or a method name, matched case-insensitively.

    An exact label wins; then a label that differs only in case; then the label of the runs
    trained with that method (e.g. ``standard`` -> ``Standard``). No match, or a method whose
    runs carry several labels, is a ConfigError (one line, exit 2), not a report without statistics.
    """
    labels = list(dict.fromkeys(r.label for r in runs))
    if wanted in labels:
        return wanted
    key = wanted.casefold()
    by_label = [lab for lab in labels if lab.casefold() == key]
    if len(by_label) == 1:
        return by_label[0]
    by_method = list(dict.fromkeys(r.label for r in runs if r.method.casefold() == key))
    if len(by_method) == 1:
        return by_method[0]
    if len(by_label) > 1 or len(by_method) > 1:
        raise ConfigError(
            f"report: --baseline '{wanted}' matches several rows ({', '.join(by_label or by_method)}); give one label"
        )
    methods = sorted({r.method for r in runs})
    raise ConfigError(
        f"report: --baseline '{wanted}' matches no run label or method (labels: {', '.join(labels)};"
        f" methods: {', '.join(methods)})"
    )


def verify_sections(runs: list) -> None:
    """Every manipulation and visualisation file the report will read, verified (provenance and
    the sha256 its stage recorded) and its CSV checked, before any work or warning: a damaged
    file fails the report with one line, never half-way through the figures."""
    from xairobust.report.manipulation import collect as collect_manipulations

    collect_manipulations(runs)
    for run in runs:
        visual.metric_docs(run)
        for kind in visual.KINDS:
            visual._load(run, kind)


def build_report(
    run_dirs: list[Path], out: Path, conf: ReportConfig, quiet: bool = False, *, registry: Registry | None = None
) -> list[Path]:
    """Write the report for ``run_dirs`` (run directories or folders holding them) into ``out``.

    ``registry`` is the metric registry for column metadata (default: METRICS). Returns the files
    written. Every input is read and validated first; outputs are rendered into a temporary
    folder beside ``out`` and then moved in file by file (each move atomic), so bad input writes
    nothing and a killed report leaves whole files only.
    """
    out = Path(out)
    if not conf.runs:
        conf = dataclasses.replace(conf, runs=[str(p) for p in run_dirs])
    runs = collect_runs(list(run_dirs), conf.labels)
    verify_sections(runs)
    if visual.has_visual(runs) and not any(r.explainers() for r in runs):  # visualisations only
        return visual.build_visual_report(runs, out, conf, quiet)
    explainers = resolve_explainers(runs, list(conf.explainer))
    for run in runs:
        verify_run(run, explainers)  # nothing computed from other weights reaches the tables
    baseline = resolve_baseline(runs, conf.baseline)
    if baseline != conf.baseline:
        conf = dataclasses.replace(conf, baseline=baseline)
    scores, notes = collect_scores(runs, explainers)
    check_comparable(runs, explainers)  # one preset / metric parameters per table (issue 14)
    scores = attach_floors(scores, runs, explainers)  # noise floors beside values, floor-corrected tests
    from xairobust.report import analysis  # issue 19: seeds as the unit, common-correct, mixed model

    counts = None
    if conf.common_correct:  # the clean-accuracy confound (issue 19): common-correct samples only
        scores, counts = analysis.restrict_common_correct(scores, runs, explainers)
    for note in notes:
        warn(note)
    metric_names = list(dict.fromkeys(scores["metric"]))
    metas = {name: metric_meta(name, registry) for name in metric_names}
    for m in metas.values():
        if m.direction is None:
            warn(f"metric '{m.name}' is not registered with a direction; no arrow or best/second marks")
    ordered = order_metrics(list(metas.values()))
    runs_df = run_frame(runs)
    summary = summarise(scores, runs_df)
    columns = columns_for(ordered, summary)

    stats = compare_to_baseline(
        scores, metas, baseline=conf.baseline, test=conf.test, correction=conf.correction, alpha=conf.alpha,
        pairing=conf.pairing, bootstrap=conf.bootstrap, ci_level=conf.ci_level, seed=conf.seed,
    )
    if stats.empty:
        warn(f"no '{conf.baseline}' scores to compare with (--baseline) in any setting; stats.csv has no rows")
    significant = {
        (r.explainer, r.setting, r.method, r.metric) for r in stats.itertuples(index=False) if r.significant
    }
    tables = build_tables(summary, columns, combined=conf.combined, baseline=conf.baseline,
                          order=list(conf.order), digits=conf.digits, significant=significant)
    have_stats = not stats.empty
    captions = [caption_parts(t, conf.baseline, conf.test, conf.correction, conf.alpha, have_stats) for t in tables]
    if scores[FLOOR].notna().any():
        for c in captions:
            c["sig"] = "; ".join(filter(None, [c["sig"], f"[floor x]: noise floor; {FLOOR_NOTE}" if have_stats else "[floor x]: noise floor"]))
    if counts is not None:
        for t, c in zip(tables, captions, strict=True):
            words = analysis.common_correct_caption(counts, [(b.explainer, b.setting) for b in t.blocks])
            c["what"] = f"{c['what']} {words}".strip()
    seed_frame = analysis.apply_floor(analysis.long_frame(runs, scores, registry))
    seed_stats = analysis.seed_tests(seed_frame, conf.baseline, correction=conf.correction, alpha=conf.alpha,
                                     ci_level=conf.ci_level)
    mixed = (analysis.mixed_effects(seed_frame, conf.baseline, ci_level=conf.ci_level, correction=conf.correction,
                                    alpha=conf.alpha, quiet=quiet) if conf.mixed else None)
    dose = analysis.dose_response(seed_frame, n_boot=2000, ci_level=conf.ci_level, seed=conf.seed, alpha=conf.alpha)
    if not dose["spearman"].notna().any():
        dose = None  # fewer than 3 runs with a robust accuracy: no dose-response
    seeds_md = analysis.seed_section_markdown(
        seed_stats, mixed, baseline=conf.baseline, correction=conf.correction, alpha=conf.alpha, counts=counts,
        floor=bool(scores[FLOOR].notna().any()), ci_level=conf.ci_level, dose=dose)
    tex, tex_body = latex_document([latex_table(t, c) for t, c in zip(tables, captions, strict=True)])
    md = "\n".join(markdown_table(t, c) for t, c in zip(tables, captions, strict=True))
    html_tables = "\n".join(html_table(t, c) for t, c in zip(tables, captions, strict=True))  # the study page's
    epoch_scores = collect_epoch_scores(runs, explainers) if conf.figures else pd.DataFrame()

    with staging(out) as folder:
        (folder / "table.tex").write_text(tex)
        (folder / "table_body.tex").write_text(tex_body)
        (folder / "table.md").write_text(md)
        (folder / "table.html").write_text(html_tables)
        wide_frame(tables).to_csv(folder / "table.csv", index=False)
        stats.to_csv(folder / "stats.csv", index=False)
        seed_stats.to_csv(folder / "seed_stats.csv", index=False)  # seeds as the unit (issue 19)
        (folder / "seeds.md").write_text(seeds_md)
        if mixed is not None:
            mixed.to_csv(folder / "mixed.csv", index=False)
        if counts is not None:
            counts.to_csv(folder / "common_correct.csv", index=False)
        if dose is not None:
            dose.to_csv(folder / "dose_response.csv", index=False)
        # The per-sample values behind every mean and star, with the weights they came from, so
        # a reader can recompute the tables without the run directories (scripts/check_results.py).
        _samples_frame(scores, runs).to_csv(folder / SAMPLES_CSV, index=False)
        if conf.figures:
            _figures(folder / "figures", runs, scores, epoch_scores, metas, ordered, explainers, conf, quiet)
        visual.write(folder, runs, conf, quiet)  # feature visualisation: figures, FID / distance table
        from xairobust.report.manipulation import write_section  # manipulation attacks (issue 10)
        write_section(runs, folder, conf.baseline, conf.test, conf.correction, conf.alpha, conf.figures, tuple(conf.formats), conf.dpi)
        if conf.controls:  # issue 18: control rows, blur control, MPRT per layer, verdicts (report/sanity.py)
            from xairobust.report import sanity
            sanity.write_section(runs, folder, stats, conf.baseline, registry, conf.figures, tuple(conf.formats), conf.dpi)
        mark_folder(out, "xairobust report")  # before its files: a killed report's folder is still known as one
        written = move_into(folder, out)
    _remove_stale_figures(out / "figures", written)
    for name in ("mixed.csv", "common_correct.csv", "dose_response.csv"):  # written only when asked / possible
        if out / name not in written:
            (out / name).unlink(missing_ok=True)
    # report.json last: what the tables were computed from (every input file's sha256).
    resolved = ReportStage().resolve(out, conf)
    write_json_atomic(out / REPORT_JSON, {
        "format": ReportStage.format, "runs": [str(r.path) for r in runs], "explainers": explainers,
        "baseline": conf.baseline, "files": [str(p.relative_to(out)) for p in written],
        "provenance": resolved.block(), "versions": versions(), "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return [*written, out / REPORT_JSON]


REPORT_JSON = "report.json"
SAMPLES_CSV = "samples.csv"


def _samples_frame(scores: pd.DataFrame, runs: list) -> pd.DataFrame:
    """samples.csv: the long score frame the tables and tests were computed from (floors included),
    plus each run's weights sha256 (recorded in run.json, verified by verify_run before this)."""
    shas = {str(r.path): file_sha256(r.path / WEIGHTS) for r in runs}
    keep = [c for c in ("explainer", "setting", "label", "method", "seed", "run", "index", "target", "metric",
                        "value", FLOOR) if c in scores.columns]
    return scores[keep].assign(weights_sha256=scores["run"].map(shas))
# ReportConfig fields that do not change the tables (placement and inputs; inputs are hashed).
_NOT_IDENTITY = ("runs", "formats", "dpi")


def report_inputs(run_paths: list[Path]) -> dict[str, Path]:
    """Every file a report reads from its runs, by role ``<run>:<file>`` (hashed into report.json)."""
    return run_inputs(run_paths, RUN_FOLDERS)


@STAGES.register("report")
class ReportStage(Stage):
    """runs -> results/NAME: tables, statistics, figures and report.json (see build_report)."""

    name = "report"
    Config = ReportConfig
    per = "report"
    after = None
    order = 4

    def inputs(self, run_dir: Path, conf: ReportConfig) -> dict[str, Path]:
        from xairobust.runs import find_runs

        return report_inputs(find_runs(list(conf.runs)))

    def identity(self, run_dir: Path, conf: ReportConfig) -> dict[str, object]:
        d = cfg.to_dict(conf)
        for k in _NOT_IDENTITY:
            d.pop(k, None)
        return d

    def outputs(self, run_dir: Path, conf: ReportConfig) -> list[Path]:
        out = Path(run_dir)
        return [out / "table.csv", out / "table.md", out / "stats.csv", out / "seed_stats.csv", out / REPORT_JSON]

    def hint(self, run_dir: Path, conf: ReportConfig | None = None) -> str:
        runs = " ".join(conf.runs) if conf is not None and conf.runs else "RUNS..."
        return f"xairobust report {runs} --out {run_dir}"

    def run(self, run_dir: Path, conf: ReportConfig, quiet: bool = False) -> list[Path]:
        return build_report([Path(p) for p in conf.runs], Path(run_dir), conf, quiet)


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


def _figures(
    folder: Path,
    runs,
    scores: pd.DataFrame,
    epoch_scores: pd.DataFrame,
    metas: dict[str, MetricMeta],
    ordered: list[MetricMeta],
    explainers: list[str],
    conf: ReportConfig,
    quiet: bool,
) -> None:
    folder.mkdir()
    settings = list(dict.fromkeys(r.setting for r in runs))
    multi = len(settings) > 1
    jobs = []
    for setting in settings:
        suffix = f"_{figs.slug(setting)}" if multi else ""
        mine = [r for r in runs if r.setting == setting]
        rows = order_rows(list(dict.fromkeys(r.label for r in mine)), conf.baseline, list(conf.order))
        jobs.append(("attributions" + suffix, "grid", mine, rows, None))
        for explainer in explainers:
            jobs.append((f"{conf.plot}_{figs.slug(explainer)}{suffix}", "dist", mine, rows, explainer))
            if not epoch_scores.empty:
                part = epoch_scores[(epoch_scores["explainer"] == explainer) & (epoch_scores["setting"] == setting)]
                if len(part):
                    jobs.append((f"epochs_{figs.slug(explainer)}{suffix}", "epochs", mine, rows, explainer))
    for stem, kind, mine, rows, explainer in track(jobs, len(jobs), "report figures", quiet):
        if kind == "grid":
            fig, why = figs.attribution_grid(mine, rows, explainers, conf.grid_images)
            if fig is None:
                warn(f"no attribution grid{' for ' + mine[0].setting if multi else ''}: {why}")
                continue
        elif kind == "dist":
            part = scores[(scores["explainer"] == explainer) & (scores["setting"] == mine[0].setting)]
            present = [m for m in ordered if m.name in set(part["metric"])]
            fig = figs.metric_distributions(part, present, rows, conf.plot)
        else:
            part = epoch_scores[(epoch_scores["explainer"] == explainer) & (epoch_scores["setting"] == mine[0].setting)]
            present = [m for m in ordered if m.name in set(part["metric"])]
            fig = figs.epoch_curves(part, mine, present)
        figs.save(fig, folder, stem, list(conf.formats), conf.dpi)
