"""What runs inside a worker (a local process or a Ray task): one job, isolated.

``run_job`` never raises for a failing stage: it writes the traceback to the job's log file in
its run directory and returns a one-line error, so one bad job cannot stop the batch.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.batch.state import LOG_DIR, MARKER_DIR, load_stage, output_hashes
from xairobust.runs import write_json_atomic


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (full text goes to the log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads for this worker (the env vars cover libraries started later)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def provenance_docs(root: Path, outputs: list[Path]) -> list[str]:
    """The outputs (relative to the root) that carry a provenance block; resume re-verifies them."""
    from xairobust.runs import read_json

    docs = []
    for out in outputs:
        path = out if out.is_absolute() else root / out
        if path.suffix == ".json" and path.is_file():
            try:
                if isinstance(read_json(path).get("provenance"), dict):
                    docs.append(str(out))
            except Exception:  # noqa: BLE001 - not a document: nothing to verify
                pass
    return docs


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job described by a plain dict (see runner.job_spec); returns a result dict."""
    start = time.perf_counter()
    root = Path(spec["root"])
    os.chdir(root)  # job paths are relative to the root (see plan.py)
    target = Path(spec["target"])
    log = target / LOG_DIR / f"{spec['tag']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"id": spec["id"], "log": str(log), "pid": os.getpid()}
    with open(log, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        fh.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {spec['id']} (key {spec['key']}, pid {os.getpid()})\n")
        try:
            set_threads(spec.get("threads"))
            cls = load_stage(spec["name"], spec.get("module"))
            conf = cfg.build(cls.Config, spec["config"], spec["id"])
            stage = cls()
            document = stage.run(target, conf, quiet=True)
            resolved = stage.resolve(target, conf)
            if not stage.is_current(target, conf, resolved):  # the contract's "done", as the driver asks it
                raise RuntimeError(f"{spec['name']} finished but its outputs in {target} are not current")
            stamp = resolved.hash[:16]
            outputs = stage.outputs(target, conf)
            hashes = output_hashes(root, [p for p in outputs if Path(p).is_file()])
            # The log of what the job wrote (the batch never decides on it; see state.py).
            write_json_atomic(target / MARKER_DIR / f"{spec['tag']}.json", {
                "job": spec["id"], "key": spec["key"], "deps": spec["deps"], "outputs": hashes,
                "docs": provenance_docs(root, [Path(document)]),
                "stamp": stamp, "inputs": spec.get("inputs", []),
                "wall_time_s": time.perf_counter() - start,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            result.update(ok=True, stamp=stamp)
            fh.write(f"=== done in {time.perf_counter() - start:.1f}s\n")
        except Exception as exc:  # noqa: BLE001 - isolate every failure to its job
            traceback.print_exc(file=fh)
            result.update(ok=False, error=one_line(exc))
            fh.write(f"=== failed after {time.perf_counter() - start:.1f}s\n")
    result["wall_s"] = time.perf_counter() - start
    return result
