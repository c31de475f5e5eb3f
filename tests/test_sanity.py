"""The report's sanity section: control rows with the Sobel flag, the blur control's gap, the
verdicts, and the MPRT per-layer curves, on fake runs with known scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fake import fake_registry, write_run

from xairobust.report import ReportConfig, build_report
from xairobust.report.sanity import mprt_curves


def _zoo(root, n=20, seeds=(0, 1, 2)):
    # ig: pgd better than standard on all three; sobel beats pgd's ig on max_sens only;
    # blur (standard only) overshoots pgd on faith_corr, closes 20 % of the sparse gap.
    ig = {"standard": (1.0, 0.0, 0.50), "pgd": (0.5, 0.4, 0.60)}
    sobel = (0.3, -0.1, 0.40)
    blur = (0.9, 0.5, 0.52)
    for label, (s, f, c) in ig.items():
        for seed in seeds:
            rng = np.random.default_rng(1000 * seed + len(label))
            noise = lambda scale, rng=rng: scale * rng.standard_normal(n)  # noqa: E731
            scores = {"ig": {"max_sens": s + noise(0.1), "faith_corr": f + noise(0.1), "sparse": c + noise(0.02)},
                      "sobel": {"max_sens": sobel[0] + noise(0.01), "faith_corr": sobel[1] + noise(0.01), "sparse": sobel[2] + noise(0.01)}}
            if label == "standard":
                scores["blur"] = {"max_sens": blur[0] + noise(0.01), "faith_corr": blur[1] + noise(0.01), "sparse": blur[2] + noise(0.001)}
            run = write_run(root, f"{label}_s{seed}", label=label, seed=seed, scores=scores, attributions=list(scores))
            for explainer, sims in (("ig", [0.8, 0.4, 0.1]), ("sobel", [1.0, 1.0, 1.0])):
                path = run / "scores" / f"{explainer}.json"
                doc = json.loads(path.read_text())
                doc["metrics"] = {"mprt": {"diagnostics": {"layer_order": ["fc", "conv2", "conv1"],
                                                           "per_layer_mean": [v - 0.01 * seed for v in sims] if explainer == "ig" else sims}}}
                path.write_text(json.dumps(doc))


def test_sanity_section_flags_verdicts_and_mprt(tmp_path):
    _zoo(tmp_path / "runs")
    out = tmp_path / "report"
    written = build_report([tmp_path / "runs"], out, ReportConfig(formats=["png"]), quiet=True, registry=fake_registry())
    assert out / "sanity.md" in written and out / "figures" / "sanity_mprt.png" in written
    ver = pd.read_csv(out / "sanity_verdicts.csv")
    ver = ver[ver["explainer"] == "ig"].set_index("metric")
    assert ver.loc["max_sens", "verdict"] == "does not survive (Sobel beats the explainer)"
    assert ver.loc["faith_corr", "verdict"] == "does not survive (blur reproduces it)"
    assert ver.loc["sparse", "verdict"] == "survives"
    means = pd.read_csv(out / "sanity.csv")
    m = means.set_index(["label", "explainer", "metric"])["mean"]
    gap = (m["standard", "blur", "sparse"] - m["standard", "ig", "sparse"]) / (m["pgd", "ig", "sparse"] - m["standard", "ig", "sparse"])
    assert ver.loc["sparse", "blur_gap_closed"] == pytest.approx(gap) and 0.1 < gap < 0.3
    md = (out / "sanity.md").read_text()
    assert "(!)" in md and "Sobel scores" in md
    # Sobel (0.3) beats ig on max_sens for both models (1.0, 0.5); on no other metric
    flagged = [line for line in md.splitlines() if "(!)" in line and line.startswith("| ")]
    assert {line.split("|")[1].strip() for line in flagged} == {"standard", "pgd"}
    curves = mprt_curves(__import__("xairobust.report.collect", fromlist=["collect_runs"]).collect_runs([tmp_path / "runs"]))
    ig_pgd = curves[(curves["label"] == "pgd") & (curves["explainer"] == "ig")]
    np.testing.assert_allclose(ig_pgd["similarity"], [0.79, 0.39, 0.09])  # mean over seeds 0, 1, 2
    assert list(ig_pgd["layer"]) == ["fc", "conv2", "conv1"]


def test_no_sanity_section_without_controls_or_when_off(tmp_path):
    _zoo(tmp_path / "runs", seeds=(0,))
    out = tmp_path / "report"
    written = build_report([tmp_path / "runs"], out, ReportConfig(formats=["png"], controls=False), quiet=True, registry=fake_registry())
    assert not any(p.name.startswith("sanity") for p in written)
