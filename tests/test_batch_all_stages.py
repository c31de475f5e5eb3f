"""Every registered pipeline stage joins a zoo by its key and runs through the batch runner.

A tiny digits zoo with train, explain, score, manipulate and visualize: the report must carry
the score table, the manipulation table and both stages' figures, every artefact must verify
against its provenance chain, and a second run must find every job already done.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xairobust.batch.runner import BatchOptions, run_batch
from xairobust.batch.zoo import load_zoo
from xairobust.stages.contract import verify_chain

ZOO = {
    "name": "allstages",
    "datasets": ["digits"],
    "models": [{"name": "digits_cnn", "kwargs": {"width": 4}}],
    "methods": ["standard", {"name": "pgd", "params": {"eps": 0.1, "steps": 3}}],
    "train": {"epochs": 1},
    "explain": {"n": 8},
    "explainers": ["ig"],
    "score": {"metrics": "quick", "n": 4},
    "manipulate": {"attack": "topk", "explainer": "saliency", "n": 8, "steps": 3, "eps": 0.1},
    "visualize": {"kind": "generation", "preset": "quick", "n": 1, "classes": [0, 1]},
}


@pytest.mark.slow
def test_zoo_runs_every_stage_and_resumes(tmp_path: Path):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(ZOO))
    opts = BatchOptions(root=str(tmp_path / "root"), workers=1, threads=1, quiet=True)
    first = run_batch(load_zoo(str(path)), opts)
    assert first.ok, {k: o.error for k, o in first.outcomes.items() if o.error}
    stages = {j.stage for j in first.plan.jobs}
    assert {"train", "explain", "score", "manipulate", "visualize", "report"} <= stages

    report = first.report_dirs()[0]
    for name in ("table.csv", "stats.csv", "manipulation.csv", "manipulation_stats.csv"):
        assert (report / name).is_file(), name
    figures = {p.stem for p in (report / "figures").glob("*.png")}
    assert {"manipulation_topk_saliency", "visual_generation"} <= figures

    runs = [p.parent for p in (tmp_path / "root" / "runs").glob("allstages/*/run.json")]
    assert len(runs) == 2
    for run in runs:
        for doc in [*run.glob("scores/*.json"), *run.glob("manipulation/*.json"), *run.glob("visualisations/*.json")]:
            verify_chain(doc, run, "recompute")
        assert json.loads((run / "run.json").read_text())["weights_sha256"]

    second = run_batch(load_zoo(str(path)), opts)
    assert second.ok and second.count("cached") == len(second.plan.jobs)
