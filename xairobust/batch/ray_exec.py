"""The Ray executor: each job is a Ray task with the CPUs/GPUs the zoo file asks for.

Workers write straight into the run directories, so the results root must be a path that every
node of the cluster reaches under the same name (NFS, Lustre, a shared volume); the driver
passes the absolute root to each task. xairobust must be importable on every node.
``--address auto`` joins a running cluster (``ray start --head`` first); without ``--address``
a local Ray is started for the batch (with ``--workers`` CPUs when given) and stopped after it.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from xairobust.batch.worker import one_line, run_job
from xairobust.errors import ConfigError
from xairobust.registry import EXECUTORS

RETRIES_ON_NODE_LOSS = 3


@EXECUTORS.register("ray", description="a Ray cluster (--address auto|ADDRESS), one task per job")
class RayExecutor:
    capacity = None  # Ray queues tasks by their resources; submit all that are ready

    def __init__(self, workers: int | None = None, threads: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError('batch: --executor ray needs Ray: pip install -e ".[ray]"') from None
        self.ray = ray
        self.address = address
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                if workers:
                    kwargs["num_cpus"] = workers
                # A Ray started here runs the driver's code: give workers the driver's import path.
                paths = [p for p in sys.path if p and Path(p).is_dir()]
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
            ray.init(**kwargs)
            self._started = True
        self.threads = threads
        # Retries cover system failures only (a worker process or a node lost mid-job): run_job
        # returns a failing stage as a result, never raises, so a bad job is not run again. A
        # retry is safe because every stage writes atomically and re-checks what is already done.
        self._remote = ray.remote(max_retries=RETRIES_ON_NODE_LOSS)(run_job)
        self._refs: dict[Any, dict[str, Any]] = {}
        cpus = ray.cluster_resources().get("CPU", 1)
        self.parallelism = max(1, int(cpus))

    def describe(self) -> str:
        where = self.address or "a local Ray"
        return f"ray on {where} ({self.parallelism} CPUs)"

    def submit(self, spec: dict[str, Any], cpus: float = 1.0, gpus: float = 0.0) -> None:
        threads = self.threads or max(1, math.ceil(cpus))
        ref = self._remote.options(num_cpus=cpus, num_gpus=gpus).remote({**spec, "threads": threads})
        self._refs[ref] = spec

    def running(self) -> int:
        return len(self._refs)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if not self._refs:
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            more, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        results = []
        for ref in ready:
            spec = self._refs.pop(ref)
            try:
                results.append(self.ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a worker crash or a lost node
                results.append({"id": spec["id"], "ok": False, "wall_s": None, "error": f"ray: {one_line(exc)}"})
        return results

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while stopping
                    pass
        self._refs.clear()
        if self._started:
            self.ray.shutdown()
