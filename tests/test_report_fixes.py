"""Three report fixes (h23report), each pinned by a test that failed before it:

* the warning of a report with nothing to compare says what is missing (a one-run report of a
  standard run warned "no 'standard' scores", while those were the only scores it had);
* a report's identity depends on what it reads (the runs' weights and the files' hashes), not on
  where the runs live: moving a root of runs no longer makes every report stale;
* the sanity section shows only the report's explainers (``--explainer`` / the zoo's list), not
  every score file a run holds; with no selection it shows all and says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from report_fake import fake_registry, write_run

from xairobust.report import ReportConfig, build_report
from xairobust.report.build import ReportStage

N = 10


def _scores(shift: float, names=("ig",)) -> dict:
    rng = np.random.default_rng(int(100 * shift))
    return {e: {"max_sens": shift + np.round(0.1 * rng.standard_normal(N), 6),
                "faith_corr": 0.3 + np.round(0.1 * rng.standard_normal(N), 6)} for e in names}


def _zoo(root: Path, names=("ig",), extra: dict | None = None) -> Path:
    """2 labels x 2 seeds scored with ``names``; ``extra``: run name -> more explainers' scores there."""
    for label, shift in (("standard", 1.0), ("pgd", 0.5)):
        for seed in (0, 1):
            more = (extra or {}).get(f"{label}_s{seed}", ())
            write_run(root, f"{label}_s{seed}", label=label, seed=seed,
                      scores=_scores(shift + 0.01 * seed, (*names, *more)))
    return root


# -- the warning of a report with nothing to compare ----------------------------------------------


def test_one_run_standard_report_says_there_is_no_other_method(tmp_path, capsys):
    run = write_run(tmp_path / "runs", "standard_s0", label="Standard", method="standard", seed=0, scores=_scores(1.0))
    build_report([run], tmp_path / "out", ReportConfig(figures=False), quiet=True, registry=fake_registry())
    err = capsys.readouterr().err
    assert "no 'Standard' scores" not in err and "no 'standard' scores" not in err  # they are the only scores there are
    assert "every run is 'Standard' (the baseline): there is no other method to compare it with" in err
    assert pd.read_csv(tmp_path / "out" / "stats.csv").empty


def test_missing_baseline_and_disjoint_settings_name_what_is_missing(tmp_path, capsys):
    from xairobust.report.compare import _no_comparison

    frame = pd.DataFrame({"setting": ["a", "a", "b"], "label": ["Standard", "Standard", "PGD"]})
    assert _no_comparison(frame, "Standard").startswith("no dataset/model setting holds both 'Standard' and another")
    assert _no_comparison(frame, "TRADES") == "no 'TRADES' scores to compare with (--baseline) in any setting"


# -- identity: what the report reads, not where it lives ------------------------------------------


def _conf(runs: Path, **kw) -> ReportConfig:
    return ReportConfig(figures=False, runs=[str(runs)], **kw)


def test_moving_the_runs_keeps_the_report_current_and_the_chain_verifiable(tmp_path):
    runs_a = _zoo(tmp_path / "a" / "runs")
    out = tmp_path / "report"
    stage = ReportStage()
    stage.run(out, _conf(runs_a), quiet=True)
    before = json.loads((out / "report.json").read_text())["provenance"]

    runs_b = tmp_path / "b" / "moved"
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    (tmp_path / "b" / "runs").rename(runs_b)
    moved = stage.resolve(out, _conf(runs_b))
    assert moved.hash == before["identity_hash"]  # before: every role named the old absolute run path
    assert stage.is_current(out, _conf(runs_b))
    # Still verifiable: every input is recorded with the path it is read from now and its sha256.
    assert set(moved.inputs) == set(before["inputs"])
    for role, entry in moved.inputs.items():
        assert str(runs_b) in entry["path"] and entry["sha256"] == before["inputs"][role]["sha256"]
    assert all(role.split(":", 1)[0] != str(runs_b) and "/" not in role.split(":", 1)[0] for role in moved.inputs)
    # ... and a changed input still makes the report stale.
    scores = runs_b / "pgd_s0" / "scores" / "ig.csv"
    scores.write_text(scores.read_text().replace("max_sens,", "max_sens,1", 1))
    assert stage.resolve(out, _conf(runs_b)).hash != before["identity_hash"]
    assert not stage.is_current(out, _conf(runs_b))


