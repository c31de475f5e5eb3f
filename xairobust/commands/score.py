"""``xairobust score``: the explanation-quality metrics of a run's stored attributions."""

from __future__ import annotations

import click

from xairobust.cli_util import ModelRef, config_option, merged_config, model_options, quiet_option
from xairobust.runtime import runtime_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@model_options("The trained model whose attributions/ (from `xairobust explain`) are scored: a run directory, its"
               " model.safetensors, or a checkpoint file (its <file>.run/).", multiple=True)
@click.option("--explainer", help="Which attributions to score (default ig).")
@click.option("--metrics", help="paper (default), quick, or comma-separated metric names.")
@click.option(
    "--set", "sets", multiple=True, metavar="METRIC.PARAM=VALUE",
    help="Override one metric parameter, e.g. --set max_sensitivity.radius=4/255 (repeatable).",
)
@click.option("--drop-changed/--keep-changed", default=None, help="Drop samples whose prediction changes under a sensitivity perturbation.")
@click.option("--allow-nonfinite", is_flag=True, default=None,
              help="Score attributions that hold NaN/inf: skip (and count) the samples affected instead of refusing.")
@click.option("--allow-degenerate", is_flag=True, default=None,
              help="Score all-zero / constant attributions instead of refusing them (counted in the score JSON).")
@click.option("--n", type=int, help="Score only the first n attributed samples.")
@click.option("--seed", type=int, help="Seed of the metrics' perturbations (default 0).")
@click.option("--batch-size", type=int, help="Samples per chunk (speed only).")
@click.option("--engine", type=click.Choice(["native", "quantus"]), help="native (default: torch, batched, capped passes) or quantus (the reference path).")
@click.option("--points-per-pass", type=int, help="Model points per pass (0 = auto from a memory budget; speed only).")
@click.option("--device", help="auto (default), cpu, cuda, ...")
@runtime_options
@click.option("--out", help="With several --model: folder for their comparison (table.tex/.md/.csv, stats.csv,"
              " figures/), written by the report pipeline (`xairobust report`).")
@click.option("--baseline", help="With --out: the run label or method every other run is tested against"
              " (default: standard when a run has it, else the first --model).")
@click.option("--figures/--no-figures", "figures", default=None, help="With --out: write figures (default: yes).")
@click.option("--dry-run", is_flag=True, help="Print each metric's model passes and the estimated time on this device"
              " (from a ~1 s probe of the model); score nothing.")
@quiet_option
def score(model_ref: ModelRef, config_path: str | None, quiet: bool, sets: tuple[str, ...], out: str | None,
          baseline: str | None, figures: bool | None, dry_run: bool, **options) -> None:
    """Score MODEL/attributions/<explainer>: writes scores/<explainer>.csv and .json, and the summary table
    (metric, direction, mean ± sd over samples, n, noise floor) as scores/<explainer>.tex and .md.

    Several --model are scored one after the other; with --out their comparison table and paired
    statistics are written there, as `xairobust report` writes them. `xairobust list metrics`
    shows the metrics; presets and defaults are documented in xairobust/metrics/presets.py.
    """
    from xairobust import config as cfg
    from xairobust.errors import ConfigError
    from xairobust.report.run_table import write_run_tables
    from xairobust.runs import check_run
    from xairobust.stages.score import ScoreConfig
    from xairobust.stages.score import score as run_score
    from xairobust.validate import check_output_dir

    data = merged_config(config_path, {**options, "metric_params": parse_sets(sets)})
    out = out or data.pop("out", None)
    baseline = baseline or data.pop("baseline", None)
    figures = data.pop("figures", None) if figures is None else figures
    for key in ("out", "baseline", "figures"):
        data.pop(key, None)
    run_dirs = model_ref.resolve_all("score", data)
    for run_dir in run_dirs:  # every run is checked before any is scored
        check_run(run_dir)
        check_output_dir(run_dir, "--model")
    if out:
        check_output_dir(out, "--out")
    elif baseline is not None or figures is not None:
        raise ConfigError("score: --baseline and --figures apply to the comparison of several models; give --out DIR")
    conf = cfg.build(ScoreConfig, data, config_path or "score")
    if dry_run:
        from xairobust.costs import score_plan

        for run_dir in run_dirs:
            click.echo(score_plan(run_dir, conf))
        return
    for run_dir in run_dirs:
        path = run_score(run_dir, conf, quiet=quiet)
        summary, tables = write_run_tables(run_dir, conf.explainer)
        click.echo(summary.text())
        click.echo(f"scores written to {path} (tables: {tables[0].name}, {tables[1].name})")
    if out:
        _compare(run_dirs, out, conf.explainer, baseline, figures, quiet)


def _compare(run_dirs: list[str], out: str, explainer: str, baseline: str | None, figures: bool | None,
             quiet: bool) -> None:
    """The comparison of the scored runs through the report pipeline (report.build.build_report)."""
    from pathlib import Path

    from xairobust import config as cfg
    from xairobust.report import ReportConfig, build_report
    from xairobust.report.collect import collect_runs

    runs = collect_runs([Path(r) for r in run_dirs])
    if baseline is None:
        has_standard = any("standard" in (r.label.casefold(), r.method.casefold()) for r in runs)
        baseline = "standard" if has_standard else runs[0].label
    settings = {"explainer": [explainer], "baseline": baseline, "runs": list(run_dirs)}
    if figures is not None:
        settings["figures"] = figures
    conf = cfg.build(ReportConfig, settings, "score")
    written = build_report([Path(r) for r in run_dirs], Path(out), conf, quiet=quiet)
    click.echo(f"comparison of {len(run_dirs)} runs (baseline {conf.baseline}) written to {out}"
               f" ({len(written)} files): {Path(out) / 'table.md'}")


def parse_sets(sets: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``('max_sensitivity.radius=0.01',)`` -> ``{'max_sensitivity': {'radius': '0.01'}}``."""
    from xairobust.errors import ConfigError

    out: dict[str, dict[str, str]] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        metric, dot, param = key.partition(".")
        if not (eq and dot and metric and param):
            raise ConfigError(f"score: --set expects METRIC.PARAM=VALUE, got '{item}'")
        out.setdefault(metric.strip(), {})[param.strip().replace("-", "_")] = value.strip()
    return out


def register(group: click.Group) -> None:
    group.add_command(score)
