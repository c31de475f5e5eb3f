"""Run many ``xairobust`` command lines fast: import the CLI once, then fork one child per case.

Each child is a fresh process as far as the command is concerned (its own cwd, argv,
environment, stdout/stderr files and exit status) and runs the console entry point
``xairobust.cli:run`` -- the same function the installed ``xairobust`` script calls -- so a
case sees exactly what a user sees, without paying ~3 s of ``import torch`` per case.

    python tests/cli_fork_driver.py CASES.json RESULTS.json [--jobs N] [--timeout S]

CASES.json: a list of {"id", "argv" (without the program name), "cwd", "env" (extra variables)}.
RESULTS.json: {id: {"rc", "stdout", "stderr", "seconds"}}; rc is -signal for a killed child and
124 for one that ran past the timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time


def _warm_imports() -> None:
    """Import what the commands import lazily, once, before forking (copy-on-write for children)."""
    import torch

    torch.set_num_threads(1)
    import xairobust.cli  # noqa: F401  (registers every command)
    import xairobust.stages.attack  # noqa: F401
    import xairobust.stages.explain  # noqa: F401
    import xairobust.stages.score  # noqa: F401
    import xairobust.stages.train  # noqa: F401
    try:
        import xairobust.report  # noqa: F401  (matplotlib, scipy: seconds per report case otherwise)
    except ImportError:
        pass
    from xairobust.registry import DATASETS, EXPLAINERS, METHODS, METRICS, MODELS

    for reg in (DATASETS, EXPLAINERS, METHODS, METRICS, MODELS):
        reg.names()


def _child(case: dict, out_path: str, err_path: str) -> None:
    """Runs in the forked child; never returns."""
    code = 70
    try:
        os.chdir(case["cwd"])
        os.environ.update(case.get("env", {}))
        out = os.open(out_path, os.O_WRONLY | os.O_TRUNC)
        err = os.open(err_path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = ["xairobust", *case["argv"]]
        from xairobust.cli import run

        try:
            run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - report anything that escaped the entry point
        try:
            os.write(2, f"DRIVER: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
        code = 71
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(code)


def run_cases(cases: list[dict], jobs: int, timeout: float) -> dict[str, dict]:
    _warm_imports()
    tmp = tempfile.mkdtemp(prefix="xairobust-driver-")
    pending = list(cases)
    running: dict[int, tuple[dict, str, str, float]] = {}
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop(0)
            out_path = os.path.join(tmp, f"{len(results) + len(running)}-{os.getpid()}-{time.monotonic_ns()}.out")
            err_path = out_path[:-4] + ".err"
            open(out_path, "w").close()
            open(err_path, "w").close()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, out_path, err_path)
            running[pid] = (case, out_path, err_path, time.monotonic())
        for pid, (_case, _, _, started) in list(running.items()):
            if time.monotonic() - started > timeout:
                os.kill(pid, signal.SIGKILL)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0 or pid not in running:
            time.sleep(0.02)
            continue
        case, out_path, err_path, started = running.pop(pid)
        if os.WIFEXITED(status):
            rc = os.WEXITSTATUS(status)
        else:
            rc = -os.WTERMSIG(status)
            if time.monotonic() - started > timeout:
                rc = 124
        with open(out_path, errors="replace") as fh:
            stdout = fh.read()
        with open(err_path, errors="replace") as fh:
            stderr = fh.read()
        results[case["id"]] = {"rc": rc, "stdout": stdout, "stderr": stderr, "seconds": time.monotonic() - started}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases")
    parser.add_argument("results")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    with open(args.cases) as fh:
        cases = json.load(fh)
    results = run_cases(cases, args.jobs, args.timeout)
    with open(args.results, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
