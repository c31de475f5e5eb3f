"""Progress bars for every loop a user waits on (rich), silenced by ``quiet`` for batch use."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def make_progress(quiet: bool = False) -> Progress:
    """A rich Progress writing to stderr (stdout stays clean for results)."""
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=sys.stderr),
        disable=quiet,
        transient=False,
    )


def track(items: Iterable[T], total: int | None, description: str, quiet: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a progress bar unless ``quiet``."""
    if quiet:
        yield from items
        return
    with make_progress(quiet) as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
