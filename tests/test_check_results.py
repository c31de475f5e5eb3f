"""scripts/check_results.py recomputes a report's means and stars from its samples.csv (issue 21)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run

from xairobust.report import ReportConfig, build_report

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_results.py"


def load_script():
    spec = importlib.util.spec_from_file_location("check_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def folder(tmp_path):
    """A real report over 2 labels x 2 seeds (one clear effect, one null), with its README."""
    rng = np.random.default_rng(3)
    n = 25
    runs = []
    for seed in (0, 1):
        base = rng.random(n)
        runs.append(write_run(tmp_path / "runs", f"std{seed}", label="standard", seed=seed,
                              scores={"eg": {"max_sens": base + 0.5, "sparse": rng.random(n)}}))
        runs.append(write_run(tmp_path / "runs", f"pgd{seed}", label="pgd", seed=seed,
                              scores={"eg": {"max_sens": base + 0.1 * rng.random(n), "sparse": rng.random(n)}}))
    out = tmp_path / "results" / "study"
    build_report(runs, out, ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
    (out / "README.md").write_text("```bash\nxairobust report runs --out results/study\n```\n")
    return out


def test_a_report_re_checks_and_its_samples_name_the_weights(folder):
    check = load_script()
    assert check.check_folder(folder) == []
    samples = pd.read_csv(folder / "samples.csv")
    assert samples["weights_sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert samples.groupby("run")["weights_sha256"].nunique().eq(1).all() and samples["run"].nunique() == 4
    stats = pd.read_csv(folder / "stats.csv")
    assert stats.set_index("metric").loc["max_sens", "significant"]  # the planted effect is starred
    assert check.main([str(folder)]) == 0


def test_an_edited_value_mean_or_star_is_found(folder, tmp_path):
    check = load_script()
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    samples = pd.read_csv(edited / "samples.csv")
    first = samples.index[(samples["label"] == "pgd") & (samples["metric"] == "max_sens")][0]
    samples.loc[first, "value"] += 10.0  # one image's difference changes sign: mean and p both move
    samples.to_csv(edited / "samples.csv", index=False)
    problems = check.check_folder(edited)
    assert any("table.csv" in p and "mean" in p for p in problems)
    assert any("stats.csv" in p and " p " in p for p in problems)

    starred = tmp_path / "starred"
    shutil.copytree(folder, starred)
    table = pd.read_csv(starred / "table.csv")
    table["sparse_significant"] = True  # a star the tests do not give
    table.to_csv(starred / "table.csv", index=False)
    assert any("sparse star" in p for p in check.check_folder(starred))


def test_missing_per_sample_file_or_command_fails(folder, capsys):
    check = load_script()
    (folder / "samples.csv").unlink()
    (folder / "README.md").write_text("numbers\n")
    problems = check.check_folder(folder)
    assert len(problems) == 2 and "does not record the command" in problems[0] and "no samples.csv" in problems[1]
    assert check.main([str(folder)]) == 1
    assert "FAIL" in capsys.readouterr().out
