"""``xairobust attack``: robust accuracy of a run under a registered attack (PGD + AutoAttack by default) -> robustness.json."""

from __future__ import annotations

import json

import click

from xairobust import config as cfg
from xairobust.cli_util import (
    config_option,
    merged_config,
    model_options,
    parse_extra_options,
    quiet_option,
    threat_options,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True,
                                 "allow_extra_args": True})
@config_option
@model_options()
@click.option("--attack", "attack_name", default=None,
              help="A registered attack (`xairobust list attacks`): pgd (default: PGD + AutoAttack), autoattack,"
                   " apgd-ce, apgd-t, fab-t or square (one AutoAttack sub-attack alone), or bim-regression"
                   " (regression runs: MAE/corr before and after; extra options --max-iter, --corr-threshold,"
                   " --mse-threshold, --unconstrained-reference).")
@threat_options("PGD iterations (default 10).")
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
@click.pass_context
def attack(ctx: click.Context, config_path: str | None, quiet: bool, model_ref,
           attack_name: str | None, **options) -> None:
    """Attack a trained run and merge the robust accuracy into RUN/robustness.json.

    Example: `xairobust attack --model runs/digits_pgd --norm linf --eps 0.1 --steps 20 --restarts 2`.
    Each (attack, norm, eps) is one entry; re-running replaces only that entry.
    """
    from xairobust.errors import ConfigError
    from xairobust.runs import check_run
    from xairobust.stages.attack import AttackConfig
    from xairobust.stages.attack import attack as run_attack
    from xairobust.validate import check_output_dir

    data = merged_config(config_path, options)
    run = model_ref.resolve("attack", data)
    attack_name = attack_name or data.pop("attack", None) or "pgd"
    data.pop("attack", None)
    check_run(run)
    check_output_dir(run, "--model")
    extra = parse_extra_options(ctx.args, "attack")
    if attack_name == "bim-regression":
        from xairobust.stages.mer_attack import attack_from_options

        e = attack_from_options(run, data, extra, quiet)
        click.echo(f"bim-regression linf eps={e['eps']:g}: delta MAE {e['delta_mae']:.4f}"
                   f" (MAE {e['mae_before']:.4f} -> {e['mae_after']:.4f}, n={e['n']})")
        click.echo(f"written to {run}/robustness.json")
        return
    if extra:
        raise ConfigError(f"attack: unknown option --{next(iter(extra)).replace('_', '-')} for --attack {attack_name}")
    conf = cfg.build(AttackConfig, {**data, "attack": attack_name}, config_path or "attack")
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
