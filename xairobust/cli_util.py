"""Helpers shared by CLI commands: config + override merging, extra ``--key value`` options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import click

from xairobust.config import load_yaml
from xairobust.errors import ConfigError
from xairobust.registry import did_you_mean


def parse_extra_options(args: list[str], where: str) -> dict[str, Any]:
    """``['--eps', '0.5', '--random-start', '--no-adv-mix']`` -> ``{'eps': '0.5', 'random_start': 'true', ...}``.

    Used for method/explainer hyper-parameters, which differ per registered entry; the values
    are validated afterwards against that entry's Params dataclass (with did-you-mean errors).
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"{where}: unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or (nxt.startswith("--") and not _is_number(nxt)):
                if key.startswith("no_"):
                    key, value = key[3:], "false"
                else:
                    value = "true"
            else:
                value = nxt
                i += 1
        out[key] = value
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def merged_config(config_path: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """YAML file values, then every CLI option the user actually gave (not None) on top."""
    data = load_yaml(config_path) if config_path else {}
    for key, value in overrides.items():
        if value is None or value == ():
            continue
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return data


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars (for batch jobs and logs).")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="YAML file with the same keys as the options; options given on the command line win.",
)


def check_extra_keys(extra: Mapping[str, Any], entry: object, command: click.Command, label: str) -> None:
    """Refuse extra ``--key`` options that are neither the command's nor the entry's parameters.

    A typo of a command option (``--modle``) would otherwise be read as a hyper-parameter.
    """
    params = getattr(entry, "Params", None)
    allowed = [f.name for f in dataclasses.fields(params)] if params is not None else []
    own = [p.name for p in command.params if p.name]
    for key in extra:
        if key not in allowed:
            hint = did_you_mean(key, allowed + own).replace("'", "'--", 1).replace("_", "-")
            takes = ", ".join(f"--{a.replace('_', '-')}" for a in allowed) or "no options of its own"
            raise ConfigError(
                f"{command.name}: unknown option '--{key.replace('_', '-')}'.{hint} ({label} takes {takes})"
            )


def run_options(help_text: str = "Run directory (made by `xairobust train`).") -> Callable[[Callable], Callable]:
    """``--run RUN`` (a run directory) plus the hidden, deprecated ``--model RUN`` spelling.

    ``--model`` names an architecture everywhere else (``train --model cifar_cnn``); the stage
    commands used it for run directories, so it still works there, with a one-line note.
    """

    def decorate(func: Callable) -> Callable:
        func = click.option("--model", "model_alias", hidden=True, help="Deprecated spelling of --run.")(func)
        return click.option("--run", "run_dir", metavar="RUN", help=help_text)(func)

    return decorate


def resolve_run(command: str, run_dir: str | None, model_alias: str | None, data: dict[str, Any] | None = None) -> str:
    """The run directory from --run, the deprecated --model, or the config's ``run``/``model`` key."""
    if run_dir and model_alias and run_dir != model_alias:
        raise ConfigError(f"{command}: give the run directory once, with --run (not also --model {model_alias})")
    if model_alias and not run_dir:
        click.echo(f"note: `{command} --model RUN` is deprecated; use `--run {model_alias}`", err=True)
        run_dir = model_alias
    if data is not None:
        from_file = data.pop("run", None)
        legacy = data.pop("model", None)
        run_dir = run_dir or from_file or legacy
    if not run_dir:
        raise ConfigError(f"{command}: --run RUN is required (a run directory written by `xairobust train`)")
    return str(run_dir)
