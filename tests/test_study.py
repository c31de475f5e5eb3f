"""`xairobust study`: the study page (self-contained HTML) on a synthetic ladder with planted
effects, checked in a real headless Chromium, and the command's dry run."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from report_fake import provenance, write_run, write_scores

from xairobust.report.build import ReportConfig, build_report
from xairobust.report.study import STUDY_HTML, Section, StudyInfo, build_study, monotonicity
from xairobust.runs import save_tensors

EPS = (0.0, 0.05, 0.1, 0.2)
SEEDS = (0, 1, 2)
N = 24  # test images per run
# Planted: robust accuracy rises with eps; Max-Sensitivity falls by 0.5 per unit of robust accuracy
# (lower is better: an improvement), Sparseness does not depend on it at all.
ROBUST = {0.0: 0.05, 0.05: 0.35, 0.1: 0.6, 0.2: 0.8}


def _ladder_run(root: Path, eps: float, seed: int) -> Path:
    rng = np.random.default_rng(100 * seed + int(1000 * eps))
    robust = ROBUST[eps] + 0.01 * seed
    values = {"max_sensitivity": 1.0 - 0.5 * robust + 0.02 * rng.standard_normal(N),
              "sparseness": 0.5 + 0.02 * rng.standard_normal(N)}
    # The sobel control (model-independent maps): flat in robustness, at its own level.
    control = {"max_sensitivity": 0.3 + 0.02 * rng.standard_normal(N), "sparseness": 0.4 + 0.02 * rng.standard_normal(N)}
    run = write_run(root, f"pgd_eps{eps}_s{seed}", label=f"PGD eps={eps:g}", seed=seed, method="pgd",
                    clean=0.97 - 0.1 * eps, robust=robust, attributions=["saliency", "sobel"])
    meta = json.loads((run / "run.json").read_text())
    meta["method"]["params"] = {"norm": "linf", "eps": eps}
    (run / "run.json").write_text(json.dumps(meta))
    # Indices 0..N-1, and which of them this model gets right: sample 0 is wrong for the eps 0.2
    # rung, so the common-correct comparison has N - 1 images.
    weights = run / "model.safetensors"
    n = N
    for explainer, scores in (("saliency", values), ("sobel", control)):
        attr = run / "attributions" / f"{explainer}.safetensors"
        tensors = {"inputs": torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)),
                   "targets": torch.zeros(n, dtype=torch.int64), "indices": torch.arange(n, dtype=torch.int64),
                   "attributions": torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 7)),
                   "correct": torch.tensor([not (eps == 0.2 and i == 0) for i in range(n)])}
        save_tensors(attr, tensors)
        (run / "attributions" / f"{explainer}.json").write_text(json.dumps(
            {"explainer": explainer,
             "provenance": provenance(run, "explain", {"weights": weights}, explainer=explainer)}))
        write_scores(run / "scores" / f"{explainer}.csv", np.arange(n), scores)
        (run / "scores" / f"{explainer}.json").write_text(json.dumps(
            {"explainer": explainer, "preset": "quick", "n": n,
             "provenance": provenance(run, "score", {"weights": weights, "attributions": attr})}))
    return run


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The page of a 4-rung x 3-seed synthetic ladder, built by the report + study renderers."""
    root = tmp_path_factory.mktemp("study")
    runs = [_ladder_run(root / "runs", eps, seed) for eps in EPS for seed in SEEDS]
    report_dir = root / "results" / "ladder" / "digits_digits_cnn"
    conf = ReportConfig(baseline="PGD eps=0", figures=False, **({"common_correct": True} if _has_cc() else {}))
    build_report(runs, report_dir, conf, quiet=True)
    section = Section(name="digits_digits_cnn", report_dir=report_dir, runs=runs, baseline="PGD eps=0", n_boot=200)
    build_study([section], root / "results" / "ladder", StudyInfo(name="ladder", command="xairobust study ladder.yaml"),
                quiet=True)
    return root / "results" / "ladder"


def _has_cc() -> bool:
    from xairobust.report.study import has_common_correct

    return has_common_correct()


