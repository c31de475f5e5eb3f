"""Report tables: aggregation against a numpy hand computation, direction-aware marks, rendering."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, provenance, write_run, zoo

from xairobust.registry import Registry
from xairobust.report import ReportConfig, build_report
from xairobust.report.meta import metric_meta
from xairobust.report.tables import decimals_for, fmt, rank_marks


@pytest.mark.parametrize(
    ("values", "direction", "expected"),
    [
        ([0.3, 0.1, 0.2], "lower", [0, 1, 2]),
        ([0.3, 0.1, 0.2], "higher", [1, 0, 2]),
        ([-0.02, 0.22, 0.06, 0.15], "higher", [0, 1, 0, 2]),  # the paper's Corr column
        ([52.95, 10.32, 20.21, 19.89], "lower", [0, 1, 0, 2]),  # the paper's LL column
        ([0.1, 0.1, 0.3], "lower", [1, 1, 2]),  # ties share the mark
        ([0.1, 0.1, 0.3], "higher", [2, 2, 1]),
        ([0.5, 0.5], "higher", [1, 1]),  # all equal: no second
        ([0.2, math.nan, 0.1, 0.3], "lower", [2, 0, 1, 0]),  # a missing value is never marked
        ([0.2], "lower", [0]),  # nothing to compare with
        ([0.2, 0.1], "lower", [0, 1]),  # two rows: no second (it would mark the worse one)
        ([0.2, 0.1], None, [0, 0]),  # unknown direction: no marks
    ],
)
def test_rank_marks(values, direction, expected):
    assert rank_marks(values, direction) == expected


def test_decimals_and_format():
    assert decimals_for([0.0233, 0.0002], 3) == 4  # prints 0.0233 and 0.0002 like the paper
    assert decimals_for([52.95, 10.32], 3) == 1
    assert decimals_for([0.97, 0.79], 3) == 3
    assert decimals_for([1234.5], 3) == 0
    assert decimals_for([0.0, math.nan], 3) == 3
    assert fmt(-0.00001, 3) == "0.000"
    assert fmt(-0.25, 2) == "-0.25"


def test_mean_std_n_match_numpy(tmp_path):
    truth = zoo(tmp_path / "runs", n=15, seeds=(0, 1, 2))
    # a fourth, single-seed method: n = 1 and no std
    single = {"max_sens": np.linspace(0.3, 0.5, 15), "faith_corr": np.linspace(-1, 1, 15), "sparse": np.full(15, 0.4)}
    single["max_sens"][3] = np.nan  # a dropped sample is skipped in its run's mean
    write_run(tmp_path / "runs", "jac_s0", label="jacobian", seed=0, scores={"ig": single}, clean=0.8)
    build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(figures=False), quiet=True,
                 registry=fake_registry())
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("method")
    for label in ("standard", "nsloss", "pgd"):
        assert table.loc[label, "n"] == 3
        for metric in ("max_sens", "faith_corr", "sparse"):
            run_means = np.array([truth[(label, s)][metric].mean() for s in (0, 1, 2)])
            assert table.loc[label, f"{metric}_mean"] == pytest.approx(run_means.mean(), rel=1e-12)
            assert table.loc[label, f"{metric}_std"] == pytest.approx(run_means.std(ddof=1), rel=1e-12)
            assert table.loc[label, f"{metric}_n"] == 3
    assert table.loc["jacobian", "n"] == 1
    assert table.loc["jacobian", "max_sens_mean"] == pytest.approx(np.nanmean(single["max_sens"]), rel=1e-12)
    assert np.isnan(table.loc["jacobian", "max_sens_std"])
    assert table.loc["jacobian", "clean_accuracy_mean"] == pytest.approx(0.8)
    clean = [0.95 - 0.05 * len("nsloss") / 6 + 0.01 * s for s in (0, 1, 2)]
    assert table.loc["nsloss", "clean_accuracy_mean"] == pytest.approx(np.mean(clean))
    assert table.loc["nsloss", "clean_accuracy_std"] == pytest.approx(np.std(clean, ddof=1))
    assert table.loc["nsloss", "robust_accuracy_mean"] == pytest.approx(0.1)
    # the baseline comes first, the rest alphabetically
    assert list(table.index) == ["standard", "jacobian", "nsloss", "pgd"]
    # marks, direction-aware: nsloss lowest max_sens, pgd second; pgd highest faith_corr
    assert table.loc["nsloss", "max_sens_mark"] == "best"
    assert table.loc["jacobian", "max_sens_mark"] == "second"  # ~0.40, between nsloss ~0.2 and pgd ~0.5
    assert table.loc["pgd", "faith_corr_mark"] == "best"
    assert table.loc["nsloss", "faith_corr_mark"] == "second"
    assert table.loc["nsloss", "sparse_mark"] == "best"


def test_latex_and_markdown_marks(tmp_path):
    zoo(tmp_path / "runs", n=12, seeds=(0, 1))
    build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(figures=False, digits=2), quiet=True,
                 registry=fake_registry())
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("method")
    tex = (tmp_path / "out" / "table.tex").read_text()
    md = (tmp_path / "out" / "table.md").read_text()
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if line.count(" & ") > 4}

    def shown(label, metric):
        d = decimals_for(table[f"{metric}_mean"].tolist(), 2)
        return f"{fmt(table.loc[label, f'{metric}_mean'], d)} $\\pm$ {fmt(table.loc[label, f'{metric}_std'], d)}"

    # lower is better for max_sens: nsloss bold, pgd underlined, standard plain
    assert rf"\textbf{{{shown('nsloss', 'max_sens')}}}$^{{*}}$" in rows["nsloss"]
    assert rf"\underline{{{shown('pgd', 'max_sens')}}}$^{{*}}$" in rows["pgd"]
    assert f" & {shown('standard', 'max_sens')} & " in rows["standard"]
    # higher is better for faith_corr: pgd bold, nsloss underlined
    assert rf"\textbf{{{shown('pgd', 'faith_corr')}}}" in rows["pgd"]
    assert rf"\underline{{{shown('nsloss', 'faith_corr')}}}" in rows["nsloss"]
    assert r"Max $\downarrow$" in tex and r"Corr $\uparrow$" in tex
    assert r"\multicolumn{1}{c}{Sensitivity}" in tex and r"\multicolumn{2}{c}{Accuracy}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex
    md_rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    pm = " $\\pm$ "
    best, second = shown("nsloss", "max_sens").replace(pm, " ± "), shown("pgd", "max_sens").replace(pm, " ± ")
    assert "**" + best + "**\\*" in md_rows["nsloss"]
    assert "<u>" + second + "</u>\\*" in md_rows["pgd"]
    assert "Max ↓" in md and "Corr ↑" in md


def test_unregistered_metric_falls_back(tmp_path):
    vals = {"mystery": np.array([1.0, 2.0, 3.0])}
    write_run(tmp_path / "runs", "a", label="standard", seed=0, scores={"ig": vals})
    write_run(tmp_path / "runs", "b", label="pgd", seed=0, scores={"ig": {"mystery": np.array([0.0, 1.0, 1.0])}})
    assert metric_meta("mystery", Registry("metric")).direction is None
    build_report([tmp_path / "runs"], tmp_path / "out", ReportConfig(figures=False), quiet=True,
                 registry=Registry("metric"))
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert r"\multicolumn{1}{c}{Other}" in tex
    assert r"Method & $n$ & mystery & Clean $\uparrow$ \\" in tex  # no arrow for the unknown direction
    assert "standard & 1 & 2.00 & " in tex and "pgd & 1 & 0.67 & " in tex  # and no marks
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("method")
    assert table["mystery_mark"].isna().all()
    assert table.loc["standard", "clean_accuracy_mark"] == "best" or table.loc["pgd", "clean_accuracy_mark"] == "best"


def test_metadata_from_class_attributes():
    reg: Registry = Registry("metric")

    class Lipschitz:
        category = "sensitivity"
        direction = "lower"

    reg.register("lle", label="LL")(Lipschitz)
    meta = metric_meta("lle", reg)
    assert (meta.label, meta.category, meta.direction, meta.arrow) == ("LL", "sensitivity", "lower", "↓")


def test_combined_and_separate_tables(tmp_path):
    runs = tmp_path / "runs"
    for label, seed, shift in (("standard", 0, 1.0), ("pgd", 0, 0.5)):
        scores = {e: {"max_sens": np.full(4, shift + k), "sparse": np.full(4, 0.5 + k)} for k, e in enumerate(("ig", "gradient_shap"))}
        write_run(runs, f"{label}", label=label, seed=seed, scores=scores)
    build_report([runs], tmp_path / "sep", ReportConfig(figures=False), quiet=True, registry=fake_registry())
    build_report([runs], tmp_path / "comb", ReportConfig(figures=False, combined=True, explainer=["ig", "gradient_shap"]),
                 quiet=True, registry=fake_registry())
    sep = (tmp_path / "sep" / "table.tex").read_text()
    comb = (tmp_path / "comb" / "table.tex").read_text()
    assert sep.count(r"\begin{table}") == 2 and comb.count(r"\begin{table}") == 1
    assert r"\multicolumn{5}{l}{\textit{gradient\_shap}}" in comb and r"\multicolumn{5}{l}{\textit{ig}}" in comb
    # marks are computed within each explainer's block: per block pgd's max_sens, and both rows
    # for sparse and clean accuracy (equal values share the best mark)
    body = comb.split("Method &")[1]
    assert body.count(r"\textbf{") == 2 * 5 and body.count(r"\underline{") == 0
    csv = pd.read_csv(tmp_path / "comb" / "table.csv")
    assert list(csv["explainer"]) == ["ig", "ig", "gradient_shap", "gradient_shap"]


def test_regression_error_columns(tmp_path):
    import json

    runs = tmp_path / "runs"
    for label, seed, mae, deltas in (("standard", 0, 0.30, (0.20, 0.9)), ("standard", 1, 0.32, (0.22, 0.9)),
                                      ("pgd", 0, 0.35, (0.05, 0.4))):
        run = write_run(runs, f"{label}{seed}", label=label, seed=seed, clean=None,
                        scores={"ig": {"sparse": np.linspace(0, 1, 4) + seed}})
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "test": {"loss": 0.1, "mae": mae, "mean_pearson": 0.5}}))
        entries = [  # the headline (bim, linf, 0.01) and another budget that must not be used
            {"attack": "bim", "norm": "linf", "eps": 0.01, "robust_accuracy": None, "delta_mae": deltas[0]},
            {"attack": "bim", "norm": "linf", "eps": 0.1, "robust_accuracy": None, "delta_mae": deltas[1]},
        ]
        (run / "robustness.json").write_text(json.dumps({
            "clean_accuracy": None, "robust_accuracy": None, "headline": "bim", "headline_norm": "linf",
            "headline_eps": 0.01, "task": "regression", "results": entries,
            "provenance": provenance(run, "attack", {"weights": run / "model.safetensors"})}))
    build_report([runs], tmp_path / "out", ReportConfig(figures=False), quiet=True, registry=fake_registry())
    table = pd.read_csv(tmp_path / "out" / "table.csv").set_index("method")
    assert "clean_accuracy_mean" not in table.columns and "robust_accuracy_mean" not in table.columns
    assert table.loc["standard", "clean_mae_mean"] == pytest.approx(0.31)
    assert table.loc["standard", "clean_mae_std"] == pytest.approx(np.std([0.30, 0.32], ddof=1))
    assert table.loc["standard", "delta_mae_mean"] == pytest.approx(0.21)
    assert table.loc["pgd", "delta_mae_mark"] == "best" and table.loc["standard", "clean_mae_mark"] == "best"
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert r"\multicolumn{2}{c}{Error}" in tex and r"$\Delta$MAE $\downarrow$" in tex
