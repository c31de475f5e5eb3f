"""Figures (matplotlib, Agg backend): attribution grid, per-metric box/violin plots, metric vs epoch.

Every figure is saved in each requested format (PDF and PNG by default) into ``folder``; file
names carry the explainer and, when a report spans several dataset/model settings, the setting.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from xairobust.errors import RunError  # noqa: E402
from xairobust.report.collect import RunRecord  # noqa: E402
from xairobust.report.meta import MetricMeta  # noqa: E402
from xairobust.runs import load_tensors  # noqa: E402

ATTRIBUTION_KEYS = ("inputs", "indices", "attributions")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "all"


def save(fig: plt.Figure, folder: Path, stem: str, formats: list[str], dpi: int) -> list[Path]:
    """Write ``fig`` as folder/stem.<fmt> for each format (no timestamps: reproducible files)."""
    paths = []
    for fmt in formats:
        path = folder / f"{stem}.{fmt}"
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths


def image_grid(n_rows: int, n_cols: int, figsize: tuple[float, float], frames: bool = True):
    """(figure, axes[n_rows, n_cols]) for a grid of images: no ticks; no frames unless ``frames``.
    The one grid of the report's image figures (attributions, manipulation, visualisation)."""
    fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not frames:
            for spine in ax.spines.values():
                spine.set_visible(False)
    return fig, axes


def show_image(ax, x: np.ndarray, **kwargs) -> None:
    """One (C, H, W) / (H, W) image on ``ax`` in [0, 1] (grey for one channel)."""
    img, cmap = _image(x)
    ax.imshow(img, cmap=cmap, vmin=0, vmax=1, **kwargs)


