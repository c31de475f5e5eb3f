"""Report additions for feature visualisation (Boychev Figs. 3-5, Tables 2-3).

From each run's ``visualisations/`` folder:

* figures/visual_inversion.*   rows Original, Source, then one row per method; columns = images
                                (the first ``grid_images`` test indices every method inverted);
* figures/visual_generation.*  rows Source (the class's normal draw), then the methods; columns =
                                classes (each class's first draw);
* figures/visual_feature.*     one row per method: its first unit's visualisation, then the test
                                images that activate that unit most (activation in the title);
* visual_table.{md,csv,tex}    per setting and extractor: FID ↓ (all classes pooled), class FID ↓
                                (mean ± std over classes), feature distance of inversions ↓ (mean ±
                                std over images), wall time per image of each visualisation; a *
                                marks a method that differs from the baseline in the paired test;
* visual_stats.csv             the paired tests (xairobust.report.stats.compare_to_baseline, the
                                score report's statistics): class FID paired by class, feature
                                distance paired by test image.

Each method is shown by its run with the lowest seed in figures; table values average the seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.layout import RunLayout
from xairobust.report.collect import RunRecord, read_long_csv
from xairobust.report.meta import MetricMeta
from xairobust.runs import read_json
from xairobust.stages.contract import verify_chain

FOLDER = RunLayout.VISUALISATIONS
KINDS = ("inversion", "generation", "feature")
VISUAL_METRICS = {
    "fid": MetricMeta("fid", "FID", "visual", "lower"),
    "class_fid": MetricMeta("class_fid", "class FID", "visual", "lower"),
    "feature_distance": MetricMeta("feature_distance", "Feature dist.", "visual", "lower"),
}


def has_visual(runs: list[RunRecord]) -> bool:
    return any((r.path / FOLDER / f"{k}.json").is_file() for r in runs for k in KINDS)


def _by_label(runs: list[RunRecord], rows: list[str]) -> list[RunRecord]:
    """One run per label (lowest seed), in row order."""
    out = []
    for label in rows:
        mine = sorted((r for r in runs if r.label == label), key=lambda r: r.seed)
        if mine:
            out.append(mine[0])
    return out


def load(run: RunRecord, kind: str) -> dict[str, np.ndarray] | None:
    """The run's visualisation of ``kind`` (provenance verified: stale -> one-line error), or None."""
    from xairobust.stages.visualize import load_visualisation

    path = run.path / FOLDER / f"{kind}.safetensors"
    if not path.is_file() or not (run.path / FOLDER / f"{kind}.json").is_file():
        return None
    tensors, _ = load_visualisation(run.path, kind)
    return {k: v.numpy() for k, v in tensors.items()}


def _grid(n_rows: int, n_cols: int, size: float = 1.3):
    from xairobust.report.figures import image_grid

    return image_grid(n_rows, n_cols, (size * n_cols + 1.2, size * n_rows + 0.3), frames=False)


def _show(ax, x: np.ndarray) -> None:
    from xairobust.report.figures import show_image

    show_image(ax, x, interpolation="nearest")


def inversion_figure(runs: list[RunRecord], rows: list[str], n_images: int):
    data = [(r.label, d) for r in _by_label(runs, rows) if (d := load(r, "inversion")) is not None]
    if not data:
        return None
    common = set(data[0][1]["indices"].tolist())
    for _, d in data[1:]:
        common &= set(d["indices"].tolist())
    cols = sorted(common)[:n_images]
    if not cols:
        return None
    first = data[0][1]
    pos = {i: k for k, i in enumerate(first["indices"].tolist())}
    fig, axes = _grid(2 + len(data), len(cols))
    for j, idx in enumerate(cols):
        _show(axes[0, j], first["targets"][pos[idx]])
        _show(axes[1, j], first["sources"][pos[idx]])
        axes[0, j].set_title(f"#{idx}", fontsize=8)
        for i, (_, d) in enumerate(data):
            k = d["indices"].tolist().index(idx)
            _show(axes[2 + i, j], d["results"][k])
            axes[2 + i, j].set_xlabel(f"loss {d['loss'][k]:.2f}", fontsize=6)
    for i, name in enumerate(["Original", "Source", *[lab for lab, _ in data]]):
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("Representation inversion", fontsize=10)
    return fig


def generation_figure(runs: list[RunRecord], rows: list[str], n_images: int):
    data = [(r.label, d) for r in _by_label(runs, rows) if (d := load(r, "generation")) is not None]
    if not data:
        return None
    classes = sorted(set.intersection(*[set(d["classes"].tolist()) for _, d in data]))[: max(n_images, 10)]
    if not classes:
        return None
    fig, axes = _grid(1 + len(data), len(classes))
    first = data[0][1]
    for j, c in enumerate(classes):
        k0 = int(np.flatnonzero(first["classes"] == c)[0])
        _show(axes[0, j], first["sources"][k0])
        axes[0, j].set_title(str(c), fontsize=8)
        for i, (_, d) in enumerate(data):
            k = int(np.flatnonzero(d["classes"] == c)[0])
            _show(axes[1 + i, j], d["results"][k])
    for i, name in enumerate(["Source", *[lab for lab, _ in data]]):
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("Class-specific image generation (columns: classes)", fontsize=10)
    return fig


