"""Helpers shared by CLI commands: config + override merging, extra ``--key value`` options."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
