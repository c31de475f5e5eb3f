"""`xairobust report` through the console entry point: outputs, options, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run, zoo
from test_cli import assert_one_line_error, cli

from xairobust.errors import XaiRobustError
from xairobust.report import ReportConfig, build_report


def run_entry(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``xairobust.cli.run`` (the console script's function) in-process: (exit code, stdout, stderr).

    Two tests use a real subprocess; the rest run in-process because each subprocess costs
    ~10 s of imports on a 2-core machine.
    """
    from xairobust.cli import run

    monkeypatch.setattr("sys.argv", ["xairobust", *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def one_line(code: int, err: str, message: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo") / "runs"
    zoo(root, n=10, seeds=(0, 1))
    return root


def test_report_cli_writes_everything(runs, tmp_path):
    out = tmp_path / "results" / "zoo"
    proc = cli("report", *sorted(str(p) for p in runs.iterdir()), "--out", str(out), "--test", "ttest",
               "--correction", "bonferroni", "--bootstrap", "200", "--combined", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"report written to {out}" in proc.stdout
    for name in ("table.tex", "table_body.tex", "table.csv", "table.md", "stats.csv",
                 "figures/attributions.pdf", "figures/attributions.png", "figures/box_ig.pdf", "figures/box_ig.png"):
        assert (out / name).stat().st_size > 0, name
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["test"]) == {"ttest"} and set(stats["correction"]) == {"bonferroni"}
    assert stats["ci_low"].notna().all() and (stats["ci_low"] <= stats["ci_high"]).all()
    assert not list(out.parent.glob(".zoo.*"))  # the staging folder is gone


def test_report_cli_config_file_and_no_figures(runs, tmp_path, monkeypatch, capsys):
    conf = tmp_path / "report.yaml"
    conf.write_text("test: wilcoxon\nexplainer: ig\nfigures: false\ndigits: 2\n")
    out = tmp_path / "r"
    code, _, err = run_entry(monkeypatch, capsys, "report", str(runs), "--out", str(out), "--config", str(conf),
                             "--correction", "holm", "-q")
    assert code == 0, err
    assert not (out / "figures").exists()
    assert set(pd.read_csv(out / "stats.csv")["correction"]) == {"holm"}


def _broken(tmp_path, what):
    root = tmp_path / "runs"
    good = {"max_sens": np.ones(3)}
    run = write_run(root, "a", label="standard", seed=0, scores={"ig": good})
    if what == "csv_column":
        (run / "scores" / "ig.csv").write_text("index,metric,value\n0,max_sens,1\n")
    elif what == "csv_value":
        (run / "scores" / "ig.csv").write_text("index,target,metric,value\n0,0,max_sens,1\n1,0,max_sens,oops\n")
    elif what == "csv_duplicate":
        (run / "scores" / "ig.csv").write_text("index,target,metric,value\n0,0,max_sens,1\n0,0,max_sens,2\n")
    elif what == "run_json":
        (run / "run.json").write_text("{not json")
    elif what == "seed":
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "seed": "zero"}))
    elif what == "robustness":
        (run / "robustness.json").write_text(json.dumps({"robust_accuracy": "high"}))
    elif what == "duplicate_run":
        write_run(root, "b", label="standard", seed=0, scores={"ig": good})
    elif what == "attributions":
        (run / "attributions").mkdir(exist_ok=True)
        (run / "attributions" / "ig.safetensors").write_bytes(b"garbage")  # the scores' input changed
    return root


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("csv_column", "ig.csv: missing column(s) target; expected index,target,metric,value"),
        ("csv_value", "ig.csv: line 3: 'value' is not a number ('oops')"),
        ("csv_duplicate", "ig.csv: line 3: sample 0 scored twice for 'max_sens'"),
        ("run_json", "run.json: not valid JSON"),
        ("seed", "run.json: 'seed' must be an integer, got 'zero'"),
        ("robustness", "robustness.json: 'robust_accuracy' must be a number or null, got 'high'"),
        ("duplicate_run", "both are 'standard' with seed 0 on digits/digits_cnn"),
        ("attributions", "ig.safetensors (attributions) changed since it was computed; recompute it with `xairobust score"),
    ],
)
def test_malformed_inputs_are_one_line_and_write_nothing(tmp_path, what, message):
    # in-process (a subprocess per case would take minutes on 2 cores); the CLI prints a
    # XaiRobustError as its one line, see test_bad_arguments_through_the_cli
    root = _broken(tmp_path, what)
    out = tmp_path / "results" / "x"
    with pytest.raises(XaiRobustError) as info:
        build_report([root], out, ReportConfig(), quiet=True, registry=fake_registry())
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/runs"], "report: no such file or directory: /nonexistent/runs"),
    ],
)
def test_bad_arguments_through_the_cli(runs, tmp_path, args, message):
    out = tmp_path / "out"
    assert_one_line_error(cli("report", *args, "--out", str(out), "-q"), message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{runs}", "--explainer", "ig,igg"], "--explainer 'igg': no run has scores/igg.csv. Did you mean 'ig'? Scored: ig"),
        (["{noscores}", "--bootstrap", "5"], "--bootstrap must be 0 (off) or at least 100"),
        (["{runs}", "--alpha", "1.5"], "report: --alpha must be in (0, 1)"),
        (["{runs}", "--config", "{missing}"], "config file not found"),
        (["{runs}"], "report: --out is required"),
        ([], "report: give the run directories"),
    ],
)
def test_bad_arguments_in_process(runs, tmp_path, monkeypatch, capsys, args, message):
    write_run(tmp_path / "noscores", "a", label="standard", seed=0)
    args = [a.format(runs=runs, noscores=tmp_path / "noscores", missing=tmp_path / "nope.yaml") for a in args]
    out = tmp_path / "out"
    extra = [] if message.endswith("--out is required") else ["--out", str(out)]
    one_line(*run_entry(monkeypatch, capsys, "report", *args, *extra, "-q")[::2], message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("paths", "conf", "message"),
    [
        (["{empty}"], {}, "report: no run directories (with run.json) in"),
        (["{noscores}"], {}, "none of the runs has scores"),
        (["{runs}"], {"alpha": 2}, "report: --alpha must be in (0, 1)"),
        (["{runs}"], {"formats": ["jpg"]}, "formats must be among pdf, png, svg"),
        (["{runs}"], {"test": "ttset"}, "'test' must be one of wilcoxon, ttest, got 'ttset'. Did you mean 'ttest'?"),
    ],
)
def test_bad_config_in_process(runs, tmp_path, paths, conf, message):
    from xairobust.config import build

    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "noscores", "a", label="standard", seed=0)
    paths = [p.format(runs=runs, empty=tmp_path / "empty", noscores=tmp_path / "noscores") for p in paths]
    with pytest.raises(XaiRobustError) as info:
        build_report(paths, tmp_path / "out", build(ReportConfig, conf, "report"), quiet=True)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()