def feature_figure(runs: list[RunRecord], rows: list[str], n_images: int):
    data = [(r.label, d) for r in _by_label(runs, rows) if (d := load(r, "feature")) is not None]
    if not data:
        return None
    k = min(n_images, min(d["topk_images"].shape[1] for _, d in data))
    fig, axes = _grid(len(data), 1 + k)
    for i, (label, d) in enumerate(data):
        _show(axes[i, 0], d["results"][0])
        axes[i, 0].set_ylabel(f"{label}\nunit {int(d['units'][0])}", fontsize=8)
        for j in range(k):
            _show(axes[i, 1 + j], d["topk_images"][0, j])
            axes[i, 1 + j].set_title(f"{d['topk_activations'][0, j]:.2g}", fontsize=7)
    axes[0, 0].set_title("visualisation", fontsize=8)
    fig.suptitle("Direct feature visualisation and the top activating test images", fontsize=10)
    return fig


# -- numbers ----------------------------------------------------------------------------------


def metric_docs(run: RunRecord) -> list[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(extractor, metrics json, per-item csv) of every metrics_<extractor> file of the run."""
    out = []
    folder = run.path / FOLDER
    if not folder.is_dir():
        return out
    for js in sorted(folder.glob("metrics_*.json")):
        extractor = str(read_json(js).get("extractor", ""))
        doc = verify_chain(js, run.path, f"xairobust fid --run {run.path} --extractor {extractor}")
        csv = js.with_suffix(".csv")
        frame = read_long_csv(csv, ("index", "target", "metric", "value"), ("index", "metric"), "visualisation metrics")
        out.append((str(doc.get("extractor", js.stem[len("metrics_"):])), doc, frame))
    return out


def _timing(run: RunRecord) -> dict[str, float]:
    """Wall and CPU seconds per image of each visualisation the run has."""
    out = {}
    for kind in KINDS:
        path = run.path / FOLDER / f"{kind}.json"
        if path.is_file():
            doc = read_json(path)
            out[f"seconds_per_image_{kind}"] = float(doc.get("wall_time_per_image_s", math.nan))
            out[f"cpu_seconds_per_image_{kind}"] = float(doc.get("cpu_time_per_image_s", math.nan))
    return out


def _describe(doc: dict[str, Any]) -> str:
    """'run label X, input of net.fc (FID) / ... (distance)' for the table heading."""
    rec = doc.get("extractor_record") or {}
    dist = (doc.get("distance_extractor_record") or rec).get("layer")
    parts = [f"run '{rec['run_label']}'" if rec.get("run_label") else ""]
    layer = rec.get("layer")
    if layer and dist and dist != layer and "generation" in doc:
        parts.append(f"FID features: {layer}; distance features: {dist}")
    elif layer or dist:
        parts.append(f"features: {layer or dist}")
    return ", ".join(p for p in parts if p)


def visual_frames(runs: list[RunRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-item long frame for the paired tests, per-run summary frame)."""
    items, summary = [], []
    for r in runs:
        timing = _timing(r)
        for extractor, doc, frame in metric_docs(r):
            gen, inv = doc.get("generation", {}), doc.get("inversion", {})
            summary.append({
                "setting": r.setting, "extractor": extractor, "label": r.label, "seed": r.seed, "run": str(r.path),
                "extractor_detail": _describe(doc),
                "fid": gen.get("fid", math.nan), "fid_reference": gen.get("fid_reference", math.nan),
                "fid_sources": gen.get("fid_sources", math.nan), "generated": gen.get("generated"),
                "class_fid_mean": gen.get("class_fid_mean", math.nan),
                "feature_distance_mean": inv.get("feature_distance_mean", math.nan),
                "feature_distance_std": inv.get("feature_distance_std", math.nan),
                "feature_distance_n": inv.get("n"),
                **timing,
            })
            for row in frame.itertuples(index=False):
                items.append({"explainer": extractor, **r.columns(), "index": int(row.index), "target": row.target,
                              "metric": row.metric, "value": float(row.value)})
    return pd.DataFrame(items), pd.DataFrame(summary)


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return ""
    return f"{mean:.{digits}g}" + (f" ± {std:.{digits}g}" if math.isfinite(std) else "")


def visual_table(summary: pd.DataFrame, stats: pd.DataFrame, baseline: str, order: list[str]) -> tuple[pd.DataFrame, str]:
    """(table frame, markdown) with ↓ arrows and * for significant paired differences."""
    from xairobust.report.tables import order_rows

    sig = set()
    if len(stats):
        sig = {(r.explainer, r.setting, r.method, r.metric) for r in stats.itertuples(index=False) if r.significant}
    rows, md = [], []
    for (setting, extractor), part in summary.groupby(["setting", "extractor"], sort=False):
        labels = order_rows(list(dict.fromkeys(part["label"])), baseline, order)
        detail = next((d for d in part["extractor_detail"] if d), "")
        md.append(f"\n**{setting}** — feature extractor `{extractor}`{' (' + detail + ')' if detail else ''}\n")
        md.append("| Method | FID ↓ | class FID ↓ | Feature dist. ↓ | CPU s/image (inv / gen / feat) |")
        md.append("|---|---|---|---|---|")
        for lab in labels:
            p = part[part["label"] == lab]
            row = {"setting": setting, "extractor": extractor, "method": lab, "seeds": len(p)}
            row["fid"] = float(p["fid"].mean())
            row["class_fid_mean"] = float(p["class_fid_mean"].mean())
            row["feature_distance_mean"] = float(p["feature_distance_mean"].mean())
            row["feature_distance_std"] = float(p["feature_distance_std"].mean())
            row["fid_reference"] = float(p["fid_reference"].mean())
            for k in KINDS:
                for col in (f"seconds_per_image_{k}", f"cpu_seconds_per_image_{k}"):
                    row[col] = float(p[col].mean()) if col in p else math.nan
            for m in ("class_fid", "feature_distance"):
                row[f"{m}_significant"] = (extractor, setting, lab, m) in sig
            rows.append(row)
            star = {m: "*" if row[f"{m}_significant"] else "" for m in ("class_fid", "feature_distance")}
            times = " / ".join(f"{row[f'cpu_seconds_per_image_{k}']:.3g}"
                               if math.isfinite(row[f"cpu_seconds_per_image_{k}"]) else "–" for k in KINDS)
            md.append(f"| {lab} | {_pm(row['fid'], math.nan)} | {_pm(row['class_fid_mean'], math.nan)}{star['class_fid']}"
                      f" | {_pm(row['feature_distance_mean'], row['feature_distance_std'])}{star['feature_distance']}"
                      f" | {times} |")
        ref = part["fid_reference"].dropna()
        if len(ref):
            md.append(f"\nReal data (training images vs test images, same extractor): FID {ref.mean():.3g}.")
    md.append("\nFID: generated images of all classes vs the real test images; class FID: mean over classes of"
              " the per-class FID; feature distance: L2 between extractor features of each original and its"
              " inversion (mean ± std over images). Lower is better (↓). * : differs from the baseline"
              f" '{baseline}' in the paired test (class FID paired by class, feature distance by image) after"
              " correction; see visual_stats.csv. FIDs from different extractors are not comparable."
              " CPU s/image: process CPU seconds per visualised image (wall seconds in visual_table.csv).\n")
    return pd.DataFrame(rows), "\n".join(md)


def write(folder: Path, runs: list[RunRecord], frames: tuple[pd.DataFrame, pd.DataFrame], conf: Any) -> None:
    """Write the visual figures and table into ``folder`` (the report's staging folder), from
    ``frames`` = :func:`visual_frames` (the sections.visual section calls this)."""
    import xairobust.report.figures as figs
    from xairobust.report.stats import compare_to_baseline
    from xairobust.report.tables import order_rows

    items, summary = frames
    if len(summary):
        stats = pd.DataFrame()
        if len(items):
            stats = compare_to_baseline(items, VISUAL_METRICS, baseline=conf.baseline, test=conf.test,
                                        correction=conf.correction, alpha=conf.alpha, pairing=conf.pairing)
        table, md = visual_table(summary, stats, conf.baseline, list(conf.order))
        (folder / "visual_table.md").write_text(md)
        table.to_csv(folder / "visual_table.csv", index=False)
        stats.to_csv(folder / "visual_stats.csv", index=False)
        if len(items):  # the per-class / per-image values behind the stars (scripts/check_results.py)
            from xairobust.report.samples import VISUAL_SAMPLES, with_weights

            with_weights(items, runs).to_csv(folder / VISUAL_SAMPLES, index=False)
    if conf.figures:
        (folder / "figures").mkdir(exist_ok=True)
        settings = list(dict.fromkeys(r.setting for r in runs))
        for setting in settings:
            suffix = f"_{figs.slug(setting)}" if len(settings) > 1 else ""
            mine = [r for r in runs if r.setting == setting]
            rows = order_rows(list(dict.fromkeys(r.label for r in mine)), conf.baseline, list(conf.order))
            for kind, make in (("inversion", inversion_figure), ("generation", generation_figure),
                               ("feature", feature_figure)):
                fig = make(mine, rows, conf.grid_images)
                if fig is not None:
                    figs.save(fig, folder / "figures", f"visual_{kind}{suffix}", list(conf.formats), conf.dpi)
