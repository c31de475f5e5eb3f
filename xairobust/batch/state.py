"""What is already done: markers, output fingerprints, and the resume check.

A train job is done when ``run.json`` exists with the job's config hash and the weights match
its checksum. Every other job writes a marker ``<target>/.batch/<tag>.json`` after its stage
returns: the job key, the checksums of the outputs the stage returned, and the stamps of the
jobs it depended on. It is done when the marker has the same key, its outputs still have those
checksums, and its dependencies are done with the same stamps (so retraining a model redoes its
explanations). A job's stamp is the weights checksum (train) or a hash of its outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from xairobust.errors import RunError
from xairobust.layout import RunLayout
from xairobust.runs import RUN_JSON, WEIGHTS, file_sha256

MARKER_DIR = RunLayout.BATCH
LOG_DIR = RunLayout.LOGS
# atomic_path() writes ".<name>.<random>.tmp" next to the file; a SIGKILL can leave one behind.
STALE_TMP = re.compile(r"^\..+\.tmp$")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def train_stamp(root: Path, target: str, key: str) -> str | None:
    """The weights checksum of a finished run with config hash ``key``, else None."""
    run = root / target
    meta = _read_json(run / RUN_JSON)
    if not meta or meta.get("config_hash") != key:
        return None
    sha = meta.get("weights_sha256")
    weights = run / WEIGHTS
    if not sha or not weights.is_file() or file_sha256(weights) != sha:
        return None
    return str(sha)


def output_hashes(root: Path, outputs: list[Path]) -> dict[str, str]:
    """{path relative to root: sha256} for the files (or the files below the directories) given."""
    hashes: dict[str, str] = {}
    for out in outputs:
        path = out if out.is_absolute() else root / out
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*")
            if p.is_file() and MARKER_DIR not in p.relative_to(path).parts and LOG_DIR not in p.relative_to(path).parts
        )
        for f in files:
            try:
                rel = str(f.resolve().relative_to(root.resolve()))
            except ValueError:
                rel = str(f.resolve())
            hashes[rel] = file_sha256(f)
    return hashes


def stamp_of(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def marker_stamp(root: Path, marker: Path, key: str, dep_stamps: dict[str, str]) -> str | None:
    """The job's stamp when its marker matches ``key`` and ``dep_stamps`` and outputs are intact."""
    data = _read_json(marker)
    if not data or data.get("key") != key or data.get("deps") != dep_stamps:
        return None
    outputs = data.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return None
    for rel, sha in outputs.items():
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if not path.is_file() or file_sha256(path) != sha:
            return None
    # The provenance chain: an output whose inputs changed since (e.g. weights replaced outside
    # the batch) is not done, whatever the marker says; the job runs again.
    from xairobust.stages.contract import StaleError, verify_chain

    for rel in data.get("docs") or []:
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        try:
            verify_chain(path, marker.parent.parent, "xairobust batch")
        except (StaleError, RunError):
            return None
    return data.get("stamp")


def done_stamps(plan: Any, root: Path) -> dict[str, str]:
    """{job id: stamp} of every job of ``plan`` that is done (jobs are in dependency order)."""
    stamps: dict[str, str] = {}
    for job in plan.jobs:
        if any(d not in stamps for d in job.deps):
            continue
        if job.stage == "train":
            stamp = train_stamp(root, job.target, job.key)
        else:
            stamp = marker_stamp(root, job.marker(root), job.key, {d: stamps[d] for d in job.deps})
        if stamp:
            stamps[job.id] = stamp
    return stamps


def sweep_stale_tmp(dirs: list[Path], report_dirs: list[Path] = ()) -> int:
    """Remove temporary files an interrupted batch left behind; returns how many.

    Also the staging folders ``.<report>.<random>`` that build_report renders into beside each
    report directory. Only safe while no job writes below ``dirs``: the batch holds the lock.
    """
    removed = 0
    for report in report_dirs:
        for d in report.parent.glob(f".{report.name}.*"):
            if d.is_dir() and re.fullmatch(r"[a-z0-9_]{8}", d.name[len(report.name) + 2 :]):
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    for d in dirs:
        if not d.is_dir():
            continue
        for p in d.rglob("*.tmp"):
            if p.is_file() and STALE_TMP.match(p.name):
                p.unlink(missing_ok=True)
                removed += 1
    return removed