def test_page_is_self_contained_and_states_its_scale(study):
    page = (study / STUDY_HTML).read_text()
    # No external resource: no URL, every image a data: URI, no script or stylesheet link.
    assert not re.search(r"(?:src|href)=\"(?!data:)", page)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r'<img class="figure" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == ["headline figure saliency", "headline figure sobel",
                                          "headline figure with controls", "clean vs robust accuracy"]
    for _, data in images:  # each decodes to a PNG, the same bytes as the file written beside the page
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64decode(images[0][1]) == (study / "figures" / "headline_saliency.png").read_bytes()
    assert base64.b64decode(images[2][1]) == (study / "figures" / "headline_with-controls.png").read_bytes()
    # Scale and unit of analysis are stated.
    assert "<th>seeds</th><td>3: 0, 1, 2</td>" in page
    assert "<th>metric preset</th><td>quick</td>" in page
    assert "<th>images scored per run (n)</th><td>24</td>" in page
    assert "unit of analysis" in page and "training runs (seeds)" in page
    # The comparison table of the report is embedded, and its LaTeX/CSV files are named.
    assert '<table class="report">' in page and "digits_digits_cnn/table.tex" in page
    assert (study / "digits_digits_cnn" / "table.tex").is_file()


def test_page_words_follow_the_planted_numbers(study):
    page = (study / STUDY_HTML).read_text()
    dose = pd.read_csv(study / "dose_response.csv").query("explainer == 'saliency'").set_index("metric")
    # Planted slope of Max-Sensitivity: -0.5 per unit of robust accuracy = -0.05 per +10 points.
    assert dose.loc["max_sensitivity", "slope_ci_low"] < -0.05 < dose.loc["max_sensitivity", "slope_ci_high"]
    assert dose.loc["max_sensitivity", "slope_ci_high"] < 0
    # The sobel control was planted flat: its slope's CI covers 0.
    sobel = pd.read_csv(study / "dose_response.csv").query("explainer == 'sobel'").set_index("metric")
    assert sobel.loc["max_sensitivity", "slope_ci_low"] < 0 < sobel.loc["max_sensitivity", "slope_ci_high"]
    shows = page.split("What this shows")[1].split("Headline")[0]
    assert "improves significantly for Max" in shows  # lower Max-Sensitivity is better
    assert "worsens significantly" not in shows
    mono = pd.read_csv(study / "monotonicity.csv").query("explainer == 'saliency'").set_index("metric")
    assert mono.loc["max_sensitivity", "shape"] == "decreasing"
    assert mono.loc["max_sensitivity", "with_more_robustness"] == "improves"
    if _has_cc():
        counts = pd.read_csv(study / "common_correct.csv")
        assert counts[["n_samples_before", "n_common_correct"]].values.tolist() == [[N, N - 1]] * 2
        assert f"saliency: {N - 1} of {N}" in page