def _image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(H, W[, 3]) image in [0, 1] for display and the colormap (None for RGB)."""
    if x.ndim == 3 and x.shape[0] == 3:
        img = np.transpose(x, (1, 2, 0))
        cmap = None
    else:
        img = x.mean(axis=0) if x.ndim == 3 else x
        cmap = "gray"
    lo, hi = float(img.min()), float(img.max())
    if lo < 0 or hi > 1:  # not [0, 1] pixels (e.g. a spectrogram): stretch for display only
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.clip(img, 0, 1), cmap


def _heat(a: np.ndarray) -> np.ndarray:
    """Signed channel-summed attribution scaled to [-1, 1] by its own 99th |percentile|.

    Per image, because attributions of different models differ in scale by orders of magnitude;
    the percentile keeps one extreme pixel from washing out the rest.
    """
    h = a.sum(axis=0) if a.ndim == 3 else a
    scale = float(np.percentile(np.abs(h), 99))
    if scale == 0:
        scale = float(np.abs(h).max()) or 1.0
    return np.clip(h / scale, -1, 1)


def _overlay(h: np.ndarray) -> np.ndarray:
    """RGBA heat map: red positive, blue negative, opacity growing with |h| so that pixels
    without attribution show the image underneath."""
    rgba = plt.get_cmap("bwr")((h + 1) / 2)
    rgba[..., 3] = 0.15 + 0.8 * np.abs(h)
    return rgba


def read_attributions(run: RunRecord, explainer: str) -> dict[str, np.ndarray] | None:
    path = run.layout.attribution(explainer)[0]
    if not path.is_file():
        return None
    tensors = load_tensors(path)
    absent = [k for k in ATTRIBUTION_KEYS if k not in tensors]
    if absent:
        raise RunError(f"{path}: missing tensor(s) {', '.join(absent)}")
    out = {k: tensors[k].float().numpy() if k != "indices" else tensors[k].long().numpy() for k in ATTRIBUTION_KEYS}
    if out["inputs"].shape != out["attributions"].shape or len(out["indices"]) != len(out["inputs"]):
        raise RunError(f"{path}: inputs, attributions and indices do not have matching shapes")
    return out


def attribution_grid(
    runs: list[RunRecord], rows: list[str], explainers: list[str], n_images: int
) -> tuple[plt.Figure | None, str]:
    """Top row the test images, then one row per method x explainer with heat-map overlays.

    Each method is shown by its run with the lowest seed; the columns are the first ``n_images``
    test indices that every shown run explained, so every column is the same image throughout.
    Returns (figure or None, note why there is none).
    """
    chosen: list[tuple[str, str, dict[str, np.ndarray]]] = []
    for label in rows:
        candidates = sorted((r for r in runs if r.label == label), key=lambda r: r.seed)
        for explainer in explainers:
            for r in candidates:
                data = read_attributions(r, explainer)
                if data is not None:
                    chosen.append((label, explainer, data))
                    break
    if not chosen:
        return None, "no attributions/<explainer>.safetensors found"
    if any(d["inputs"].ndim != 4 for _, _, d in chosen):
        return None, "attributions are not (N, C, H, W) images"
    common = set(chosen[0][2]["indices"].tolist())
    for _, _, d in chosen[1:]:
        common &= set(d["indices"].tolist())
    cols = sorted(common)[:n_images]
    if not cols:
        return None, "the runs explained no test sample in common"
    nrows, ncols = 1 + len(chosen), len(cols)
    fig, axes = image_grid(nrows, ncols, (1.5 * ncols + 1.2, 1.5 * nrows))
    first = chosen[0][2]
    pos = {int(i): k for k, i in enumerate(first["indices"])}
    for j, idx in enumerate(cols):
        img, cmap = _image(first["inputs"][pos[idx]])
        axes[0, j].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[0, j].set_title(f"#{idx}", fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    for i, (label, explainer, data) in enumerate(chosen, start=1):
        where = {int(v): k for k, v in enumerate(data["indices"])}
        for j, idx in enumerate(cols):
            k = where[idx]
            img, _ = _image(data["inputs"][k])
            gray = img.mean(axis=2) if img.ndim == 3 else img
            axes[i, j].imshow(gray, cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(_overlay(_heat(data["attributions"][k])))
        axes[i, 0].set_ylabel(f"{label}\n{explainer}", fontsize=8)
    fig.tight_layout()
    return fig, ""


def _grid(n: int) -> tuple[int, int]:
    ncols = min(4, n)
    return math.ceil(n / ncols), ncols


def metric_distributions(
    scores: pd.DataFrame, metas: list[MetricMeta], rows: list[str], kind: str
) -> plt.Figure:
    """One panel per metric: per-sample scores (mean over a method's seeds) for each method."""
    nr, nc = _grid(len(metas))
    fig, axes = plt.subplots(nr, nc, figsize=(3.2 * nc, 2.8 * nr), squeeze=False)
    for ax, meta in zip(axes.flat, metas, strict=False):
        part = scores[scores["metric"] == meta.name]
        data, names = [], []
        for label in rows:
            v = part[part["label"] == label].groupby("index")["value"].mean().dropna().to_numpy()
            if len(v):
                data.append(v)
                names.append(label)
        if data:
            if kind == "violin":
                ax.violinplot(data, showmedians=True)
            else:
                ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
            ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{meta.label} {meta.arrow} ({meta.category})".replace("  ", " "), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(metas):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def epoch_curves(
    epoch_scores: pd.DataFrame, runs: list[RunRecord], metas: list[MetricMeta]
) -> plt.Figure:
    """Accuracy (from history.csv) and each metric's sample mean against the epoch, one line per run."""
    shown = {run for run in epoch_scores["run"]}
    by_path = {str(r.path): r for r in runs if str(r.path) in shown}
    panels = ["accuracy"] + [m.name for m in metas]
    nr, nc = _grid(len(panels))
    fig, axes = plt.subplots(nr, nc, figsize=(3.2 * nc, 2.6 * nr), squeeze=False)
    flat = list(axes.flat)
    for path, r in by_path.items():
        name = f"{r.label} s{r.seed}"
        hist = r.layout.history_csv
        if hist.is_file():
            h = pd.read_csv(hist)
            col = next((c for c in ("test_accuracy", "val_accuracy") if c in h.columns), None)
            if col and "epoch" in h.columns:
                flat[0].plot(h["epoch"], h[col], marker=".", label=name)
        mine = epoch_scores[epoch_scores["run"] == path]
        for ax, meta in zip(flat[1:], metas, strict=False):
            m = mine[mine["metric"] == meta.name].sort_values("epoch")
            if len(m):
                ax.plot(m["epoch"], m["value"], marker="o", markersize=3, label=name)
    flat[0].set_title("clean accuracy ↑", fontsize=9)
    for ax, meta in zip(flat[1:], metas, strict=False):
        ax.set_title(f"{meta.label} {meta.arrow}".strip(), fontsize=9)
    for ax in flat[: len(panels)]:
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    for ax in flat[len(panels):]:
        ax.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    if not handles:
        handles, labels = flat[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
