"""Progress of a batch: a rich live view (done / running / failed, ETA), or plain log lines."""

from __future__ import annotations

import sys
import time
from statistics import mean
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MAX_ROWS = 8


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BatchView:
    """Tracks job states for the display and the ETA; ``quiet`` prints one line per event."""

    def __init__(self, total: int, cached: int, parallelism: int, quiet: bool) -> None:
        self.total = total
        self.cached = cached
        self.parallelism = max(1, parallelism)
        self.console = Console(file=sys.stderr)
        # No terminal (a log file, a cluster job): plain lines instead of a live view.
        self.quiet = quiet or not self.console.is_terminal
        self.start = time.perf_counter()
        self.running: dict[str, tuple[str, str, float]] = {}  # id -> (stage, summary, start)
        self.pending: dict[str, str] = {}  # id -> stage, not started yet
        self.walls: dict[str, list[float]] = {}  # stage -> wall times of finished jobs
        self.done = self.failed = self.skipped = 0
        self._live: Live | None = None

    # -- events --------------------------------------------------------------------------------

    def add_pending(self, job_id: str, stage: str) -> None:
        self.pending[job_id] = stage

    def started(self, job_id: str, stage: str, summary: str) -> None:
        self.pending.pop(job_id, None)
        self.running[job_id] = (stage, summary, time.perf_counter())
        self._line(f"start   {summary}")

    def finished(self, job_id: str, ok: bool, wall: float | None, error: str | None = None, log: str | None = None) -> None:
        stage, summary, start = self.running.pop(job_id, ("?", job_id, time.perf_counter()))
        wall = wall if wall is not None else time.perf_counter() - start
        if ok:
            self.done += 1
            self.walls.setdefault(stage, []).append(wall)
            self._line(f"done    {summary} ({wall:.1f}s)")
        else:
            self.failed += 1
            self._line(f"FAILED  {summary}: {error}" + (f" (log: {log})" if log else ""), keep=True)

    def skipped_job(self, job_id: str, summary: str, reason: str) -> None:
        self.pending.pop(job_id, None)
        self.skipped += 1
        self._line(f"skipped {summary}: {reason}")

    def _line(self, text: str, keep: bool = False) -> None:
        """A log line when quiet; failures also print above the live view."""
        if not self.quiet and keep:
            self.console.print(Text(text, style="red"))
        if self.quiet:
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}] [{self.finished_count()}/{self.total}] {text}", file=sys.stderr, flush=True)

    # -- display -------------------------------------------------------------------------------

    def finished_count(self) -> int:
        return self.cached + self.done + self.failed + self.skipped

    def eta(self) -> float | None:
        """Remaining work / parallelism, with each stage's mean job time so far."""
        everything = [w for ws in self.walls.values() for w in ws]
        if not everything:
            return None
        fallback = mean(everything)

        def estimate(stage: str) -> float:
            ws = self.walls.get(stage)
            return mean(ws) if ws else fallback

        now = time.perf_counter()
        left = sum(estimate(s) for s in self.pending.values())
        left += sum(max(estimate(s) - (now - t0), 0.0) for s, _, t0 in self.running.values())
        return left / self.parallelism

    def render(self) -> Any:
        elapsed = time.perf_counter() - self.start
        head = Text.assemble(
            (f"{self.finished_count()}/{self.total} jobs", "bold"),
            f"  done {self.done + self.cached}",
            ("  running ", ""), (str(len(self.running)), "cyan"),
            ("  failed ", ""), (str(self.failed), "red" if self.failed else ""),
            f"  skipped {self.skipped}",
            f"  elapsed {fmt_duration(elapsed)}  ETA {fmt_duration(self.eta())}",
        )
        bar = ProgressBar(total=max(self.total, 1), completed=self.finished_count(), width=60)
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("job")
        table.add_column("time", justify="right")
        now = time.perf_counter()
        rows = sorted(self.running.values(), key=lambda r: r[2])
        for _, summary, t0 in rows[:MAX_ROWS]:
            table.add_row(f"  [cyan]▸[/cyan] {summary}", fmt_duration(now - t0))
        if len(rows) > MAX_ROWS:
            table.add_row(f"  … {len(rows) - MAX_ROWS} more running", "")
        return Group(head, bar, table)

    def __enter__(self) -> BatchView:
        if not self.quiet:
            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
