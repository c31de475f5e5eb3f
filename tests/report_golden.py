"""Fake runs holding every kind of input the report renders (scores with a noise floor and
correctness, controls and MPRT diagnostics, robustness, manipulation, visualisation, MER), and
the renderings of every report kind on them, with machine paths replaced by ``<ROOT>``.

tests/test_report_golden.py pins these renderings byte for byte (tests/golden/report/), so a
refactoring of the report package that changes any table, CSV or Markdown file is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report_fake import fake_registry, provenance, write_run

from xairobust.runs import save_tensors

N = 12
LABELS = {"standard": (1.0, 0.0, 0.50), "pgd": (0.5, 0.4, 0.60), "nsloss": (0.2, 0.2, 0.70)}
SEEDS = (0, 1)
MANIP_METRICS = ("spearman", "topk_10", "fooled", "pred_unchanged", "norm_linf")


def _correct(label: str, seed: int) -> np.ndarray:
    ok = np.ones(N, bool)
    ok[{"standard": [0], "pgd": [1, 2], "nsloss": [3]}[label]] = False
    ok[4 + seed] = False
    return ok


def _manipulation(run: Path, rng: np.random.Generator, shift: float) -> None:
    folder = run / "manipulation"
    folder.mkdir()
    rows = [{"index": 3 * i, "target": i % 10, "explainer": "saliency", "metric": m,
             "value": float(round(shift + 0.1 * rng.standard_normal(), 6)) if m != "pred_unchanged" else 1.0}
            for i in range(N) for m in MANIP_METRICS]
    pd.DataFrame(rows).to_csv(folder / "topk_saliency.csv", index=False)
    (folder / "topk_saliency.json").write_text(json.dumps({
        "attack": "topk", "explainer": "saliency", "n": N, "split_size": 100,
        "provenance": provenance(run, "manipulate", {"weights": run / "model.safetensors"})}))


def _visual(run: Path, rng: np.random.Generator, shift: float) -> None:
    folder = run / "visualisations"
    folder.mkdir()
    weights = run / "model.safetensors"
    for k, kind in enumerate(("inversion", "generation", "feature")):
        save_tensors(folder / f"{kind}.safetensors", {"results": torch.zeros(2, 1, 8, 8)})
        (folder / f"{kind}.json").write_text(json.dumps({
            "kind": kind, "wall_time_per_image_s": 0.5 + k, "cpu_time_per_image_s": 0.25 + k + shift,
            "provenance": provenance(run, "visualize", {"weights": weights}, kind=kind)}))
    rows = [{"index": c, "target": c, "metric": "class_fid", "value": float(10 * shift + rng.random())} for c in range(5)]
    rows += [{"index": i, "target": i % 5, "metric": "feature_distance", "value": float(shift + 0.1 * rng.random())}
             for i in range(N)]
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "metrics_run.csv", index=False)
    inv = frame[frame["metric"] == "feature_distance"]["value"]
    (folder / "metrics_run.json").write_text(json.dumps({
        "extractor": "run",
        "extractor_record": {"run_label": "standard", "layer": "fc"},
        "generation": {"fid": 10 * shift + 1.5, "fid_reference": 0.75, "fid_sources": 20.0, "generated": 50,
                       "class_fid_mean": float(frame[frame["metric"] == "class_fid"]["value"].mean())},
        "inversion": {"feature_distance_mean": float(inv.mean()), "feature_distance_std": float(inv.std()), "n": N},
        "provenance": provenance(run, "fid", {"weights": weights})}))


def score_zoo(root: Path, *, extras: bool = True) -> Path:
    """3 labels x 2 seeds of ig scores (noise floor on max_sens for pgd), sobel/blur controls with
    MPRT diagnostics, robust accuracy, correctness; with ``extras`` manipulation + visual files."""
    for label, (s, f, c) in LABELS.items():
        for seed in SEEDS:
            rng = np.random.default_rng(1000 * seed + len(label))
            noise = lambda scale, rng=rng: np.round(scale * rng.standard_normal(N), 6)  # noqa: E731
            scores = {"ig": {"max_sens": s + noise(0.1), "faith_corr": f + noise(0.1), "sparse": c + noise(0.02)},
                      "sobel": {"max_sens": 0.3 + noise(0.01), "faith_corr": -0.1 + noise(0.01), "sparse": 0.4 + noise(0.01)}}
            if label == "standard":
                scores["blur"] = {"max_sens": 0.9 + noise(0.01), "faith_corr": 0.5 + noise(0.01), "sparse": 0.52 + noise(0.001)}
            run = write_run(root, f"{label}_s{seed}", label=label, seed=seed, scores=scores, correct=_correct(label, seed),
                            clean=round(0.95 - 0.05 * s - 0.01 * seed, 4), robust=round(0.6 - 0.4 * s + 0.02 * seed, 4),
                            params={"eps": 0.1} if label == "pgd" else None)
            for explainer in ("ig", "sobel"):
                path = run / "scores" / f"{explainer}.json"
                doc = json.loads(path.read_text())
                sims = [0.8 - 0.01 * seed, 0.4, 0.1] if explainer == "ig" else [1.0, 1.0, 1.0]
                doc["metrics"] = {"mprt": {"diagnostics": {"layer_order": ["fc", "conv2", "conv1"], "per_layer_mean": sims}}}
                if explainer == "ig":  # a noise floor (as a stochastic explainer's) on max_sens
                    floor = {"noise_floor": {"per_sample": list(0.05 + 0.1 * s + noise(0.01))}}
                    doc["metrics"]["max_sens"] = {"diagnostics": floor}
                path.write_text(json.dumps(doc))
            rob = json.loads((run / "robustness.json").read_text())
            rob["results"] = [{"attack": a, "norm": "linf", "eps": 0.1, "steps": k, "n": 50, "clean_accuracy": rob["clean_accuracy"],
                               "robust_accuracy": round(rob["robust_accuracy"] - 0.05 * j, 4)}
                              for j, (a, k) in enumerate((("pgd", 10), ("autoattack", 100)))]
            (run / "robustness.json").write_text(json.dumps(rob))
            if extras:
                _manipulation(run, rng, s)
                _visual(run, rng, s)
    return root


def visual_zoo(root: Path) -> Path:
    """Runs with visualisations and no scores (the visual-only report)."""
    for label, (s, _, _) in LABELS.items():
        run = write_run(root, f"{label}_s0", label=label, seed=0)
        _visual(run, np.random.default_rng(len(label)), s)
    return root


def mer_zoo(root: Path) -> Path:
    """MER runs (A2E, A2B2E, A2M2E x 2 seeds) with bim-regression results at two radii."""
    systems = {"A2E": ("a2e", "standard", 0.30), "A2B2E": ("a2b2e", "standard", 0.25), "A2M2E": ("a2m2e", "a2m2e_joint", 0.10)}
    for label, (model, method, shift) in systems.items():
        for seed in SEEDS:
            run = write_run(root, f"{label}_s{seed}", label=label, seed=seed, method=method, model=model, clean=None)
            rng = np.random.default_rng(10 * seed + len(label))
            targets = rng.random((N, 8))
            clean = targets + 0.05 * rng.standard_normal((N, 8))
            results = []
            for eps in (0.001, 0.01):
                adv = clean + (shift + eps) * rng.standard_normal((N, 8))
                rel = f"attacks/bim_{eps:g}.safetensors"
                save_tensors(run / rel, {"indices": torch.arange(N), "targets": torch.from_numpy(targets),
                                         "pred_clean": torch.from_numpy(clean), "pred_adv": torch.from_numpy(adv)})
                before, after = float(np.abs(clean - targets).mean()), float(np.abs(adv - targets).mean())
                results.append({"attack": "bim-regression", "eps": eps, "steps": 10, "file": rel,
                                "mae_before": before, "mae_after": after, "delta_mae": after - before,
                                "corr_before": 0.6 + 0.1 * seed - shift, "corr_after": 0.3 - shift, "snr_db": 30.0 - 100 * eps})
            (run / "robustness.json").write_text(json.dumps({
                "results": results, "provenance": provenance(run, "attack", {"weights": run / "model.safetensors"})}))
    return root


TEXT = (".csv", ".md", ".tex", ".json", ".html")
SKIP = {"report.json"}


def _unhashed(text: str) -> str:
    """A document's text with the hashes of its body and of the files beside it pinned as
    placeholders: they cover the fixture's absolute paths (mer_samples.csv's run column, the
    summary's run paths) and figure bytes that vary with matplotlib's version; the files
    themselves are pinned one by one. Written back as write_json_atomic writes (indent 2)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or ("outputs" not in doc and "body_sha256" not in doc.get("provenance", {})):
        return text
    if isinstance(doc.get("outputs"), dict):
        doc["outputs"] = {name: "<SHA256>" for name in doc["outputs"]}
    if "body_sha256" in doc.get("provenance", {}):
        doc["provenance"]["body_sha256"] = "<BODY_SHA256>"
    return json.dumps(doc, indent=2) + "\n"  # time, versions and commit: not the report's numbers