def test_labels_by_run_path_count_by_run_not_by_path(tmp_path):
    runs_a = _zoo(tmp_path / "a")
    runs_b = tmp_path / "b"
    shutil.copytree(runs_a, runs_b)
    stage = ReportStage()
    a = stage.resolve(tmp_path / "out", _conf(runs_a, labels={str(runs_a / "pgd_s0"): "PGD*"}))
    b = stage.resolve(tmp_path / "out", _conf(runs_b, labels={str(runs_b / "pgd_s0"): "PGD*"}))
    assert a.hash == b.hash
    other = stage.resolve(tmp_path / "out", _conf(runs_b, labels={str(runs_b / "pgd_s1"): "PGD*"}))
    assert other.hash != b.hash  # which run is relabelled still counts


def test_runs_with_the_same_weights_keep_apart_in_the_inputs(tmp_path):
    from xairobust.report.collect import run_inputs, run_keys

    runs = _zoo(tmp_path / "runs")
    copy = tmp_path / "runs" / "standard_copy"
    shutil.copytree(runs / "standard_s0", copy)
    meta = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**meta, "label": "copy"}))
    paths = sorted(p for p in runs.iterdir())
    keys = run_keys(paths)
    assert len(set(keys.values())) == len(paths)
    first = keys[copy]  # sorted first; the other run with the same weights is told apart by its order
    assert "#" not in first and keys[runs / "standard_s0"] == first + "#2"
    assert len(run_inputs(paths)) == 2 * len(paths)  # run.json + weights of each, none overwritten


# -- the sanity section shows the report's explainers ---------------------------------------------


def _sanity(folder: Path) -> tuple[pd.DataFrame, str]:
    return pd.read_csv(folder / "sanity.csv"), (folder / "sanity.md").read_text()


def test_sanity_section_shows_only_the_selected_explainers(tmp_path):
    # pgd_s0 also holds the scores of a control explainer another zoo asked for (random)
    runs = _zoo(tmp_path / "runs", names=("ig", "sobel"), extra={"pgd_s0": ("random",)})

    picked = tmp_path / "picked"
    build_report([runs], picked, ReportConfig(figures=False, explainer=["ig", "sobel"]), quiet=True,
                 registry=fake_registry())
    csv, md = _sanity(picked)
    assert sorted(set(csv["explainer"])) == ["ig", "sobel"]  # before: random's control rows too
    assert "random" not in md
    assert "Explainers: ig, sobel (the ones this report was asked for" in md

    every = tmp_path / "every"
    build_report([runs], every, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    csv, md = _sanity(every)
    assert sorted(set(csv["explainer"])) == ["ig", "random", "sobel"]
    assert "Explainers: ig, random, sobel (every explainer the runs have scores of: no explainer was selected)" in md


def test_a_zoo_report_asks_for_the_zoos_explainers(tmp_path):
    from batch_util import tiny_zoo

    from xairobust.batch.plan import build_plan
    from xairobust.batch.zoo import load_zoo

    stages = {"attack": "stub-attack", "explain": "stub-explain", "score": "stub-score"}  # the real report
    plan, _ = build_plan(load_zoo(tiny_zoo(tmp_path, stages=stages)))
    assert plan.reports()[0].config["explainer"] == ["grad", "gxi"]
    plan, _ = build_plan(load_zoo(tiny_zoo(tmp_path, name="own", stages=stages, report={"explainer": ["gxi"]})))
    assert plan.reports()[0].config["explainer"] == ["gxi"]  # the zoo's own report block wins


# -- identity: the requested config, not the one the pipeline resolved ---------------------------


def test_a_report_whose_baseline_resolves_to_another_spelling_is_current_after_it_is_written(tmp_path):
    """The default baseline 'standard' names the row 'Standard' (case-insensitive label match): the
    report.json identity must be the requested config's, else `is_current` never holds and the
    batch fails the report job ("finished but its outputs ... are not current"; seen on
    cifar10_cpu_runs, whose run.json labels are 'Standard', 'Adv. Training', ...)."""
    root = tmp_path / "runs"
    for label, shift in (("Standard", 1.0), ("PGD", 0.5)):
        for seed in (0, 1):
            write_run(root, f"{label}_s{seed}", label=label, seed=seed, scores=_scores(shift + 0.01 * seed))
    out = tmp_path / "report"
    conf = _conf(root)
    assert conf.baseline == "standard"
    stage = ReportStage()
    stage.run(out, conf, quiet=True)
    doc = json.loads((out / "report.json").read_text())
    assert doc["baseline"] == "Standard"  # the body still says which row was the baseline
    assert doc["provenance"]["identity"]["baseline"] == "standard"
    assert stage.is_current(out, conf)
