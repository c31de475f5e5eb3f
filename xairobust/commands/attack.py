"""``xairobust attack``: robust accuracy of a run under PGD (+ AutoAttack) -> robustness.json."""

from __future__ import annotations

import json

import click

from xairobust import config as cfg
from xairobust.cli_util import config_option, merged_config, quiet_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.option("--model", "model", help="Run directory to attack (e.g. runs/digits_pgd).")
@click.option("--norm", help="Threat model: linf or l2.")
@click.option("--eps", help="Radius in the model's input space, e.g. 0.1 or 8/255.")
@click.option("--steps", type=int, help="PGD iterations (default 10).")
@click.option("--step-size", help="PGD step (default 2.5 * eps / steps).")
@click.option("--restarts", type=int, help="PGD random restarts; a sample counts as broken if any restart breaks it.")
@click.option("--random-start/--no-random-start", default=None, help="PGD starts uniformly in the ball (default on).")
@click.option("--autoattack/--no-autoattack", default=None, help="Also run AutoAttack, standard version (default on).")
@click.option("--n", type=int, help="Attack the first N samples of the split (default 1000).")
@click.option("--split", help="Dataset split (default test).")
@click.option("--batch-size", type=int)
@click.option("--seed", type=int)
@click.option("--device", help="auto (default), cpu, cuda, ...")
@click.option("--data-dir", help="Where datasets live.")
@quiet_option
def attack(config_path: str | None, quiet: bool, model: str | None, **options) -> None:
    """Attack a trained run and merge the robust accuracy into RUN/robustness.json.

    Example: `xairobust attack --model runs/digits_pgd --norm linf --eps 0.1 --steps 20 --restarts 2`.
    Each (attack, norm, eps) is one entry; re-running replaces only that entry.
    """
    from xairobust.errors import ConfigError
    from xairobust.stages.attack import AttackConfig
    from xairobust.stages.attack import attack as run_attack

    data = merged_config(config_path, options)
    run = model or data.pop("model", None)
    data.pop("model", None)
    if not run:
        raise ConfigError("attack: --model RUN_DIR is required (a directory written by `xairobust train`)")
    conf = cfg.build(AttackConfig, data, config_path or "attack")
    path = run_attack(run, conf, quiet=quiet)
    summary = json.loads(path.read_text())
    for entry in summary["results"]:
        if entry["norm"] == conf.norm and abs(entry["eps"] - conf.eps) <= 1e-9 * conf.eps:
            value = entry.get("robust_accuracy")
            shown = f"robust accuracy {value:.4f}" if value is not None else f"delta MAE {entry['delta_mae']:.4f}"
            click.echo(f"{entry['attack']} {entry['norm']} eps={entry['eps']:g}: {shown} (n={entry['n']})")
    click.echo(f"written to {path}")


def register(group: click.Group) -> None:
    group.add_command(attack)
