"""Bad input to the robust-training and attack commands, through the real CLI in subprocesses.

Every case must print one line `error: ...` naming the option, exit non-zero and write nothing.
The processes run concurrently to keep the wall time of this test low.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cases(run: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """The issue's bad inputs, through a real subprocess each."""
    train = ["train", "--epochs", "1", "--out", str(out)]
    return {
        "pgd eps": (train + ["--method", "pgd", "--eps=-0.1"], "--eps"),
        "pgd steps": (train + ["--method", "pgd", "--steps", "0"], "--steps"),
        "pgd norm": (train + ["--method", "pgd", "--norm", "l3"], "norm"),
        "jacobian lam": (train + ["--method", "jacobian", "--lam", "-1"], "--lam"),
        "nsloss layers": (train + ["--method", "nsloss", "--layers", "net.nothing*"], "--layers"),
        "init other architecture": (train + ["--model", "tiny_mlp", "--init", str(run)], "--init"),
        "attack eps": (["attack", "--run", str(run), "--eps", "-0.1", "--n", "4"], "--eps"),
    }


def _more_cases(run: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """Further bad inputs, through the same console entry point in-process (saves ~5 s each)."""
    train = ["train", "--epochs", "1", "--out", str(out)]
    return {
        "nsloss lam": (train + ["--method", "nsloss", "--lam", "-0.5"], "--lam"),
        "nsloss eps": (train + ["--method", "nsloss", "--eps-ns", "0"], "--eps-ns"),
        "pgd unknown option": (train + ["--method", "pgd", "--epz", "0.1"], "epz"),
        "attack steps": (["attack", "--run", str(run), "--eps", "0.1", "--steps", "0", "--n", "4"], "--steps"),
        "attack norm": (["attack", "--run", str(run), "--norm", "l3", "--n", "4"], "norm"),
        "attack restarts": (["attack", "--run", str(run), "--restarts", "0", "--n", "4"], "--restarts"),
        "tune layers": (["tune-lambda", "--run", str(run), "--layers", "zzz", "--out", str(out / "t.json")], "--layers"),
        "tune eps": (["tune-lambda", "--run", str(run), "--eps-ns", "-1", "--out", str(out / "t.json")], "--eps-ns"),
    }


def test_more_bad_input_in_process(digits_run, tmp_path, monkeypatch, capsys):
    from xairobust.cli import run as entry

    before = sorted(p.name for p in digits_run.iterdir())
    monkeypatch.chdir(tmp_path)
    for name, (args, option) in _more_cases(digits_run, tmp_path / "out").items():
        monkeypatch.setattr(sys, "argv", ["xairobust", *args])
        with pytest.raises(SystemExit) as exc:
            entry()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], (name, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in digits_run.iterdir()) == before


@pytest.mark.slow
def test_bad_input_gives_one_line_error_and_writes_nothing(digits_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    before = sorted(p.name for p in digits_run.iterdir())
    procs = {}
    for name, (args, option) in _cases(digits_run, tmp_path / "out").items():
        procs[name] = (subprocess.Popen([sys.executable, "-m", "xairobust", *args], env=env, cwd=tmp_path,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), option)
    failures = []
    for name, (proc, option) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        lines = [line for line in stderr.splitlines() if line.strip()]
        ok = proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0]
        ok = ok and "Traceback" not in stderr
        if not ok:
            failures.append(f"{name}: rc={proc.returncode} stderr={stderr!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in digits_run.iterdir()) == before  # no robustness.json, no tune_lambda.json


@pytest.mark.parametrize("method", ["pgd", "jacobian", "nsloss"])
def test_methods_are_registered_with_labels(method):
    from xairobust.registry import METHODS

    assert method in METHODS.names()
    assert METHODS.meta(method)["label"]
