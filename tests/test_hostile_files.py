"""Issue 21 item 3 beyond the one-line table (tests/test_bad_input_newer.py): what the checks do
when the input is accepted -- a stage recomputes a hand-edited output, degenerate attributions
scored with --allow-degenerate are counted, a report folder is reused, `run:` entries carry a
label into the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from report_fake import write_run

from xairobust.errors import ConfigError, RunError
from xairobust.runs import file_sha256


@pytest.fixture(scope="module")
def explained(digits_run, tmp_path_factory) -> Path:
    from xairobust.stages.explain import ExplainConfig, explain

    run = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(digits_run, run)
    explain(run, ExplainConfig(n=6, selection="first", params={"n_steps": 4}), quiet=True)
    return run


def test_a_hand_edited_score_csv_is_not_current_and_is_recomputed(explained, tmp_path):
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(explained, run)
    conf = ScoreConfig(metrics="sparseness")
    csv = score(run, conf, quiet=True)
    original = csv.read_bytes()
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["outputs"] == {"ig.csv": file_sha256(csv)}
    lines = original.decode().splitlines(keepends=True)
    csv.write_text("".join([lines[0], lines[1].rsplit(",", 1)[0] + ",1.0\n", *lines[2:]]))
    score(run, conf, quiet=True)  # the edit makes the output stale: recomputed, not trusted
    assert csv.read_bytes() == original


def test_allow_degenerate_scores_all_zero_maps_and_counts_every_infinite_value(explained, tmp_path):
    from safetensors.torch import load_file, save_file

    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(explained, run)
    path = run / "attributions" / "ig.safetensors"
    t = load_file(path)
    t["attributions"][:4].zero_()  # four of six maps all zero
    save_file(t, path)
    with pytest.raises(RunError, match="4 of 6 samples have degenerate attributions"):
        score(run, ScoreConfig(metrics="max_sensitivity,sparseness"), quiet=True)
    csv = score(run, ScoreConfig(metrics="max_sensitivity,sparseness", allow_degenerate=True), quiet=True)
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["degenerate_attributions"] == {"all_zero": 4, "constant": 0, "indices": [int(i) for i in t["indices"][:4]]}
    values = pd.read_csv(csv)
    for metric in ("max_sensitivity", "sparseness"):
        v = values.loc[values["metric"] == metric, "value"].to_numpy()
        counted = doc["metrics"][metric]["diagnostics"]["nonfinite_scores"]
        assert counted == {"nan": int(np.isnan(v).sum()), "inf": int(np.isinf(v).sum())}
    # an all-zero map: max|a| = 0 divides every perturbed map's distance by zero
    ms = values.loc[values["metric"] == "max_sensitivity", "value"].to_numpy()
    assert not np.isfinite(ms[:4]).any() and np.isfinite(ms[4:]).all()
    assert doc["metrics"]["max_sensitivity"]["diagnostics"]["nonfinite_scores"]["inf"] + \
        doc["metrics"]["max_sensitivity"]["diagnostics"]["nonfinite_scores"]["nan"] == 4


def test_the_constant_control_is_scored_and_counted_not_refused(explained, tmp_path):
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(explained, run)
    explain(run, ExplainConfig(explainer="constant", n=3), quiet=True)
    csv = score(run, ScoreConfig(explainer="constant", metrics="sparseness"), quiet=True)
    doc = json.loads(csv.with_suffix(".json").read_text())
    assert doc["degenerate_attributions"]["constant"] == 3


def test_stamp_outputs_names_files_beside_the_document_only(tmp_path):
    from xairobust.stages.contract import changed_output, stamp_outputs

    (tmp_path / "a.csv").write_text("x\n")
    doc = tmp_path / "a.json"
    rec = stamp_outputs(doc, tmp_path / "a.csv")
    assert rec == {"a.csv": file_sha256(tmp_path / "a.csv")}
    assert changed_output({"outputs": rec}, doc) is None
    (tmp_path / "a.csv").write_text("y\n")
    assert "a.csv was changed after it was written" in changed_output({"outputs": rec}, doc)
    assert "malformed" in changed_output({"outputs": {"/etc/passwd": "0"}}, doc)
    with pytest.raises(ValueError):
        stamp_outputs(doc, tmp_path.parent / "elsewhere.csv")


def test_the_report_folder_it_wrote_is_its_own_and_a_users_is_not(tmp_path):
    from report_fake import fake_registry

    from xairobust.report import ReportConfig, build_report
    from xairobust.report.build import REPORT_JSON
    from xairobust.validate import check_not_foreign, foreign_entries

    rng = np.random.default_rng(0)
    for label in ("standard", "pgd"):
        write_run(tmp_path / "runs", label, label=label, seed=0, scores={"ig": {"sparse": rng.random(8)}})
    out = tmp_path / "rep"
    build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert foreign_entries(out, markers=(REPORT_JSON,)) == []
    (out / REPORT_JSON).unlink()  # a report killed before its last file: still known by its marker
    assert foreign_entries(out, markers=(REPORT_JSON,)) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "table.csv").write_text("my own table\n")
    with pytest.raises(ConfigError, match=r"holds files xairobust did not write \(table.csv\)"):
        check_not_foreign(mine, "report: --out", force=False, markers=(REPORT_JSON,))
    check_not_foreign(mine, "report: --out", force=True, markers=(REPORT_JSON,))


def _fake_runs(root: Path) -> list[Path]:
    """Two imported-looking runs that share run.json's label and seed."""
    rng = np.random.default_rng(1)
    return [write_run(root, name, label="imported", seed=0, method="imported", scores={"ig": {"sparse": rng.random(8)}})
            for name in ("a", "b")]


