"""The local executor: ``--workers N`` spawned processes, each with ``--threads T`` torch threads."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import signal
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from xairobust.batch.worker import one_line, run_job, set_threads
from xairobust.config import require
from xairobust.registry import EXECUTORS


def _init_worker(threads: int) -> None:
    """Runs first in every worker process."""
    # Ctrl-C goes to the whole process group; the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        # Die with the parent: a SIGKILLed batch must not leave workers writing into its runs.
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    set_threads(threads)


@EXECUTORS.register("local", description="processes on this machine (--workers, --threads)")
class LocalExecutor:
    """A pool of spawned processes (not forked: torch and threads do not survive fork well).

    A worker that dies (SIGKILL, out of memory) fails the jobs it and its pool were running
    with a one-line error; the pool is replaced and the batch goes on.
    """

    def __init__(self, workers: int = 1, threads: int = 1, address: str | None = None) -> None:
        require(workers >= 1, f"batch: --workers must be >= 1, got {workers}")
        require(threads >= 1, f"batch: --threads must be >= 1, got {threads}")
        require(address is None, "batch: --address is for --executor ray")
        self.workers = workers
        self.threads = threads
        self.capacity = workers
        self.parallelism = workers
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future, dict[str, Any]] = {}

    def describe(self) -> str:
        return f"local, {self.workers} worker(s) x {self.threads} thread(s)"

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn"),
                initializer=_init_worker, initargs=(self.threads,),
            )
        return self._pool

    def submit(self, spec: dict[str, Any], cpus: float = 1.0, gpus: float = 0.0) -> None:
        # Zoo resources are for Ray; locally every job gets one worker with --threads threads.
        spec = {**spec, "threads": self.threads}
        try:
            fut = self._ensure_pool().submit(run_job, spec)
        except BrokenProcessPool:
            self._pool = None
            fut = self._ensure_pool().submit(run_job, spec)
        self._futures[fut] = spec

    def running(self) -> int:
        return len(self._futures)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        results = []
        broken = False
        for fut in done:
            spec = self._futures.pop(fut)
            try:
                results.append(fut.result())
            except BrokenProcessPool:
                broken = True
                results.append({"id": spec["id"], "ok": False, "wall_s": None,
                                "error": "worker process died (killed, or out of memory)"})
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                results.append({"id": spec["id"], "ok": False, "wall_s": None, "error": one_line(exc)})
        if broken:
            self._pool = None  # the next submit starts a fresh pool
        return results

    def shutdown(self, cancel: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel:
            # Stop running jobs now (Ctrl-C): their atomic writes leave no partial files.
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                if p.is_alive():
                    p.kill()
            for p in processes:
                p.join(timeout=5)
        else:
            pool.shutdown(wait=True)
        self._futures.clear()