def test_controls_layout_puts_the_controls_beside_the_explainers():
    from xairobust.report.meta import metric_meta, order_metrics
    from xairobust.report.study import controls_figure, controls_layout

    names = ["max_sensitivity", "avg_sensitivity", "faithfulness_correlation", "complexity", "sparseness", "mprt"]
    metas = {m.name: m for m in order_metrics([metric_meta(n) for n in names])}
    rows = []
    for explainer, metrics in (("random", names[:5]), ("ig", names), ("sobel", names[:5]), ("saliency", names[1:5])):
        for metric in metrics:
            for seed, robust in ((0, 0.2), (1, 0.4), (0, 0.6)):
                rows.append({"explainer": explainer, "setting": "digits/digits_cnn", "metric": metric,
                             "direction": metas[metric].direction, "label": f"PGD eps={robust}", "family": "pgd",
                             "seed": seed, "run": f"r{robust}_{seed}", "ladder_param": "eps", "ladder_value": robust,
                             "eps": robust, "clean_acc": 0.9, "robust_acc": robust, "mean": robust + seed,
                             "n_samples": 4})
    runs = pd.DataFrame(rows)
    columns, metrics = controls_layout(runs, metas)
    # Explainers under test in the order met, then the controls in the sanity section's order;
    # one metric per family among those every column has (saliency lacks max_sensitivity, so the
    # sensitivity row is Avg-Sensitivity; only ig has mprt, so no randomisation row).
    assert columns == ["ig", "saliency", "sobel", "random"]
    assert metrics == ["avg_sensitivity", "faithfulness_correlation", "complexity"]
    png = controls_figure(runs, metas, 0.95, 40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert controls_layout(runs[~runs["explainer"].isin(["sobel", "random"])], metas) == ([], [])
    assert controls_figure(runs[runs["explainer"].isin(["sobel", "random"])], metas, 0.95, 40) is None


def test_monotonicity_against_hand_computed_cases():
    rows = []
    for metric, means in (("up", [1, 2, 3]), ("down", [3, 2, 1]), ("bump", [1, 3, 2]), ("flat", [2, 2, 2])):
        for v, m in zip((0.0, 0.1, 0.2), means, strict=True):
            rows.append({"explainer": "e", "setting": "s", "metric": metric, "family": "pgd", "ladder_param": "eps",
                         "ladder_value": v, "mean": float(m), "direction": "higher"})
    rows.append({**rows[0], "family": "standard", "ladder_param": "", "ladder_value": float("nan")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant curve must not reach scipy's ConstantInputWarning
        mono = monotonicity(pd.DataFrame(rows).sample(frac=1, random_state=0)).set_index("metric")
    assert mono["shape"].to_dict() == {"up": "increasing", "down": "decreasing", "bump": "not monotone",
                                       "flat": "constant"}
    assert mono["with_more_robustness"].to_dict() == {"up": "improves", "down": "worsens", "bump": "", "flat": ""}
    assert np.isnan(mono.loc["flat", "spearman_value_vs_metric"])
    assert mono.loc["bump", "spearman_value_vs_metric"] == pytest.approx(0.5)
    assert set(mono["rungs"]) == {3}


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium/chromium-browser/google-chrome on PATH"
                    " (Debian: apt-get install chromium); the study page's browser test needs one")
def test_page_renders_in_headless_chromium(study, tmp_path):
    from PIL import Image

    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # A copy of the page with a probe that records, after load, how many images decoded.
    probe = tmp_path / "probe.html"
    probe.write_text((study / STUDY_HTML).read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{const ok=[...document.images].filter("
        "i=>i.complete&&i.naturalWidth>0).length;document.body.setAttribute('data-decoded',ok+'/'+"
        "document.images.length)})</script></body>"))
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-decoded="4/4"' in dom.stdout
    shot = tmp_path / "page.png"
    run = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400",
                          (study / STUDY_HTML).as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1200)
    assert img.std() > 10  # not a blank page
    # The headline figure is drawn: many distinct grey levels (a plot), not only text on white.
    assert len(np.unique(img.astype(np.uint8))) > 64


def test_cli_dry_run_shows_the_grid_and_the_page(tmp_path):
    from click.testing import CliRunner

    from xairobust.cli import main

    out = CliRunner().invoke(main, ["study", "digits_ladder", "--dry-run", "--root", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert "train digits_digits_cnn_PGD_eps=0.025_s2" in out.stdout
    assert "NsLoss_lam=0.1_s1" in out.stdout and "JacobReg_lam=0.2_s0" in out.stdout
    assert "NsLoss_lam=3.0" not in out.stdout  # the rung that collapsed to chance is off the ladder
    # the blur control's match label resolves to the same seed's PGD eps=0.1 rung, per seed
    import re

    for seed in (0, 1, 2):
        rung = re.search(rf"train (digits_digits_cnn_PGD_eps=0\.1_s{seed}-\w+)", out.stdout).group(1)
        assert re.search(rf"explain blur digits_digits_cnn_JacobReg_lam=0\.2_s{seed}-\w+ \(match: runs/digits_ladder/{re.escape(rung)}\)",
                         out.stdout)
    assert f"study: would write {tmp_path / 'r' / 'results' / 'digits_ladder' / 'index.html'}" in out.stdout.replace("\n", "")
    assert not (tmp_path / "r").exists()


def test_study_numbers_are_the_reports_floor_subtracted_ones(tmp_path):
    """A stochastic explainer's noise floor: the report tests metric - floor; the study page's run
    means, dose-response and seed tests are the same numbers (read from the report), not raw ones."""
    runs = []
    for eps in EPS[:3]:
        for seed in SEEDS[:2]:
            run = _ladder_run(tmp_path / "runs", eps, seed)
            path = run / "scores" / "saliency.json"
            doc = json.loads(path.read_text())
            floor = (0.3 + eps + 0.01 * np.arange(N)).tolist()  # large, and different per rung
            doc["metrics"] = {"max_sensitivity": {"diagnostics": {"noise_floor": {"per_sample": floor}}},
                              "sparseness": {"diagnostics": {}}}
            path.write_text(json.dumps(doc))
            runs.append(run)
    report_dir = tmp_path / "results" / "floor" / "digits"
    build_report(runs, report_dir, ReportConfig(baseline="PGD eps=0", figures=False), quiet=True)
    section = Section(name="digits", report_dir=report_dir, runs=runs, baseline="PGD eps=0", common_correct=False,
                      n_boot=0)
    build_study([section], tmp_path / "results" / "floor", StudyInfo(name="floor"), quiet=True)
    # Independently: each run's mean of (value - floor) from the report's per-sample file.
    samples = pd.read_csv(report_dir / "samples.csv")
    ms = samples[(samples["metric"] == "max_sensitivity") & (samples["explainer"] == "saliency")]
    want = (ms["value"] - ms["floor"]).groupby(ms["run"]).mean()
    raw = ms.groupby("run")["value"].mean()
    assert (want - raw).abs().min() > 0.29  # the floor matters here
    got = pd.read_csv(tmp_path / "results" / "floor" / "run_means.csv")
    got = got[(got["metric"] == "max_sensitivity") & (got["explainer"] == "saliency")].set_index("run")["mean"]
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-12)
    # Dose-response: the report's file, byte for byte the same rows.
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "floor" / "dose_response.csv"),
                                  pd.read_csv(report_dir / "dose_response.csv"))


def test_study_zoo_turns_on_common_correct_and_the_mixed_model_unless_the_zoo_sets_them():
    from dataclasses import dataclass, field

    from xairobust.report.study import study_zoo

    @dataclass
    class Zoo:
        report: dict = field(default_factory=dict)

    assert study_zoo(Zoo(), True).report == {"common_correct": True, "mixed": True}
    assert study_zoo(Zoo(), False).report == {"common_correct": False, "mixed": True}
    own = Zoo(report={"mixed": False, "common_correct": False})
    assert study_zoo(own, True).report == {"mixed": False, "common_correct": False}
    assert own.report == {"mixed": False, "common_correct": False}  # a copy: the zoo is not touched


def test_study_matches_a_batch_reports_relative_run_names(tmp_path, monkeypatch):
    """A batch gives its report run paths relative to the root (samples.csv records them so) and the
    study absolute ones: every sample keeps its run's label, seed and accuracies (a left merge on
    the raw names left them NaN and emptied the monotonicity table)."""
    runs = [_ladder_run(tmp_path / "runs", eps, seed) for eps in EPS[:3] for seed in SEEDS[:2]]
    monkeypatch.chdir(tmp_path)
    relative = [r.relative_to(tmp_path) for r in runs]
    report_dir = tmp_path / "results" / "rel" / "digits"
    build_report(relative, report_dir, ReportConfig(baseline="PGD eps=0", figures=False), quiet=True)
    assert set(pd.read_csv(report_dir / "samples.csv")["run"]) == {str(r) for r in relative}
    section = Section(name="digits", report_dir=report_dir, runs=runs, baseline="PGD eps=0", common_correct=False,
                      n_boot=0)
    build_study([section], tmp_path / "results" / "rel", StudyInfo(name="rel"), quiet=True)
    got = pd.read_csv(tmp_path / "results" / "rel" / "run_means.csv")
    assert got[["label", "seed", "robust_acc", "clean_acc", "ladder_value"]].notna().all().all()
    assert set(got["run"]) == {str(r) for r in runs}
    assert len(pd.read_csv(tmp_path / "results" / "rel" / "monotonicity.csv")) > 0
