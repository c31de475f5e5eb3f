"""``xairobust score`` prints a summary and writes scores/<explainer>.tex and .md (issue 21, item 2).

The numbers in both files and on the terminal are checked against the CSV's per-metric mean,
sample standard deviation (ddof=1) and count, computed here with numpy from the CSV text; the
noise floor against the mean of the per-sample floors in the score JSON. Several ``--model``
with ``--out`` write the same comparison as ``xairobust report`` (byte for byte).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _entry(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    from xairobust.cli import run as entry_point

    monkeypatch.setattr(sys, "argv", ["xairobust", *map(str, argv)])
    with pytest.raises(SystemExit) as exc:
        entry_point()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _csv_stats(path: Path) -> dict[str, tuple[float, float, int]]:
    """metric -> (mean, sd ddof=1, n) over the finite values, from the CSV text alone."""
    values: dict[str, list[float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            values.setdefault(row["metric"], []).append(float(row["value"]))
    out = {}
    for metric, vs in values.items():
        a = np.array(vs)
        a = a[np.isfinite(a)]
        out[metric] = (float(np.mean(a)), float(np.std(a, ddof=1)) if a.size > 1 else math.nan, int(a.size))
    return out


def _decimals(mean: float) -> int:
    """Three significant digits of |mean| (the report's rule, written out independently)."""
    return max(0, min(8, 2 - math.floor(math.log10(abs(mean))))) if mean else 3


def _check_cell(text: str, mean: float, sd: float, floor: float | None, pm: str) -> None:
    m = re.fullmatch(rf"(-?\d+(?:\.\d+)?)(?:{re.escape(pm)}(\d+(?:\.\d+)?))?(?: \[floor (-?\d+(?:\.\d+)?)\])?", text.strip())
    assert m, text
    shown_mean, shown_sd, shown_floor = m.groups()
    d = _decimals(mean)
    assert len(shown_mean.partition(".")[2]) == d, (text, mean)
    assert shown_mean == f"{mean:.{d}f}" and float(shown_mean) == pytest.approx(mean, abs=0.5 * 10 ** -d)
    assert shown_sd == f"{sd:.{d}f}", (text, sd)
    if floor is None:
        assert shown_floor is None
    else:
        assert shown_floor == f"{floor:.{d}f}", (text, floor)


@pytest.fixture()
def scored(digits_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    code, _, err = _entry(monkeypatch, capsys, "explain", "--model", run, "--explainer", "gradient_shap", "--n", "6",
                          "--n-samples", "4", "--selection", "first", "--quiet")
    assert code == 0, err
    code, out, err = _entry(monkeypatch, capsys, "score", "--model", run, "--explainer", "gradient_shap", "--metrics",
                            "max_sensitivity,sparseness,complexity", "--set", "max_sensitivity.nr_samples=4", "--quiet")
    assert code == 0 and err == "", err
    return run, out


def test_score_tables_hold_the_csv_mean_sd_n_and_the_noise_floor(scored):
    run, out = scored
    stats = _csv_stats(run / "scores" / "gradient_shap.csv")
    doc = json.loads((run / "scores" / "gradient_shap.json").read_text())
    floors = {m: float(np.mean(e["diagnostics"]["noise_floor"]["per_sample"]))
              for m, e in doc["metrics"].items() if (e.get("diagnostics") or {}).get("noise_floor")}
    assert set(floors) == {"max_sensitivity"}  # a stochastic explainer's sensitivity metric
    order = ["max_sensitivity", "sparseness", "complexity"]  # criterion order: sensitivity, complexity
    labels = {"max_sensitivity": "Max", "sparseness": "Spr", "complexity": "Comp"}
    arrows = {"max_sensitivity": "↓", "sparseness": "↑", "complexity": "↓"}

    md = (run / "scores" / "gradient_shap.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| Run"))
    assert header == "| Run | n | " + " | ".join(f"{labels[m]} {arrows[m]}" for m in order) + " |"
    (row,) = [ln for ln in md.splitlines() if ln.startswith("| standard")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(max(n for _, _, n in stats.values()))
    for metric, cell in zip(order, cells[2:], strict=True):
        mean, sd, _ = stats[metric]
        _check_cell(cell, mean, sd, floors.get(metric), " ± ")

    tex = (run / "scores" / "gradient_shap.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\end{table}" in tex and "xairobust score" in tex
    (trow,) = [ln for ln in tex.splitlines() if ln.startswith("standard &")]
    tcells = [c.strip() for c in trow.removesuffix(r"\\").split("&")]
    for metric, cell in zip(order, tcells[2:], strict=True):
        mean, sd, _ = stats[metric]
        _check_cell(cell, mean, sd, floors.get(metric), r" $\pm$ ")

    # the terminal: metric, direction, mean ± sd, n, noise floor
    lines = out.splitlines()
    assert lines[1].split() == ["metric", "better", "mean", "±", "sd", "n", "noise", "floor"]
    for metric, line in zip(order, lines[2:5], strict=True):
        mean, sd, n = stats[metric]
        d = _decimals(mean)
        parts = line.split()
        assert parts[:6] == [metric, {"↓": "lower", "↑": "higher"}[arrows[metric]], f"{mean:.{d}f}", "±", f"{sd:.{d}f}", str(n)]
        assert parts[6] == (f"{floors[metric]:.{d}f}" if metric in floors else "-")


def test_tables_are_rewritten_from_the_csv_on_every_score_and_are_atomic(scored, monkeypatch, capsys):
    run, _ = scored
    md = run / "scores" / "gradient_shap.md"
    md.write_text("hand-edited")
    code, _, err = _entry(monkeypatch, capsys, "score", "--run", run, "--explainer", "gradient_shap", "--metrics",
                          "max_sensitivity,sparseness,complexity", "--set", "max_sensitivity.nr_samples=4", "--quiet")
    assert code == 0, err
    assert md.read_text().startswith("### explainer gradient\\_shap, run standard")
    assert not [p for p in (run / "scores").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_dropped_samples_are_left_out_of_mean_sd_and_n(digits_run, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file, save_file

    from xairobust.runs import file_sha256

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    code, _, err = _entry(monkeypatch, capsys, "explain", "--run", run, "--n", "5", "--n-steps", "2", "--selection",
                          "first", "--quiet")
    assert code == 0, err
    path = run / "attributions" / "ig.safetensors"
    t = load_file(path)
    t["attributions"][2].view(-1)[0] = float("nan")  # one sample cannot be scored
    before = file_sha256(path)
    save_file(t, path)
    # The edit stands for an explainer that produced a NaN: record the new bytes as explain's own
    # and re-seal the document (its body hash), so the score stage's provenance checks (which refuse
    # hand-edited files and documents) let it through.
    from xairobust.stages.contract import write_sealed

    doc = path.with_suffix(".json")
    write_sealed(doc, json.loads(doc.read_text().replace(before, file_sha256(path))))
    code, out, err = _entry(monkeypatch, capsys, "score", "--run", run, "--metrics", "sparseness,complexity",
                            "--allow-nonfinite", "--quiet")
    assert code == 0, err
    stats = _csv_stats(run / "scores" / "ig.csv")
    assert {n for _, _, n in stats.values()} == {4}
    md = (run / "scores" / "ig.md").read_text()
    (row,) = [ln for ln in md.splitlines() if ln.startswith("| standard")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "4"
    for metric, cell in zip(["sparseness", "complexity"], cells[2:], strict=True):
        _check_cell(cell, stats[metric][0], stats[metric][1], None, " ± ")


def test_several_models_with_out_write_the_report_comparison(digits_run, tmp_path, monkeypatch, capsys):
    from xairobust.runs import load_run

    run = tmp_path / "std"
    shutil.copytree(digits_run, run)
    model, _ = load_run(digits_run)
    state = model.state_dict()
    state["net.head.3.weight"] = state["net.head.3.weight"] * 1.5
    ckpt = tmp_path / "other.pt"
    torch.save(state, ckpt)
    explain = ["explain", "--n", "6", "--n-steps", "2", "--selection", "first", "--quiet"]
    for option in (["--model", run], ["--model", ckpt, "--arch", "digits_cnn", "--dataset", "digits"]):
        code, _, err = _entry(monkeypatch, capsys, *explain, *option)
        assert code == 0, err
    out = tmp_path / "cmp"
    code, stdout, err = _entry(monkeypatch, capsys, "score", "--model", run, "--model", ckpt, "--metrics",
                               "sparseness,complexity", "--out", out, "--no-figures", "--quiet")
    assert code == 0, err
    assert "deprecat" not in err.lower()
    assert stdout.count("scores written to") == 2 and f"written to {out}" in stdout
    imported = tmp_path / "other.pt.run"
    assert (imported / "scores" / "ig.tex").is_file() and (run / "scores" / "ig.md").is_file()
    # the same pipeline as `xairobust report`: identical tables and statistics
    ref = tmp_path / "ref"
    code, _, err = _entry(monkeypatch, capsys, "report", run, imported, "--out", ref, "--explainer", "ig",
                          "--no-figures", "--quiet")
    assert code == 0, err
    for name in ("table.csv", "table.md", "table.tex", "table_body.tex", "stats.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    stats = (out / "stats.csv").read_text().splitlines()
    assert len(stats) == 3 and all(",standard," in line for line in stats[1:])  # other vs standard, 2 metrics


def test_out_options_need_out(digits_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    code, out, err = _entry(monkeypatch, capsys, "score", "--model", run, "--baseline", "standard", "--quiet")
    assert code == 2 and err.strip() == ("error: score: --baseline and --figures apply to the comparison of several"
                                         " models; give --out DIR")
