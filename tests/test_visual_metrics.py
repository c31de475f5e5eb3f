"""FID, feature distance, the extractors and the fid stage / commands."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import linalg

from xairobust.errors import ConfigError
from xairobust.visualize.metrics import feature_distance, frechet_distance

SCRIPT = Path(sys.executable).with_name("xairobust")


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "xairobust"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("XAIROBUST_DEBUG", None)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=300)


def gaussian(n, d, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((d, d), generator=g, dtype=torch.float64) * scale / math.sqrt(d)
    return torch.randn((n, d), generator=g, dtype=torch.float64) @ a.T


def test_fid_of_a_set_against_itself_is_zero():
    x = gaussian(300, 8, 0)
    assert abs(frechet_distance(x, x)) < 1e-8


def test_fid_against_a_shifted_set_is_the_squared_shift():
    """Same covariance, so the trace term vanishes and FID = ||shift||^2 exactly."""
    x = gaussian(300, 8, 0)
    shift = torch.linspace(-1, 2, 8, dtype=torch.float64)
    assert math.isclose(frechet_distance(x, x + shift), float(shift @ shift), rel_tol=1e-7)


def test_fid_equals_the_closed_form_on_the_sample_moments():
    x, y = gaussian(400, 6, 1), 0.5 + gaussian(300, 6, 2, scale=2.0)
    mu1, mu2 = x.mean(0).numpy(), y.mean(0).numpy()
    s1, s2 = np.cov(x.numpy(), rowvar=False), np.cov(y.numpy(), rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    expect = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))
    assert math.isclose(frechet_distance(x, y), expect, rel_tol=1e-6)


def test_feature_distance_is_the_per_image_l2_distance():
    a, b = gaussian(5, 4, 3), gaussian(5, 4, 4)
    d = feature_distance(a, b)
    for i in range(5):
        assert math.isclose(float(d[i]), float(np.linalg.norm((a[i] - b[i]).numpy())), rel_tol=1e-12)


def test_missing_inception_weights_is_a_one_line_error_naming_the_path(tmp_path):
    from xairobust.visualize.extractors import INCEPTION_FILE, build_extractor

    missing = tmp_path / "nope" / INCEPTION_FILE
    with pytest.raises(ConfigError) as err:
        build_extractor("inception", inception_weights=str(missing))
    msg = str(err.value)
    assert "\n" not in msg and str(missing) in msg and "--inception-weights" in msg


def test_inception_extractor_reads_local_weights_without_unpickling(tmp_path):
    """Random weights saved as a plain state dict: read with weights_only=True, 192 and 2048 features."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from xairobust.visualize.extractors import build_extractor

    orig = tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    old_url = tfi.load_state_dict_from_url
    tfi.load_state_dict_from_url = lambda *a, **k: None
    try:
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("x", ["2048"])
    finally:
        tfi.FeatureExtractorInceptionV3.load_state_dict = orig
        tfi.load_state_dict_from_url = old_url
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    ext = build_extractor("inception", layer="192", inception_weights=str(path))
    assert not ext.training
    gray = torch.rand(3, 1, 8, 8)
    f = ext(gray)
    assert f.shape == (3, 192) and bool(torch.isfinite(f).all())
    torch.testing.assert_close(f, ext(gray.repeat(1, 3, 1, 1)))
    rec = ext.record()
    assert rec["extractor"] == "inception" and rec["layer"] == "192" and len(rec["weights_sha256"]) == 64
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError):
        build_extractor("inception", inception_weights=str(tmp_path / "bad.pth"))


@pytest.fixture(scope="module")
def visual_run(digits_run, tmp_path_factory):
    from xairobust.stages.visualize import VisualizeConfig, visualize

    run = tmp_path_factory.mktemp("vis") / "run"
    shutil.copytree(digits_run, run)
    for kind in ("inversion", "generation"):
        visualize(run, VisualizeConfig(kind=kind, preset="quick", params={"steps": 3}, n=4, device="cpu"), quiet=True)
    return run


def test_fid_stage_with_the_run_extractor(visual_run):
    from xairobust.data.base import get_dataset
    from xairobust.stages.visualize import FidConfig, fid
    from xairobust.visualize.extractors import build_extractor
    from xairobust.visualize.metrics import extract

    conf = FidConfig(extractor=f"run:{visual_run}", device="cpu")
    path = fid(visual_run, conf, quiet=True)
    doc = json.loads(path.read_text())
    assert doc["extractor"] == f"run:{visual_run}"
    assert doc["extractor_record"]["layer"].startswith("input of")
    assert doc["provenance"]["stage"] == "fid" and "extractor_weights" in doc["provenance"]["inputs"]
    rows = pd.read_csv(path.with_suffix(".csv"))
    assert sorted(rows.loc[rows.metric == "class_fid", "index"]) == list(range(10))
    dist = rows[rows.metric == "feature_distance"]
    assert len(dist) == 4
    # the feature distance against a direct computation
    from xairobust.runs import load_tensors

    inv = load_tensors(visual_run / "visualisations" / "inversion.safetensors")
    ext = build_extractor(f"run:{visual_run}")
    direct = (extract(ext, inv["targets"]) - extract(ext, inv["results"])).norm(dim=1)
    np.testing.assert_allclose(dist["value"].to_numpy(), direct.numpy(), rtol=1e-6)
    assert math.isclose(doc["inversion"]["feature_distance_mean"], float(direct.mean()), rel_tol=1e-6)
    # the pooled FID against a direct computation on the test split
    gen = load_tensors(visual_run / "visualisations" / "generation.safetensors")
    test = get_dataset("digits", "test")
    expect = frechet_distance(extract(ext, test.inputs()), extract(ext, gen["results"]))
    assert math.isclose(doc["generation"]["fid"], expect, rel_tol=1e-6)
    assert doc["generation"]["fid_reference"] > 0 and math.isfinite(doc["generation"]["fid_sources"])
    mtime = path.stat().st_mtime_ns
    fid(visual_run, conf, quiet=True)  # current: skipped
    assert path.stat().st_mtime_ns == mtime


