"""Report section for explanation manipulation (``RUN/manipulation/<attack>_<explainer>.*``).

One table per (setting, attack, attacked explainer, scored explainer): rows are the runs'
labels (the baseline first), columns the similarity measures with their arrows (↑: higher
means the explanation resisted better), each cell the mean ± standard deviation over samples;
``*`` marks a paired test against the baseline (same test samples; ``xairobust.report.stats``:
Wilcoxon by default, Holm-corrected over every comparison of this section) below ``alpha``.
A figure per (setting, attack, explainer) shows, per method, the original image and map and the
manipulated image and map.

Files (inside the report folder): ``manipulation.md``, ``manipulation.csv`` (means),
``manipulation_stats.csv`` (stats.py's columns), ``figures/manipulation_<attack>_<explainer>*``.
Only manipulation documents whose provenance still matches their inputs are used
(``verify_chain``); a stale one is an error naming the command that recomputes it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.layout import RunLayout
from xairobust.report.meta import MetricMeta
from xairobust.report.tables import order_rows

# (measure, column label, direction) in table order; direction "higher" = resisted better.
COLUMNS: list[tuple[str, str, str | None]] = [
    ("spearman", "Spearman", "higher"),
    ("topk_1", "Top-1%", "higher"),
    ("topk_5", "Top-5%", "higher"),
    ("topk_10", "Top-10%", "higher"),
    ("ssim", "SSIM", "higher"),
    ("com_shift", "CoM shift", "lower"),
    ("target_spearman_before", "ρ(target) before", None),
    ("target_spearman", "ρ(target)", "lower"),
    ("target_gain", "Δρ(target)", "lower"),
    ("fooled", "FSR", "lower"),
    ("pred_unchanged", "Pred. kept", None),
    ("norm_linf", "‖δ‖∞", None),
    ("norm_l2", "‖δ‖₂", None),
]
ARROWS = {"higher": "↑", "lower": "↓", None: ""}


def find_manipulations(run_path: Path) -> list[tuple[str, str, Path]]:
    """(attack, explainer, json path) of every finished manipulation in a run directory."""
    from xairobust.errors import RunError
    from xairobust.runs import read_json

    folder = Path(run_path) / RunLayout.MANIPULATION
    found = []
    # Every document counts, also one whose CSV is gone: it is refused by name (collect), never
    # silently left out of the section.
    for doc in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        d = read_json(doc)
        attack, explainer = d.get("attack"), d.get("explainer")
        if not (isinstance(attack, str) and attack and isinstance(explainer, str) and explainer):
            raise RunError(f"{doc}: 'attack' and 'explainer' must be names; not a document of `xairobust manipulate`")
        found.append((attack, explainer, doc))
    return found


def collect(runs: list[Any]) -> pd.DataFrame:
    """Long frame: attack, attacked, explainer, setting, label, method, seed, index, metric, value."""
    from xairobust.stages.contract import verify_chain

    frames = []
    for r in runs:
        for attack, attacked, doc in find_manipulations(r.path):
            d = verify_chain(doc, r.path, f"xairobust manipulate --run {r.path} --attack {attack} --explainer {attacked}")
            df = read_manipulation_csv(doc.with_suffix(".csv"), d)
            df.insert(0, "attack", attack)
            df.insert(1, "attacked", attacked)
            frames.append(df.assign(**r.columns()))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def read_manipulation_csv(path: Path, doc: dict[str, Any]) -> pd.DataFrame:
    """manipulation/<attack>_<explainer>.csv checked (columns, numbers, duplicates, the indices
    within the test split, as many samples as its JSON says): one-line RunError naming it."""
    from xairobust.errors import RunError
    from xairobust.report.collect import read_long_csv
    from xairobust.stages.manipulate import CSV_COLUMNS

    split = doc.get("split_size")
    split = split if isinstance(split, int) and not isinstance(split, bool) else None
    df = read_long_csv(path, CSV_COLUMNS, ("index", "explainer", "metric"), "manipulation", split_size=split)
    n = doc.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and df["index"].nunique() != n:
        raise RunError(f"{path}: holds {df['index'].nunique()} samples but {path.with_suffix('.json').name} says {n}")
    return df


def _key(attack: str, attacked: str, explainer: str) -> str:
    return f"{attack}/{attacked}" + ("" if explainer == attacked else f"→{explainer}")


def statistics(df: pd.DataFrame, baseline: str, test: str, correction: str, alpha: float) -> pd.DataFrame:
    """Paired tests of every label against ``baseline`` (stats.py), one family for the section."""
    from xairobust.report.stats import compare_to_baseline

    tested = {m for m, _, d in COLUMNS if d is not None}
    part = df[df["metric"].isin(tested)].copy()
    part["explainer"] = [_key(a, b, c) for a, b, c in zip(part["attack"], part["attacked"], part["explainer"], strict=True)]
    metas = {m: MetricMeta(m, label, "manipulation", d) for m, label, d in COLUMNS}
    return compare_to_baseline(part, metas, baseline=baseline, test=test, correction=correction, alpha=alpha)


def tables(df: pd.DataFrame, stats: pd.DataFrame, baseline: str, accuracy: dict[tuple[str, str], float],
           test: str, alpha: float) -> tuple[str, pd.DataFrame]:
    """(markdown, means frame) of every (setting, attack, attacked, scored explainer)."""
    sig = set()
    if len(stats):
        sig = {(r.explainer, r.setting, r.method, r.metric) for r in stats.itertuples(index=False) if r.significant}
    md, rows = [], []
    groups = df.groupby(["setting", "attack", "attacked", "explainer"], sort=True)
    for (setting, attack, attacked, explainer), part in groups:
        present = [c for c in COLUMNS if c[0] in set(part["metric"])]
        head = ["Method", "Acc."] + [f"{label} {ARROWS[d]}".strip() for _, label, d in present]
        title = f"{attack} attack on {attacked}" + ("" if explainer == attacked else f", scored with {explainer}")
        md += [f"**{setting}: {title}** (mean ± sd over {part['index'].nunique()} test samples)", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in order_rows(list(dict.fromkeys(part["label"])), baseline, []):
            mine = part[part["label"] == label]
            cells = [label, f"{accuracy.get((setting, label), math.nan):.3f}"]
            row = {"setting": setting, "attack": attack, "attacked": attacked, "explainer": explainer, "label": label}
            for metric, _, _d in present:
                v = mine.loc[mine["metric"] == metric, "value"].astype(float)
                mean, sd = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan
                star = "*" if (_key(attack, attacked, explainer), setting, label, metric) in sig else ""
                cells.append(f"{mean:.3f} ± {sd:.3f}{star}")
                row[metric] = mean
            md.append("| " + " | ".join(cells) + " |")
            rows.append(row)
        md.append("")
    md.append(f"\\* {test} paired test against {baseline} on the same samples, Holm-corrected over this section,"
              f" p < {alpha}. ↑/↓: direction in which the explanation resisted manipulation better.")
    return "\n".join(md) + "\n", pd.DataFrame(rows)


SUMMARY = [("topk_10", "Top-10% ↑"), ("spearman", "Spearman ↑"), ("fooled", "FSR ↓"), ("target_gain", "Δρ(target) ↓")]


def summary(means: pd.DataFrame, stats: pd.DataFrame, baseline: str) -> str:
    """One compact table per setting: rows = attack / attacked -> scored explainer, columns =
    Top-10 %, Spearman and FSR per method (``*``: paired test against the baseline significant)."""
    sig = set()
    if len(stats):
        sig = {(r.explainer, r.setting, r.method, r.metric) for r in stats.itertuples(index=False) if r.significant}
    out = []
    for setting, whole in means.groupby("setting", sort=True):
        # input attacks and the model comparison in separate tables (their methods differ)
        for part in (whole[whole["attack"] != "model"], whole[whole["attack"] == "model"]):
            if part.empty:
                continue
            labels = order_rows(list(dict.fromkeys(part["label"])), baseline, [])
            shown = [(m, n) for m, n in SUMMARY if m in part and part[m].notna().any()]
            head = ["Attack / explainer"] + [f"{name} {lab}" for _, name in shown for lab in labels]
            out += [f"**{setting}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for (attack, attacked, explainer), rows in part.groupby(["attack", "attacked", "explainer"], sort=True):
                key = _key(attack, attacked, explainer)
                cells = [key]
                for metric, _ in shown:
                    for lab in labels:
                        v = rows.loc[rows["label"] == lab, metric]
                        star = "*" if (key, setting, lab, metric) in sig else ""
                        cells.append(f"{float(v.iloc[0]):.3f}{star}" if len(v) and pd.notna(v.iloc[0]) else "–")
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out) + "\n"


def grid(runs: list[Any], setting: str, attack: str, explainer: str, baseline: str, n_images: int = 3):
    """Figure: per method (rows), for n images: original image, original map, manipulated image,
    manipulated map (maps: |attribution| summed over channels, each scaled to its own max)."""
    from xairobust.report.figures import image_grid, show_image
    from xairobust.runs import load_tensors

    mine = {r.label: r for r in runs if r.setting == setting and r.layout.manipulation(attack, explainer)[0].is_file()}
    labels = order_rows(list(mine), baseline, [])
    if not labels:
        return None
    data = {lab: load_tensors(mine[lab].layout.manipulation(attack, explainer)[0]) for lab in labels}
    n = min(n_images, min(len(d["inputs"]) for d in data.values()))
    fig, axes = image_grid(len(labels), 4 * n, (1.3 * 4 * n, 1.4 * len(labels) + 0.4))
    titles = ["image", "map", "manip. image", "manip. map"]
    for i, lab in enumerate(labels):
        d = data[lab]
        for j in range(n):
            imgs = [d["inputs"][j], d["attributions"][j], d["inputs_adv"][j], d["attributions_adv"][j]]
            for c, t in enumerate(imgs):
                ax = axes[i, 4 * j + c]
                arr = t.float().numpy()
                if c % 2 == 0:
                    show_image(ax, arr)
                else:
                    m = np.abs(arr).sum(0) if arr.ndim == 3 else np.abs(arr)
                    ax.imshow(m / (m.max() or 1.0), cmap="hot", vmin=0, vmax=1)
                if i == 0:
                    ax.set_title(titles[c], fontsize=7)
            axes[i, 0].set_ylabel(lab, fontsize=8)
    fig.suptitle(f"{attack} attack on {explainer} ({setting})", fontsize=9)
    fig.tight_layout()
    return fig


def baseline_label(runs: list[Any], baseline: str) -> str:
    """``baseline`` as a row label (the report's resolve_baseline: a label or a method name,
    case-insensitive); unchanged when it matches none, or several (then no row is tested)."""
    from xairobust.errors import ConfigError
    from xairobust.report.compare import resolve_baseline

    try:
        return resolve_baseline(runs, baseline)
    except ConfigError:
        return baseline


def write_section(runs: list[Any], df: pd.DataFrame, folder: Path, baseline: str = "standard", test: str = "wilcoxon",
                  correction: str = "holm", alpha: float = 0.05, figures: bool = True,
                  formats: tuple[str, ...] = ("png",), dpi: int = 150) -> None:
    """Render the manipulation section of ``runs`` (RunRecords) from ``df`` (:func:`collect`) into
    ``folder`` (a report's staging folder; the sections.manipulation section calls this)."""
    import xairobust.report.figures as figs
    from xairobust.report.samples import MANIPULATION_SAMPLES, with_weights

    baseline = baseline_label(runs, baseline)
    folder = Path(folder)
    stats = statistics(df, baseline, test, correction, alpha)
    acc = {(r.setting, r.label): r.clean_accuracy for r in runs}
    md, means = tables(df, stats, baseline, acc, test, alpha)
    (folder / "manipulation.md").write_text(summary(means, stats, baseline) + "\n" + md)
    means.to_csv(folder / "manipulation.csv", index=False)
    stats.to_csv(folder / "manipulation_stats.csv", index=False)
    with_weights(df, runs).to_csv(folder / MANIPULATION_SAMPLES, index=False)  # what the means and stars came from
    if figures:
        (folder / "figures").mkdir(exist_ok=True)
        multi = df["setting"].nunique() > 1
        for (setting, attack, attacked), _ in df.groupby(["setting", "attack", "attacked"], sort=True):
            fig = grid(runs, setting, attack, attacked, baseline)
            if fig is not None:
                stem = f"manipulation_{attack}_{attacked}" + (f"_{figs.slug(setting)}" if multi else "")
                figs.save(fig, folder / "figures", stem, list(formats), dpi)


def report(run_dirs: list[str | Path], out: str | Path, baseline: str = "standard", test: str = "wilcoxon",
           correction: str = "holm", alpha: float = 0.05, figures: bool = True,
           formats: tuple[str, ...] = ("png",), dpi: int = 150) -> list[Path]:
    """Standalone (``xairobust manipulation-report``): the report pipeline's manipulation section
    alone, written into ``out``; [] when no run has manipulation results."""
    import xairobust.report.pipeline as pipeline
    from xairobust.report.build import ReportConfig
    from xairobust.report.collect import collect_runs
    from xairobust.report.sections import ReportContext

    conf = ReportConfig(baseline=baseline, test=test, correction=correction, alpha=alpha,  # type: ignore[arg-type]
                        figures=figures, formats=list(formats), dpi=dpi, controls=False)
    ctx = ReportContext(collect_runs(list(run_dirs)), conf)
    collected = pipeline.collect(ctx, "manipulation-report")
    if all(data is None for _, data in collected):
        return []
    return pipeline.render(ctx, Path(out), collected, marker="xairobust manipulation-report")
