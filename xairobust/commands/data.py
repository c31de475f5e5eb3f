"""``xairobust data check`` (is every dataset where the tool looks?) and ``data download``."""

from __future__ import annotations

import click

from xairobust.data.base import get_source, resolve_data_dir
from xairobust.errors import ConfigError
from xairobust.registry import DATASETS

DATA_DIR_HELP = "Where datasets live (default: $XAIROBUST_DATA, else ~/.cache/xairobust/data)."


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data_group() -> None:
    """Check or fetch the registered datasets."""


@data_group.command("check")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.argument("names", nargs=-1)
def check(data_dir: str | None, names: tuple[str, ...]) -> None:
    """For every registered dataset (or NAMES): where it looked, found/valid, the fix when not.

    Exits with status 1 when a dataset asked for by name is missing or invalid.
    """
    root = resolve_data_dir(data_dir)
    click.echo(f"data dir: {root}")
    failed = []
    for name in names or DATASETS.names():
        result = get_source(name).check(root)
        status = "ok" if result.ok else "MISSING/INVALID"
        click.echo(f"{name:<12} {status:<16} {result.path}")
        click.echo(f"{'':<12} {result.detail}")
        if not result.ok:
            failed.append(name)
    if names and failed:
        raise SystemExit(1)


@data_group.command("download")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.argument("name")
def download(data_dir: str | None, name: str) -> None:
    """Fetch dataset NAME's official archive into the data dir (needs network access)."""
    source = get_source(name)
    if not hasattr(source, "download"):
        raise ConfigError(f"data download: dataset '{name}' cannot be downloaded by the tool; see `xairobust data check`")
    folder = source.download(resolve_data_dir(data_dir))
    click.echo(f"{name} is in {folder}")


def register(group: click.Group) -> None:
    group.add_command(data_group)
