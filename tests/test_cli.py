"""The CLI through the real console entry point (the `xairobust` script pip installs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("xairobust")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (falls back to `python -m xairobust` if not installed)."""
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "xairobust"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("XAIROBUST_DEBUG", None)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert pattern in lines[0], lines[0]


def test_train_from_a_yaml_config_with_cli_override(tmp_path):
    conf = tmp_path / "tiny.yaml"
    conf.write_text("dataset: digits\nmodel: digits_cnn\nmethod: standard\nepochs: 5\nseed: 3\nbatch_size: 128\n")
    proc = cli("train", "--config", str(conf), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["epochs_run"] == 1 and meta["seed"] == 3 and meta["training"]["batch_size"] == 128
    assert (tmp_path / "run" / "config.yaml").read_text().count("epochs: 1") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "digits_cnm"], "unknown model 'digits_cnm'. Did you mean 'digits_cnn'?"),
        (["train", "--dataset", "digit"], "unknown dataset 'digit'. Did you mean 'digits'?"),
        (["train", "--method", "standart"], "unknown training method 'standart'. Did you mean 'standard'?"),
        (["train", "--epoch", "2"], "unknown option '--epoch'. Did you mean '--epochs'?"),
        (["train", "--epochs", "0"], "--epochs must be >= 1"),
        (["train", "--init", "/nonexistent/run"], "--init /nonexistent/run: no such file or directory"),
        (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["trian"], "No such command 'trian'. Did you mean 'train'?"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = cli(*args, "--out", str(out), "--quiet")
    assert_one_line_error(proc, message)
    assert not out.exists()


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("dataset: digits\nepoch: 3\n")
    proc = cli("train", "--config", str(conf), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "unknown key 'epoch'. Did you mean 'epochs'?")


def test_init_from_a_tampered_run_is_refused(tmp_path, digits_run):
    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    proc = cli("train", "--init", str(copy), "--epochs", "1", "--out", str(tmp_path / "out"), "--quiet")
    assert_one_line_error(proc, "checksum does not match run.json")


def test_every_command_has_help():
    from click.testing import CliRunner

    from xairobust.cli import main

    top = cli("--help")  # the real entry point once; each command in-process (2 s saved per command)
    assert top.returncode == 0
    commands = [ln.split()[0] for ln in top.stdout.split("Commands:")[1].splitlines() if ln.strip()]
    assert {"train", "attack", "explain", "score", "report", "batch", "demo", "data"} <= set(commands)
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and f"Usage: main {command}" in result.output, command
