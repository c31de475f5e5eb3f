"""scripts/check_results.py recomputes a report's means and stars from its samples.csv (issue 21)."""

from __future__ import annotations

import importlib.util
import json
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


def test_a_metric_undefined_on_every_sample_re_checks(tmp_path):
    """A constant control map has no faithfulness value on any sample (NaN rows): the table shows
    '-', its test has no pairs, and the re-check must say so rather than fail on the empty column."""
    rng = np.random.default_rng(5)
    n = 12
    runs = [write_run(tmp_path / "runs", f"{label}{seed}", label=label, seed=seed,
                      scores={"eg": {"max_sens": rng.random(n) + shift, "sparse": np.full(n, np.nan)}})
            for seed in (0, 1) for label, shift in (("standard", 0.5), ("pgd", 0.0))]
    out = tmp_path / "results" / "nan"
    build_report(runs, out, ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
    (out / "README.md").write_text("```bash\nxairobust report runs --out results/nan\n```\n")
    assert pd.read_csv(out / "samples.csv").query("metric == 'sparse'")["value"].isna().all()
    check = load_script()
    assert check.check_folder(out) == []
    # The defined metric is still checked: a planted edit is found.
    samples = pd.read_csv(out / "samples.csv")
    samples.loc[samples.index[samples["metric"] == "max_sens"][0], "value"] += 1.0
    samples.to_csv(out / "samples.csv", index=False)
    assert check.check_folder(out) != []


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
    assert len(problems) == 2 and "does not record the command" in problems[0] and "(samples.csv)" in problems[1]
    assert check.main([str(folder)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_folder_that_says_why_it_cannot_be_re_checked_is_not_a_pass(folder, capsys):
    check = load_script()
    (folder / "samples.csv").unlink()
    (folder / "README.md").write_text("```bash\nxairobust report runs\n```\n\nNot re-checkable: the runs were not kept.\n")
    status, problems = check.folder_status(folder)
    assert status == "not re-checkable: the runs were not kept" and len(problems) == 1
    assert check.main([str(folder)]) == 3
    assert "not re-checkable: the runs were not kept" in capsys.readouterr().out


def test_the_not_re_checkable_line_hides_no_wrong_value(folder):
    check = load_script()
    (folder / "README.md").write_text("```bash\nxairobust report runs\n```\nNot re-checkable: no reason\n")
    assert check.folder_status(folder)[0] == "FAIL"  # everything re-checks: the line is not true
    table = pd.read_csv(folder / "table.csv")
    table.loc[0, "max_sens_mean"] += 0.5
    table.to_csv(folder / "table.csv", index=False)
    status, problems = check.folder_status(folder)
    assert status == "FAIL" and any("max_sens mean" in p for p in problems)


def _relabelled(digits_run, root, label):
    run = root / label
    shutil.copytree(digits_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["label"] = label
    (run / "run.json").write_text(json.dumps(meta))
    return run


def test_a_manipulation_section_re_checks_and_a_planted_value_fails(digits_run, tmp_path):
    from xairobust import config as cfg
    from xairobust.report.manipulation import report
    from xairobust.stages.manipulate import ManipulateConfig, manipulate

    for label, seed in (("standard", 0), ("pgd", 1)):
        run = _relabelled(digits_run, tmp_path / "runs", label)
        # the random attack's target map depends on the seed: the two copies of one model differ
        conf = cfg.build(ManipulateConfig, {"attack": "random", "explainer": "saliency", "eps": 0.1, "steps": 2, "n": 12,
                                            "device": "cpu", "seed": seed, "selection": "first"}, "test")
        manipulate(run, conf, quiet=True)
    out = tmp_path / "results" / "manip"
    report([tmp_path / "runs"], out, figures=False)
    (out / "README.md").write_text("```bash\nxairobust manipulation-report runs --out results/manip\n```\n")
    check = load_script()
    assert check.folder_status(out) == ("ok", [])
    samples = pd.read_csv(out / "manipulation_samples.csv")
    assert samples.groupby("run")["weights_sha256"].nunique().eq(1).all() and samples["run"].nunique() == 2
    assert samples["weights_sha256"].str.fullmatch("[0-9a-f]{64}").all()

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    rho = samples[samples["metric"] == "spearman"].pivot_table(index="index", columns="label", values="value")
    worst = (rho["pgd"] - rho["standard"]).idxmin()  # the most negative difference turns positive:
    first = samples.index[(samples["label"] == "pgd") & (samples["metric"] == "spearman") & (samples["index"] == worst)][0]
    samples.loc[first, "value"] = rho.loc[worst, "standard"] + 10.0  # the mean, the md cell and p all move
    samples.to_csv(edited / "manipulation_samples.csv", index=False)
    problems = check.check_folder(edited)
    assert any("manipulation.csv" in p and "spearman" in p for p in problems)
    assert any("manipulation_stats.csv" in p and "spearman" in p for p in problems)
    assert any("manipulation.md" in p and "spearman" in p for p in problems)
    assert check.folder_status(edited)[0] == "FAIL"

    starred = tmp_path / "starred"
    shutil.copytree(out, starred)
    md = (starred / "manipulation.md").read_text().splitlines()
    i = next(i for i, line in enumerate(md) if line.startswith("| pgd |"))
    cells = md[i].split(" | ")
    cells[2] = cells[2].rstrip("*") + ("" if cells[2].endswith("*") else "*")  # flip one star
    md[i] = " | ".join(cells)
    (starred / "manipulation.md").write_text("\n".join(md) + "\n")
    assert any("star" in p for p in check.check_folder(starred))


def test_a_visual_section_re_checks_and_a_planted_value_fails(digits_run, tmp_path):
    from xairobust.report import ReportConfig, build_report
    from xairobust.stages.visualize import FidConfig, VisualizeConfig, fid, visualize

    runs = []
    for label, steps in (("standard", 2), ("PGD", 6)):
        run = _relabelled(digits_run, tmp_path / "runs", label)
        for kind in ("inversion", "generation"):
            visualize(run, VisualizeConfig(kind=kind, preset="quick", params={"steps": steps}, n=3, device="cpu"),
                      quiet=True)
        fid(run, FidConfig(extractor=f"run:{digits_run}", device="cpu"), quiet=True)
        runs.append(run)
    out = tmp_path / "results" / "visual"
    build_report(runs, out, ReportConfig(figures=False), quiet=True)
    (out / "README.md").write_text("```bash\nxairobust report runs --out results/visual\n```\n")
    check = load_script()
    assert check.folder_status(out) == ("ok", [])
    samples = pd.read_csv(out / "visual_samples.csv")
    assert set(samples["metric"]) == {"class_fid", "feature_distance"} and samples["run"].nunique() == 2

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    first = samples.index[(samples["label"] == "PGD") & (samples["metric"] == "feature_distance")][0]
    samples.loc[first, "value"] += 3.0
    samples.to_csv(edited / "visual_samples.csv", index=False)
    problems = check.check_folder(edited)
    assert any("visual_table.csv" in p and "feature_distance" in p for p in problems)

    starred = tmp_path / "starred"
    shutil.copytree(out, starred)
    table = pd.read_csv(starred / "visual_table.csv")
    table["class_fid_significant"] = ~table["class_fid_significant"].astype(bool)
    table.to_csv(starred / "visual_table.csv", index=False)
    assert any("class_fid star" in p for p in check.check_folder(starred))


@pytest.fixture()
def mer_folder(tmp_path):
    """A real mer-report over fake MER runs (A2E, A2B2E, A2M2E x 2 seeds, tests/report_golden.py)."""
    from report_golden import mer_zoo

    from xairobust.report.mer import write_report

    runs = mer_zoo(tmp_path / "mruns")
    out = tmp_path / "results" / "mer"
    write_report([runs], out)
    (out / "README.md").write_text("```bash\nxairobust mer-report mruns --out results/mer\n```\n")
    return out


def test_mer_samples_hold_the_values_the_t_tests_read(mer_folder):
    """mer_samples.csv against the attack files themselves (numpy here, not the report's code)."""
    from xairobust.runs import file_sha256, load_tensors

    samples = pd.read_csv(mer_folder / "mer_samples.csv")
    assert len(samples) == 6 * 12 and samples.groupby("run").size().eq(12).all()
    for run, rows in samples.groupby("run"):
        t = {k: v.double().numpy() for k, v in load_tensors(Path(run) / "attacks" / "bim_0.001.safetensors").items()}
        before = np.abs(t["pred_clean"] - t["targets"]).mean(1)
        after = np.abs(t["pred_adv"] - t["targets"]).mean(1)
        np.testing.assert_array_equal(rows["index"], t["indices"])
        np.testing.assert_allclose(rows["mae_after"], after, rtol=1e-12)
        np.testing.assert_allclose(rows["mae_before"], before, rtol=1e-12)
        np.testing.assert_allclose(rows["delta_mae"], after - before, rtol=1e-12)
        assert set(rows["weights_sha256"]) == {file_sha256(Path(run) / "model.safetensors")}


def test_mer_t_tests_re_check_and_a_planted_value_fails(mer_folder, tmp_path):
    check = load_script()
    assert check.check_folder(mer_folder) == []
    tests = pd.read_csv(mer_folder / "ttests.csv")
    assert len(tests) == 2 and tests["significant"].any()  # something to flip
    assert check.main([str(mer_folder)]) == 0

    # a planted wrong per-excerpt value: the t-test it feeds no longer matches ttests.csv / .md
    planted = tmp_path / "planted"
    shutil.copytree(mer_folder, planted)
    samples = pd.read_csv(planted / "mer_samples.csv")
    samples.loc[(samples["label"] == "A2E") & (samples["seed"] == 1) & (samples["index"] == 3), "mae_after"] += 0.5
    samples.to_csv(planted / "mer_samples.csv", index=False)
    problems = check.check_mer(planted)
    assert any("ttests.csv: A2E vs A2M2E (after): t is" in p for p in problems)
    assert any("ttests.csv: A2E vs A2M2E (after): mean_a is" in p for p in problems)
    assert any("ttests.md: A2E vs A2M2E: t shows" in p for p in problems)
    assert not any("A2B2E vs A2M2E" in p and "ttests.csv" in p and ": t is" in p for p in problems)

    # an edited p value in ttests.csv, a star removed from ttests.md
    edited = tmp_path / "edited"
    shutil.copytree(mer_folder, edited)
    tests.loc[0, "p_bonferroni"] = 0.5
    tests.to_csv(edited / "ttests.csv", index=False)
    md = (edited / "ttests.md").read_text()
    (edited / "ttests.md").write_text(md.replace(" *\n", "\n", 1))
    problems = check.check_mer(edited)
    assert any("p_bonferroni 0.5" in p for p in problems)
    assert any("ttests.md" in p and "star False, recomputed" in p for p in problems)
    assert check.main([str(edited)]) == 1


def test_a_delta_mae_mer_report_re_checks(tmp_path):
    from report_golden import mer_zoo

    from xairobust.report.mer import write_report

    out = tmp_path / "results" / "mer_delta"
    write_report([mer_zoo(tmp_path / "mruns")], out, eps=0.01, ttest_on="delta")
    (out / "README.md").write_text("xairobust mer-report mruns --eps 0.01 --ttest-on delta\n")
    check = load_script()
    assert check.check_folder(out) == []
    samples = pd.read_csv(out / "mer_samples.csv")
    samples["delta_mae"] = samples["mae_after"]  # the wrong column tested
    samples.to_csv(out / "mer_samples.csv", index=False)
    assert any(": t is" in p for p in check.check_mer(out))


def test_mer_folder_without_its_per_excerpt_file_is_missing_it(mer_folder):
    check = load_script()
    (mer_folder / "mer_samples.csv").unlink()
    problems = check.check_folder(mer_folder)
    assert len(problems) == 1 and check.MISSING in problems[0] and "mer_samples.csv" in problems[0]


def test_mer_summary_json_is_sealed_and_a_hand_edit_fails_naming_it(mer_folder):
    """summary.json records its body's sha256 and the files written beside it (issue 21 item 3):
    an edited value in it is a FAIL of check_results and not current for the batch's mer-report
    stage (recomputed, not trusted); verify_chain refuses it in one line."""
    from xairobust.report.mer import MerReportConfig, MerReportStage
    from xairobust.stages.contract import BODY_KEY, StaleError, verify_chain

    check = load_script()
    path = mer_folder / "summary.json"
    doc = json.loads(path.read_text())
    assert BODY_KEY in doc["provenance"]
    assert {"table1.csv", "table1.md", "table1.tex", "ttests.csv", "ttests.md", "mer_samples.csv"} <= set(doc["outputs"])
    assert any(name.startswith("figures/") for name in doc["outputs"])
    conf = MerReportConfig(runs=[str(mer_folder.parents[1] / "mruns")])
    assert MerReportStage().is_current(mer_folder, conf)
    verify_chain(path, mer_folder, "xairobust mer-report RUNS --out OUT")

    doc["table1"][0] = {k: (v + 0.5 if isinstance(v, float) else v) for k, v in doc["table1"][0].items()}
    path.write_text(json.dumps(doc, indent=2))
    assert check.check_folder(mer_folder) == [
        f"{path.as_posix()} was changed after it was written (its content no longer has the sha256 recorded in it)"]
    assert check.main([str(mer_folder)]) == 1
    assert not MerReportStage().is_current(mer_folder, conf)
    with pytest.raises(StaleError, match=r"summary.json was changed after it was written .*; recompute it with `xairobust mer-report"):
        verify_chain(path, mer_folder, "xairobust mer-report RUNS --out OUT")


def test_a_mer_table_edited_beside_its_summary_is_not_current(mer_folder):
    from xairobust.report.mer import MerReportConfig, MerReportStage
    from xairobust.stages.contract import StaleError, verify_chain

    conf = MerReportConfig(runs=[str(mer_folder.parents[1] / "mruns")])
    (mer_folder / "table1.tex").write_text("edited by hand\n")
    assert not MerReportStage().is_current(mer_folder, conf)
    with pytest.raises(StaleError, match="table1.tex was changed after it was written"):
        verify_chain(mer_folder / "summary.json", mer_folder, "xairobust mer-report RUNS --out OUT")
