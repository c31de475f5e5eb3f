"""``xairobust score``: the explanation-quality metrics of a run's stored attributions."""

from __future__ import annotations

import click

from xairobust.cli_util import config_option, merged_config, quiet_option, resolve_run, run_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@run_options("Run directory with attributions/ (from `xairobust explain`).")
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
@quiet_option
def score(run_dir: str | None, model_alias: str | None, config_path: str | None, quiet: bool, sets: tuple[str, ...],
          **options) -> None:
    """Score RUN/attributions/<explainer>: writes RUN/scores/<explainer>.csv and .json.

    `xairobust list metrics` shows the metrics; presets and defaults are documented in
    xairobust/metrics/presets.py.
    """
    from xairobust import config as cfg
    from xairobust.stages.score import ScoreConfig
    from xairobust.stages.score import score as run_score
    from xairobust.validate import check_output_dir, check_run

    data = merged_config(config_path, {**options, "metric_params": parse_sets(sets)})
    run_dir = resolve_run("score", run_dir, model_alias, data)
    check_run(run_dir)
    check_output_dir(run_dir, "--run")
    conf = cfg.build(ScoreConfig, data, config_path or "score")
    path = run_score(run_dir, conf, quiet=quiet)
    click.echo(f"scores written to {path}")


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
