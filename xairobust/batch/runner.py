"""Run a zoo: plan, skip what is done, schedule the rest on an executor, summarise.

The scheduler lives in this (driver) process and only hands ready jobs to the executor, so the
same resume, failure-isolation and progress logic serves every executor.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from xairobust.batch.plan import Job, Plan, build_plan, job_key, stage_order
from xairobust.batch.state import done_stamps, sweep_stale_tmp
from xairobust.batch.view import BatchView, fmt_duration
from xairobust.batch.zoo import Zoo, load_zoo
from xairobust.errors import RunError
from xairobust.registry import EXECUTORS

Status = Literal["cached", "done", "failed", "skipped", "interrupted"]


@dataclass
class BatchOptions:
    root: str | None = None  # results root; default: the zoo's `root:`, else the current directory
    executor: str = "local"
    workers: int | None = None  # local: processes (default: CPU cores // threads); ray: CPUs of a local Ray
    threads: int | None = None  # local: torch threads per worker (default 1); ray: default the task's CPUs
    address: str | None = None
    dry_run: bool = False
    quiet: bool = False
    skip_missing_stages: bool = False  # leave out stages this installation lacks (demo)


@dataclass
class Outcome:
    status: Status
    wall_s: float | None = None
    error: str | None = None
    log: str | None = None
    note: str | None = None


@dataclass
class BatchResult:
    plan: Plan
    root: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    wall_s: float = 0.0
    removed_tmp: int = 0
    missing_stages: list[str] = field(default_factory=list)
    interrupted: bool = False
    executor: str = ""

    def count(self, status: str, stage: str | None = None) -> int:
        jobs = self.plan.by_id()
        return sum(1 for i, o in self.outcomes.items() if o.status == status and (stage is None or jobs[i].stage == stage))

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(o.status in ("cached", "done") for o in self.outcomes.values())

    def report_dirs(self) -> list[Path]:
        return [self.root / j.target for j in self.plan.reports() if self.outcomes.get(j.id, Outcome("skipped")).status in ("cached", "done")]


def default_workers(threads: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads))


def resolve_root(opts: BatchOptions, zoo: Zoo) -> Path:
    return Path(opts.root or zoo.root or ".").expanduser().resolve()


@contextlib.contextmanager
def root_lock(path: Path) -> Iterator[None]:
    """One batch per zoo and root at a time (the kernel drops the lock if the batch is killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another batch is running this zoo in {path.parent} (lock: {path})") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. from a cluster scheduler) stops the batch like Ctrl-C: workers stopped, summary printed."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def job_spec(job: Job, root: Path, key: str, dep_stamps: dict[str, str], inputs: list[str]) -> dict[str, Any]:
    """The plain dict a worker gets (picklable, no classes)."""
    return {"id": job.id, "stage": job.stage, "name": job.name, "module": job.module, "tag": job.tag,
            "config": job.stage_config(inputs if job.soft else None),
            "target": job.target, "root": str(root), "key": key, "deps": dep_stamps, "inputs": inputs}


def make_executor(opts: BatchOptions) -> Any:
    cls = EXECUTORS.get(opts.executor)
    workers, threads = opts.workers, opts.threads
    if opts.executor == "local":
        threads = 1 if threads is None else threads
        workers = default_workers(threads) if workers is None else workers
    return cls(workers=workers, threads=threads, address=opts.address)


def run_batch(zoo: Zoo | str | Path, opts: BatchOptions, out: Console | None = None) -> BatchResult:
    """Run (or with ``dry_run`` only print) the zoo; prints the plan or the summary to ``out``."""
    out = out or Console()
    EXECUTORS.get(opts.executor)  # an unknown executor is an error even for --dry-run
    zoo = zoo if isinstance(zoo, Zoo) else load_zoo(zoo)
    plan, missing = build_plan(zoo, skip_missing_stages=opts.skip_missing_stages)
    root = resolve_root(opts, zoo)
    stamps = done_stamps(plan, root)
    result = BatchResult(plan=plan, root=root, missing_stages=missing)
    if opts.dry_run:
        print_plan(plan, root, stamps, missing, out)
        return result
    from xairobust.validate import check_output_dir

    # Before any worker starts: a root below a file or on a read-only mount fails with one line.
    check_output_dir(root, "--root" if opts.root else "root (the zoo's)")
    executor = make_executor(opts)
    result.executor = executor.describe()
    start = time.perf_counter()
    try:
        with root_lock(root / plan.runs_dir / ".batch.lock"), sigterm_as_interrupt():
            result.removed_tmp = sweep_stale_tmp([root / plan.runs_dir, root / plan.results_dir],
                                                 [root / j.target for j in plan.reports()])
            _schedule(plan, root, stamps, executor, opts, result)
    finally:
        executor.shutdown(cancel=result.interrupted)
        result.wall_s = time.perf_counter() - start
    print_summary(result, out)
    return result


def _schedule(plan: Plan, root: Path, stamps: dict[str, str], executor: Any, opts: BatchOptions,
              result: BatchResult) -> None:
    jobs = plan.by_id()
    state: dict[str, str] = {j.id: ("cached" if j.id in stamps else "pending") for j in plan.jobs}
    for job_id, s in state.items():
        if s == "cached":
            result.outcomes[job_id] = Outcome("cached")
    order = {j.id: i for i, j in enumerate(plan.jobs)}
    todo = [j for j in plan.jobs if state[j.id] == "pending"]
    view = BatchView(total=len(plan.jobs), cached=len(plan.jobs) - len(todo),
                     parallelism=executor.parallelism, quiet=opts.quiet)
    for j in todo:
        view.add_pending(j.id, j.stage)
    finished_ok = ("cached", "done")

    def skip(job: Job, reason: str) -> None:
        state[job.id] = "skipped"
        result.outcomes[job.id] = Outcome("skipped", error=reason)
        view.skipped_job(job.id, job.summary, reason)

    with view:
        try:
            while True:
                ready: list[tuple[Job, str, list[str], list[str]]] = []
                for job in plan.jobs:  # dependency order, so skips cascade in one pass
                    if state[job.id] != "pending":
                        continue
                    deps = [state[d] for d in job.deps]
                    if job.soft:
                        if any(s in ("pending", "running") for s in deps):
                            continue
                        runs = [r for r, ids in job.inputs.items() if all(state[i] in finished_ok for i in ids)]
                        if not runs:
                            skip(job, "no run of this report finished")
                            continue
                        use = [i for r in runs for i in job.inputs[r]]
                        key = job_key(job, {d: jobs[d].key for d in use}, runs)
                        ready.append((job, key, use, runs))
                        continue
                    bad = next((d for d in job.deps if state[d] in ("failed", "skipped")), None)
                    if bad is not None:
                        skip(job, f"{bad} {state[bad]}")
                    elif all(s in finished_ok for s in deps):
                        ready.append((job, job.key, list(job.deps), []))
                # Later stages first: finishes whole runs early (partial results, less to redo).
                ready.sort(key=lambda r: (-stage_order(r[0].stage), order[r[0].id]))
                for job, key, deps, runs in ready:
                    if executor.capacity is not None and executor.running() >= executor.capacity:
                        break
                    spec = job_spec(job, root, key, {d: stamps[d] for d in deps}, runs)
                    res = job.resources
                    executor.submit(spec, cpus=res.cpus, gpus=res.gpus)
                    state[job.id] = "running"
                    if job.soft and len(runs) < len(job.inputs):
                        result.outcomes[job.id] = Outcome("done", note=f"built from {len(runs)} of {len(job.inputs)} runs")
                    view.started(job.id, job.stage, job.summary)
                if executor.running() == 0:
                    if any(s == "pending" for s in state.values()):
                        raise RuntimeError("batch scheduler: jobs left that can never start (a dependency cycle?)")
                    break
                for r in executor.poll(timeout=0.25):
                    job_id = r["id"]
                    note = result.outcomes.get(job_id, Outcome("done")).note
                    log = _rel(r.get("log"), root)
                    if r.get("ok"):
                        state[job_id] = "done"
                        stamps[job_id] = r["stamp"]
                        result.outcomes[job_id] = Outcome("done", wall_s=r.get("wall_s"), log=log, note=note)
                    else:
                        state[job_id] = "failed"
                        log = log or _rel(str(jobs[job_id].log(root)), root)
                        result.outcomes[job_id] = Outcome("failed", wall_s=r.get("wall_s"), error=r.get("error"), log=log)
                    view.finished(job_id, bool(r.get("ok")), r.get("wall_s"), r.get("error"), log)
        except KeyboardInterrupt:
            result.interrupted = True
            for job_id, s in state.items():
                if s == "running":
                    result.outcomes[job_id] = Outcome("interrupted", error="interrupted")
                elif s == "pending":
                    result.outcomes[job_id] = Outcome("interrupted", error="not started")


def plan_stages(plan: Plan) -> list[str]:
    """The slots of ``plan``'s jobs in scheduling order (core slots first, then registered extras)."""
    present = list(dict.fromkeys(j.stage for j in plan.jobs))
    return sorted(present, key=stage_order)


def _rel(path: str | None, root: Path) -> str | None:
    """A log path as the user can open it: relative to the current directory when inside it."""
    if path is None:
        return None
    p = Path(path)
    p = p if p.is_absolute() else root / p
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def print_plan(plan: Plan, root: Path, stamps: dict[str, str], missing: list[str], out: Console) -> None:
    """``--dry-run``: every job with whether it is done or would run; nothing is written."""
    out.print(f"zoo {plan.zoo.name}: runs in {root / plan.runs_dir}, reports in {root / plan.results_dir}",
              soft_wrap=True, highlight=False)
    for job in plan.jobs:
        status = "done" if job.id in stamps else "run"
        out.print(f"{status:<5} {job.summary}", soft_wrap=True, highlight=False, markup=False)
    counts = Table(title="dry run: nothing was run")
    counts.add_column("stage")
    counts.add_column("jobs", justify="right")
    counts.add_column("done", justify="right")
    counts.add_column("to run", justify="right")
    for stage in plan_stages(plan):
        js = [j for j in plan.jobs if j.stage == stage]
        if js:
            d = sum(j.id in stamps for j in js)
            counts.add_row(stage, str(len(js)), str(d), str(len(js) - d))
    d = sum(j.id in stamps for j in plan.jobs)
    counts.add_row("total", str(len(plan.jobs)), str(d), str(len(plan.jobs) - d), style="bold")
    out.print(counts)
    if missing:
        out.print(f"left out (not in this installation): {', '.join(missing)}")


def print_summary(result: BatchResult, out: Console) -> None:
    """The table every batch ends with: per stage ran / already done / failed / skipped / time."""
    plan = result.plan
    jobs = plan.by_id()
    table = Table(title=f"zoo {plan.zoo.name}: summary")
    for col in ("stage", "ran", "already done", "failed", "skipped", "job time"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage in [*plan_stages(plan), None]:
        ids = [j.id for j in plan.jobs if stage is None or j.stage == stage]
        if not ids:
            continue
        outs = [result.outcomes.get(i, Outcome("interrupted")) for i in ids]
        wall = sum(o.wall_s or 0.0 for o in outs if o.status in ("done", "failed"))
        not_run = sum(o.status in ("skipped", "interrupted") for o in outs)
        failed = sum(o.status == "failed" for o in outs)
        table.add_row(
            stage or "total", str(sum(o.status == "done" for o in outs)), str(sum(o.status == "cached" for o in outs)),
            f"[red]{failed}[/red]" if failed else "0", str(not_run), fmt_duration(wall),
            style="bold" if stage is None else None,
        )
    out.print(table)
    out.print(f"wall time {fmt_duration(result.wall_s)} ({result.executor}); root {result.root}")
    for job_id, o in result.outcomes.items():
        if o.status == "failed":
            out.print(f"[red]failed[/red] {jobs[job_id].summary}: {o.error}\n    log: {o.log}", soft_wrap=True)
    skipped = [i for i, o in result.outcomes.items() if o.status == "skipped"]
    if skipped:
        out.print(f"skipped {len(skipped)} job(s) whose inputs failed", soft_wrap=True)
    for job_id, o in result.outcomes.items():
        if o.note:
            out.print(f"note: {jobs[job_id].summary}: {o.note}", soft_wrap=True)
    if result.removed_tmp:
        out.print(f"removed {result.removed_tmp} temporary file(s) left by an interrupted batch")
    if result.missing_stages:
        out.print(f"left out (not in this installation): {', '.join(result.missing_stages)}")
    if result.interrupted:
        out.print("[yellow]interrupted[/yellow]: run the same command again to resume")
    for d in result.report_dirs():
        out.print(f"report: {_rel(str(d), result.root)}", soft_wrap=True)


def exit_code(result: BatchResult) -> int:
    if result.interrupted:
        return 130
    return 0 if result.ok else 1