def texts(folder: Path, root: Path) -> dict[str, str]:
    """Every text output under ``folder`` (figures and report.json left out), paths -> <ROOT>."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in TEXT and p.name not in SKIP and not p.name.startswith(".xairobust"):
            # Paths move with the fixture; the identity hash does not (its input roles are the runs'
            # weights' sha256, collect.run_keys), so it is pinned too.
            text = p.read_text().replace(str(root), "<ROOT>")
            if p.suffix == ".json":
                text = _unhashed(text)
            out[str(p.relative_to(folder))] = text
    return out


def render_all(tmp: Path) -> dict[str, str]:
    """kind/file -> text of every report kind rendered on the fixtures under ``tmp``."""
    from xairobust.report import ReportConfig, build_report
    from xairobust.report import manipulation as manip
    from xairobust.report.mer import write_report
    from xairobust.report.run_table import write_run_tables

    reg = fake_registry()
    runs = score_zoo(tmp / "runs")
    out: dict[str, str] = {}

    def add(kind: str, folder: Path) -> None:
        out.update({f"{kind}/{k}": v for k, v in texts(folder, tmp).items()})

    build_report([runs], tmp / "full", ReportConfig(figures=False, mixed=True), quiet=True, registry=reg)
    add("full", tmp / "full")
    build_report([runs], tmp / "cc", ReportConfig(figures=False, common_correct=True, test="ttest",
                                                   correction="bonferroni", explainer=["ig"], combined=True),
                 quiet=True, registry=reg)
    add("common_correct", tmp / "cc")
    manip.report([runs], tmp / "manip", figures=False)
    add("manipulation", tmp / "manip")
    vis = visual_zoo(tmp / "vruns")
    build_report([vis], tmp / "visual", ReportConfig(figures=False), quiet=True, registry=reg)
    add("visual", tmp / "visual")
    mer = mer_zoo(tmp / "mruns")
    write_report([mer], tmp / "mer")
    add("mer", tmp / "mer")
    write_report([mer], tmp / "mer_delta", eps=0.01, ttest_on="delta")
    add("mer_delta", tmp / "mer_delta")
    for explainer in ("ig", "sobel"):
        write_run_tables(runs / "pgd_s0", explainer)
    out.update({f"run_table/{p.name}": p.read_text() for p in sorted((runs / "pgd_s0" / "scores").glob("*.[tm][ed]*"))
                if p.suffix in (".tex", ".md")})
    return out