def inproc(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """The console entry point in this process: (exit status, non-empty stderr lines)."""
    from xairobust.cli import run

    monkeypatch.setattr(sys, "argv", ["xairobust", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run()
    return int(exc.value.code or 0), [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_cli_visualize_and_its_errors(visual_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(visual_run, run)
    code, err = inproc(monkeypatch, capsys, "visualize", "--run", str(run), "--kind", "feature", "--preset", "quick",
                       "--n", "2", "--steps", "2", "--top-k", "3", "--quiet")
    assert code == 0, err
    doc = json.loads((run / "visualisations" / "feature.json").read_text())
    assert doc["params"]["top_k"] == 3 and doc["params"]["steps"] == 2 and doc["summary"]["top_k"] == 3
    code, err = inproc(monkeypatch, capsys, "visualize", "--run", str(run), "--kind", "inversion", "--stpes", "3")
    assert code == 2 and len(err) == 1 and "steps" in err[0], err
    code, err = inproc(monkeypatch, capsys, "visualize", "--run", str(run), "--kind", "inversoin")
    assert code == 2 and len(err) == 1 and "inversion" in err[0], err


def test_cli_fid_without_inception_weights_prints_one_line(visual_run, tmp_path):
    """Through the installed console script: one line naming where the file goes, exit 2."""
    proc = cli("fid", "--run", str(visual_run), "--extractor", "inception", "--inception-weights", str(tmp_path / "x.pth"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: fid: Inception-v3 weights not found at") and str(tmp_path / "x.pth") in lines[0]


def test_report_has_visual_grids_and_a_table_with_paired_tests(digits_run, tmp_path):
    """Two 'methods' (the same weights, relabelled, one visualised with more steps): figures, a
    table with arrows, and stats paired by class and by image against a direct scipy test."""
    from scipy import stats as sst

    from xairobust.report import ReportConfig, build_report
    from xairobust.stages.visualize import FidConfig, VisualizeConfig, fid, visualize

    runs = []
    for label, steps in (("standard", 2), ("PGD", 6)):
        run = tmp_path / label
        shutil.copytree(digits_run, run)
        meta = json.loads((run / "run.json").read_text())
        meta["label"] = label
        (run / "run.json").write_text(json.dumps(meta))
        for kind in ("inversion", "generation", "feature"):
            visualize(run, VisualizeConfig(kind=kind, preset="quick", params={"steps": steps}, n=3, device="cpu"),
                      quiet=True)
        fid(run, FidConfig(extractor=f"run:{digits_run}", device="cpu"), quiet=True)
        runs.append(run)
    out = tmp_path / "report"
    written = build_report(runs, out, ReportConfig(formats=["png"], grid_images=3), quiet=True)
    names = {p.name for p in written}
    assert {"visual_inversion.png", "visual_generation.png", "visual_feature.png", "visual_table.md",
            "visual_stats.csv"} <= names
    md = (out / "visual_table.md").read_text()
    assert "FID ↓" in md and "Feature dist. ↓" in md and "| PGD |" in md and "| standard |" in md
    stats = pd.read_csv(out / "visual_stats.csv")
    row = stats[stats.metric == "feature_distance"].iloc[0]
    a = pd.read_csv(runs[1] / "visualisations" / f"metrics_run-{digits_run.name}.csv")
    b = pd.read_csv(runs[0] / "visualisations" / f"metrics_run-{digits_run.name}.csv")
    a, b = (f[f.metric == "feature_distance"].sort_values("index")["value"].to_numpy() for f in (a, b))
    assert row["n_pairs"] == 3 and math.isclose(row["p_value"], sst.wilcoxon(a, b).pvalue, rel_tol=1e-9)
    assert (stats.metric == "class_fid").any() and int(stats[stats.metric == "class_fid"].iloc[0]["n_pairs"]) == 10


def test_batch_style_config_runs_every_kind_then_fid_and_refuses_stale_outputs(digits_run, tmp_path):
    """A zoo's `visualize: {kinds: [...], fid: {...}}` block: one call, then current; changed
    weights make every visualisation stale for its consumers."""
    from xairobust.stages.contract import StaleError
    from xairobust.stages.visualize import VisualizeConfig, VisualizeStage, load_visualisation

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    conf = VisualizeConfig(kinds=["inversion", "generation"], fid={"extractor": f"run:{digits_run}"},
                           preset="quick", params={"steps": 2}, n=2, device="cpu")
    stage = VisualizeStage()
    assert not stage.is_current(run, conf)
    out = stage.run(run, conf, quiet=True)
    assert out.name == f"metrics_run-{digits_run.name}.json"
    assert all(p.is_file() for p in stage.outputs(run, conf))
    assert stage.is_current(run, conf)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(StaleError, match="xairobust visualize --run"):
        load_visualisation(run, "inversion")
