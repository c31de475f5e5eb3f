"""The ``xairobust`` command: train, attack, explain, score, report, batch, data, demo.

Each stage is a thin layer over ``xairobust.stages``: parse options, merge them over a YAML
config, validate, call the stage. Errors meant for the user print as one line (exit 2).
More commands live in ``xairobust.commands`` (one module each, auto-registered).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import click

from xairobust import config as cfg
from xairobust.cli_util import check_extra_keys, config_option, merged_config, parse_extra_options, quiet_option
from xairobust.errors import XaiRobustError
from xairobust.registry import METHODS

EXTRA = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xairobust")
def main() -> None:
    """xairobust: are robust models more interpretable, and by how much?"""


@main.command(context_settings=EXTRA)
@config_option
@click.option("--dataset", help="Registered dataset (`xairobust list datasets`).")
@click.option("--model", help="Architecture to train: a registered model (`xairobust list models`), timm's convention;"
              " the trained model other commands take as --model is the run directory this writes.")
@click.option("--method", help="Training method: standard, pgd, jacobian, nsloss, ...")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]))
@click.option("--seed", type=int)
@click.option("--init", metavar="MODEL", help="Trained model whose weights start this run (fine-tuning): a run directory,"
              " its model.safetensors, or a checkpoint file (imported into <file>.run/, architecture and dataset"
              " those of this run unless the file names them).")
@click.option("--save-every", type=int, help="Keep a checkpoint every N epochs (for metric-vs-epoch curves).")
@click.option("--label", help="Row name in reports (default: the method name).")
@click.option("--device", help="auto (default), cpu, cuda, cuda:1, ...")
@click.option("--data-dir", help="Where datasets live (default: $XAIROBUST_DATA, else ~/.cache/xairobust/data).")
@click.option("--out", help="Run directory to write (default: runs/<dataset>_<model>_<method>_s<seed>).")
@click.option("--force", is_flag=True, help="Replace a finished run of another config in --out.")
@quiet_option
@click.pass_context
def train(ctx: click.Context, config_path: str | None, quiet: bool, force: bool, **options) -> None:
    """Train a model and write its run directory.

    Method hyper-parameters are extra options, e.g. `--method pgd --norm l2 --eps 0.5 --steps 7`;
    `xairobust list methods` shows each method's options and defaults.
    """
    from xairobust.runs import check_run
    from xairobust.stages.train import TrainConfig
    from xairobust.stages.train import train as run_train
    from xairobust.validate import check_output_dir

    method_params = parse_extra_options(ctx.args, "train")
    data = merged_config(config_path, {**options, "method_params": method_params})
    if data.get("init"):  # the same resolution as every command's --model (cli_util.resolve_model_path)
        from xairobust.cli_util import resolve_model_path
        from xairobust.stages.train import TrainConfig as _Defaults

        data["init"] = str(resolve_model_path(
            "train", "--init", str(data["init"]), quiet=quiet,
            defaults={"model": data.get("model", _Defaults.model), "dataset": data.get("dataset", _Defaults.dataset)}))
    method = str(data.get("method", "standard"))
    check_extra_keys(method_params, METHODS.get(method), ctx.command, f"method '{method}'")
    conf = cfg.build(TrainConfig, data, config_path or "train")
    from xairobust.runs import slug

    # The label names a directory only through slug(), as zoo labels do: `--label ../../x` stays in runs/.
    out = conf.out or f"runs/{conf.dataset}_{conf.model}_{slug(conf.resolved_label())}_s{conf.seed}"
    check_output_dir(out, "--out")
    if conf.init:
        check_run(conf.init)  # a damaged --init run fails now, not after loading the data
    run_dir = run_train(conf, out, quiet=quiet, force=force)
    click.echo(f"run written to {run_dir}")


def _load_command_modules() -> None:
    """Every module in xairobust.commands has ``register(main)``; new commands need no edit here."""
    import xairobust.commands as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"xairobust.commands.{info.name}")
        module.register(main)


_load_command_modules()


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other user error: click's default prints usage over several.
        where = f"xairobust {exc.ctx.info_name}" if exc.ctx and exc.ctx.parent else "xairobust"
        click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except XaiRobustError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug, but the user still gets one line
        if os.environ.get("XAIROBUST_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc} (set XAIROBUST_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    run()
