"""What is already done, and the log of what each job wrote.

A job is done when its dependencies are done and the stage contract says its outputs are current
(``Stage.is_current``: the document's provenance block matches the job's config and the sha256 of
its input files now, and the files it records are unchanged). So retraining a model redoes its
explanations (their recorded weights hash no longer matches), and an output computed outside the
batch with the same config counts as done. A job's stamp is its provenance identity hash.

After each job the worker writes a marker ``<target>/.batch/<tag>.json``: the job, its key, the
sha256 of the files it wrote, its dependencies' stamps and its wall time. Markers are a log, read
by people and tests; they never decide whether a job runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xairobust.layout import RunLayout
from xairobust.runs import file_sha256

MARKER_DIR = RunLayout.BATCH
LOG_DIR = RunLayout.LOGS
# atomic_path() writes ".<name>.<random>.tmp" next to the file; a SIGKILL can leave one behind.
STALE_TMP = re.compile(r"^\..+\.tmp$")


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


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    """contextlib.chdir (Python 3.11+) for 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def load_stage(name: str, module: str | None) -> type:
    """The registered stage ``name`` in this worker process.

    ``module`` is where the driver found the class registered (``type(stage).__module__``, never
    text from a zoo file): a spawned worker imports it so that stages registered outside the
    package (the test suite's stubs) are registered here too.
    """
    from xairobust.stages.contract import STAGES

    if name not in STAGES and module:
        importlib.import_module(module)
    return STAGES.get(name)


def job_stage(job: Any, runs: list[str] | None = None) -> tuple[Any, Any]:
    """(stage instance, config) of ``job``; ``runs``: the runs a many-run job reads (default all)."""
    from xairobust import config as cfg

    cls = load_stage(job.name, job.module)
    return cls(), cfg.build(cls.Config, job.stage_config(runs), job.id)


def job_stamp(job: Any, root: Path, runs: list[str] | None = None) -> str | None:
    """The job's stamp (its provenance identity hash, short) when the contract says its outputs
    are current (``Stage.is_current``: the same config and input files, outputs unchanged), else
    None. This is the batch's only notion of "done"; markers are a log of what a job wrote."""
    root = Path(root)
    if not root.is_dir():
        return None
    try:
        with _chdir(root):  # job paths (targets, init runs, report runs) are relative to the root
            stage, conf = job_stage(job, runs)
            target = Path(job.target)
            resolved = stage.resolve(target, conf)
            return resolved.hash[:16] if stage.is_current(target, conf, resolved) else None
    except Exception:  # noqa: BLE001 - an input missing, stale or unreadable (RunError, ...): not provably
        return None  # current, so the job runs, and the worker logs a real failure


def done_stamps(plan: Any, root: Path) -> dict[str, str]:
    """{job id: stamp} of every job of ``plan`` that is done: its dependencies are done and its
    outputs are current by the contract (jobs are in dependency order)."""
    stamps: dict[str, str] = {}
    for job in plan.jobs:
        if any(d not in stamps for d in job.deps):
            continue
        stamp = job_stamp(job, root)
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