def test_report_labels_replace_run_json_labels(tmp_path):
    from xairobust.report.collect import collect_runs

    a, b = _fake_runs(tmp_path / "runs")
    with pytest.raises(ConfigError, match="both are 'imported' with seed 0"):
        collect_runs([tmp_path / "runs"])
    runs = collect_runs([tmp_path / "runs"], {str(a): "Robust A"})
    assert sorted(r.label for r in runs) == ["Robust A", "imported"]


def test_zoo_run_entries_take_a_label_that_reaches_the_report_job(tmp_path):
    from xairobust.batch.plan import build_plan
    from xairobust.batch.zoo import load_zoo
    from xairobust.report.collect import collect_runs

    a, b = _fake_runs(tmp_path / "runs")
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text(
        "name: z\ndatasets: [digits]\nmodels: [digits_cnn]\nseeds: 1\n"
        f"methods:\n  - run: {a}\n    label: Robust A\n  - run: {b}\n    label: Robust B\n"
    )
    plan, _ = build_plan(load_zoo(zoo_file), skip_missing_stages=True)
    (report,) = plan.reports()
    labels = report.config["labels"]
    assert labels == {str(a.resolve()): "Robust A", str(b.resolve()): "Robust B"}
    assert sorted(r.label for r in collect_runs([a, b], labels)) == ["Robust A", "Robust B"]


def test_weights_loaded_anywhere_are_checked_for_nan(digits_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from xairobust.runs import load_run

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    sd = load_file(run / "model.safetensors")
    key = next(k for k in sd if k.startswith("net.") and k.endswith("weight"))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, run / "model.safetensors")
    meta = json.loads((run / "run.json").read_text())
    meta["weights_sha256"] = file_sha256(run / "model.safetensors")
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match=rf"tensor '{key}' \(1 of {sd[key].numel()} values are NaN/inf\)"):
        load_run(run)


def test_integer_buffers_still_import_into_integer_buffers():
    """num_batches_tracked (int64 in every BatchNorm) is not a float cast: accepted."""
    from xairobust.importers.base import Converted
    from xairobust.stages.import_ import check_import_values

    target = {"bn.num_batches_tracked": torch.tensor(0), "bn.weight": torch.ones(3)}
    check_import_values(Converted(state={"bn.num_batches_tracked": torch.tensor(7), "bn.weight": torch.ones(3)}),
                        target, Path("x.pt"))
    with pytest.raises(ConfigError, match="'bn.weight' is int64 but the model's 'bn.weight' is float32"):
        check_import_values(Converted(state={"bn.num_batches_tracked": torch.tensor(7), "bn.weight": torch.ones(3).long()}),
                            target, Path("x.pt"))
