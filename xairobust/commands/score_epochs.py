"""``xairobust score-epochs RUNS...``: explain + score every kept checkpoint (metric-vs-epoch curves)."""

from __future__ import annotations

import click

from xairobust.cli_util import ModelRef, config_option, merged_config, model_options, quiet_option


@click.command("score-epochs", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, type=click.Path())
@config_option
@model_options(multiple=True)
@click.option("--explainer", help="Explainer (default ig); its parameters go in the YAML key explain_params.")
@click.option("--n", type=int, help="Test samples to explain per checkpoint (default 50).")
@click.option("--metrics", help="paper, quick (default) or comma-separated metric names.")
@click.option("--seed", type=int, help="Seed of the explainer and the metrics (default 0).")
@click.option("--device", help="auto (default), cpu, cuda, ...")
@quiet_option
def score_epochs(runs: tuple[str, ...], model_ref: ModelRef, config_path: str | None, quiet: bool, **options) -> None:
    """For each RUN (or --model) trained with --save-every, write scores/epochs/<explainer>_epoch_NNN.csv.

    `xairobust report` then draws metric-vs-epoch curves (figures/epochs_<explainer>.*).
    """
    from xairobust import config as cfg
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.score import ScoreConfig
    from xairobust.stages.score_epochs import score_checkpoints

    data = merged_config(config_path, options)
    import dataclasses

    runs = tuple(dataclasses.replace(model_ref, models=runs + model_ref.models).resolve_all("score-epochs", data))
    explainer = str(data.pop("explainer", "ig"))
    common = {k: data.pop(k) for k in ("seed", "device") if k in data}
    explain_conf = cfg.build(ExplainConfig, {"explainer": explainer, "n": data.pop("n", 50),
                                             "params": data.pop("explain_params", {}), **common}, "score-epochs")
    score_conf = cfg.build(ScoreConfig, {"explainer": explainer, "metrics": data.pop("metrics", "quick"), **common,
                                         **data}, config_path or "score-epochs")
    from xairobust.runs import check_run
    from xairobust.validate import check_output_dir

    for run in runs:  # every run is checked before any is scored
        check_run(run)
        check_output_dir(run, "RUN")
    for run in runs:
        paths = score_checkpoints(run, explain_conf, score_conf, quiet=quiet)
        click.echo(f"{run}: {len(paths)} epoch score files in {run}/scores/epochs")


def register(group: click.Group) -> None:
    group.add_command(score_epochs)
