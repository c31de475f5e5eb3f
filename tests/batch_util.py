"""Helpers shared by the batch tests: a tiny digits zoo on the stub stages, file integrity checks."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
import batch_stages  # noqa: F401,E402 - registers the stub stages named in STUBS

STUBS = {"attack": "stub-attack", "explain": "stub-explain", "score": "stub-score", "report": "stub-report"}
STUB_SITE = TESTS / "stub_site"  # its sitecustomize registers the stubs in `xairobust` subprocesses


def tiny_zoo(tmp: Path, name: str = "tiny", **overrides: Any) -> Path:
    """Two labels x two seeds of a 4-channel digits_cnn trained 1 epoch; stub later stages."""
    zoo: dict[str, Any] = {
        "name": name,
        "datasets": ["digits"],
        "models": [{"name": "digits_cnn", "kwargs": {"width": 4}}],
        "methods": ["standard", {"name": "standard", "label": "wd", "train": {"weight_decay": 0.01}}],
        "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 128},
        "attack": {"eps": 0.1},
        "explainers": ["grad", {"name": "gxi", "explain": {"n": 16}}],
        "stages": dict(STUBS),
    }
    zoo.update(overrides)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """Environment for a `xairobust batch` subprocess that can import the stub stages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), str(STUB_SITE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(paths: list[Path]) -> dict[str, tuple[int, str]]:
    return {str(p): (p.stat().st_mtime_ns, sha(p)) for p in paths}


def check_files_whole(root: Path) -> list[Path]:
    """Parse every artefact below ``root`` (JSON, safetensors, CSV, YAML); returns temp files seen.

    A half-written file fails to parse; temporary files of atomic writes are returned, not parsed.
    """
    temps = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.name.endswith(".tmp"):
            temps.append(p)
        elif p.suffix == ".json":
            assert isinstance(json.loads(p.read_text()), dict), p
        elif p.suffix == ".safetensors":
            assert load_file(str(p)), p
        elif p.suffix == ".csv":
            rows = list(csv.reader(p.open()))
            assert rows and len({len(r) for r in rows}) == 1, p
        elif p.suffix == ".yaml":
            assert isinstance(yaml.safe_load(p.read_text()), dict), p
    return temps


def group_alive(pgid: int) -> bool:
    """Whether a non-zombie process of process group ``pgid`` still exists (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_group_gone(pgid: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while group_alive(pgid):
        assert time.monotonic() < end, f"processes of group {pgid} still running {timeout}s after the kill"
        time.sleep(0.1)
