"""Fetching an official archive into the data dir (only when the user asks for it).

Loaders never download on their own: a missing dataset is a DataError naming the path looked
at, the official URL and the command that fetches it (``xairobust data download NAME``).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from xairobust.errors import DataError


def download_and_extract(url: str, root: Path, md5: str | None = None, quiet: bool = False) -> None:
    """Download ``url`` into a temporary file, check ``md5`` when given, extract under ``root``.

    Extraction goes into a temporary folder next to ``root`` first and is moved into place
    afterwards, so an interrupted download never leaves a half-extracted dataset behind.
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / url.rsplit("/", 1)[-1]
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as fh:
                shutil.copyfileobj(resp, fh, length=1 << 20)
        except OSError as exc:
            raise DataError(f"could not download {url} ({exc}); download it by hand and extract it into {root}") from None
        if md5 is not None:
            digest = hashlib.md5(archive.read_bytes()).hexdigest()
            if digest != md5:
                raise DataError(f"{url}: md5 {digest} differs from the official {md5}; the download is corrupt, retry")
        staging = Path(tmp) / "extracted"
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        for item in staging.iterdir():
            target = root / item.name
            if target.exists():
                raise DataError(f"{target} already exists; remove it first to download again")
            shutil.move(str(item), target)
        if not quiet:
            print(f"extracted {url} into {root}")
