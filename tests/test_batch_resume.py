"""SIGKILL a batch in the middle of a job, run it again: nothing half-written, nothing redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_util import REPO, check_files_whole, fingerprint, subprocess_env, tiny_zoo, wait_group_gone
from rich.console import Console

from xairobust.batch.plan import build_plan
from xairobust.batch.runner import BatchOptions, run_batch
from xairobust.batch.state import done_stamps
from xairobust.batch.zoo import load_zoo


def finished_files(root: Path, zoo_path: Path) -> tuple[set[str], list[Path]]:
    """Ids of the jobs that are done and every file they wrote (outputs, markers, logs)."""
    plan, _ = build_plan(load_zoo(zoo_path))
    stamps = done_stamps(plan, root)
    files: list[Path] = []
    for job in plan.jobs:
        if job.id not in stamps:
            continue
        run = root / job.target
        if job.stage == "train":
            files += [run / n for n in ("model.safetensors", "run.json", "config.yaml", "history.csv")]
        else:
            files.append(job.marker(root))
            files += [root / rel for rel in json.loads(job.marker(root).read_text())["outputs"]]
        files.append(job.log(root))
    return set(stamps), files


@pytest.mark.slow
def test_sigkill_mid_job_then_resume(tmp_path):
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    # gxi explanations sleep 3 s between writing the attributions and their .json: the kill lands there.
    zoo = tiny_zoo(tmp_path, explainers=["grad", {"name": "gxi", "explain": {"n": 16, "sleep": 3.0}}])

    reference = tmp_path / "reference"
    ref = run_batch(zoo, BatchOptions(root=str(reference), workers=2, quiet=True), out=quiet)
    assert ref.ok

    root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xairobust", "batch", str(zoo), "--root", str(root), "--workers", "2", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=REPO,
        start_new_session=True,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 240
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "start   explain gxi" in line and sum("done " in s for s in seen) >= 3:
            break
        assert time.monotonic() < deadline, "".join(seen)
    time.sleep(1.0)  # inside the gxi job's sleep: its .safetensors is written, its .json not yet
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The workers die with the batch (PR_SET_PDEATHSIG): nothing writes after the kill.
    wait_group_gone(proc.pid)

    check_files_whole(root)  # every file that exists parses: no half-written file
    done_before, files = finished_files(root, zoo)
    plan, _ = build_plan(load_zoo(zoo))
    assert 3 <= len(done_before) < len(plan.jobs), "the kill should land mid-batch"
    killed_gxi = [j for j in plan.jobs if j.id.startswith("explain:") and j.id.endswith(":gxi") and j.id not in done_before]
    assert any((root / j.target / "attributions" / "gxi.safetensors").exists() for j in killed_gxi)
    before = fingerprint(files)

    again = run_batch(zoo, BatchOptions(root=str(root), workers=2, quiet=True), out=quiet)
    assert again.ok
    assert {j for j, o in again.outcomes.items() if o.status == "cached"} == done_before  # nothing finished is redone
    assert fingerprint(files) == before  # their files are untouched (mtime and content)
    assert check_files_whole(root) == []  # no temporary file left anywhere
    for name in ("table.csv", "table.md"):
        assert (root / "results/tiny/digits_digits_cnn" / name).read_bytes() == (reference / "results/tiny/digits_digits_cnn" / name).read_bytes()
    # Every artefact of every run is identical to the uninterrupted batch's.
    for f in sorted(p for p in (reference / "runs").rglob("*") if p.is_file()):
        rel = f.relative_to(reference)
        if "logs" in rel.parts or rel.suffix == ".lock" or rel.name in ("run.json", "config.yaml", "history.csv") or ".batch" in rel.parts:
            continue  # logs, metadata and history hold times and paths
        assert (root / rel).read_bytes() == f.read_bytes(), rel
