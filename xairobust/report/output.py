"""Writing a report folder: every file rendered into a staging folder beside ``out``, then moved
in file by file (each move atomic), so bad input writes nothing and a killed report leaves whole
files only. Shared by every report kind (scores, visual-only, manipulation, MER)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def warn(message: str) -> None:
    """A warning on stderr; printed with --quiet too (it silences progress bars, not findings)."""
    print(f"warning: {message}", file=sys.stderr)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` (same file system: moves are atomic), removed afterwards."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_into(staged: Path, out: Path) -> list[Path]:
    """Move every staged file to the same place under ``out`` (os.replace: atomic per file)."""
    written = []
    for src in sorted(p for p in staged.rglob("*") if p.is_file()):
        dst = out / src.relative_to(staged)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        written.append(dst)
    return written
