"""The study page: ``results/<study>/index.html``, one self-contained HTML file per zoo.

A renderer of the report package, not a report of its own: the comparison tables are the
report's (``table.html``, rendered from the same Table objects as table.md/table.tex), and every
statistic comes from ``xairobust.report.analysis`` (issue 19: seed-level tests, MixedLM, the
common-correct filter, dose-response slopes and rank correlations). This module adds what only a
ladder study has: the headline figure (metric vs robust accuracy, one colour per training
family), monotonicity along each ladder, the confound table (slope on all samples, on the
common-correct samples, and adjusted for clean accuracy) and a paragraph written from the numbers.

Figures are PNGs embedded as base64 ``data:`` URIs and the CSS is inline, so the page opens offline
from any folder; the same PNGs are written beside it (``figures/``) for papers and READMEs.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.errors import ConfigError
from xairobust.layout import RunLayout
from xairobust.provenance import git_commit, versions
from xairobust.runs import file_sha256, read_json, write_json_atomic

STUDY_HTML = "index.html"
STUDY_JSON = "study.json"
FAMILY_NAMES = {"standard": "Standard", "pgd": "PGD", "jacobian": "JacobReg", "nsloss": "NsLoss", "fool": "Fool"}


def analysis() -> Any:
    """The statistics module (one place: every call below goes through it)."""
    try:
        import xairobust.report.analysis as module
    except ImportError:  # pragma: no cover - only while the statistics are not installed
        raise ConfigError("study: this installation lacks xairobust.report.analysis (the issue-19 statistics)") from None
    return module


def _report_fields() -> set[str]:
    from xairobust.report.build import ReportConfig

    return {f.name for f in dataclasses.fields(ReportConfig)}


def has_common_correct() -> bool:
    """Whether the report can restrict its tables to the common-correct samples."""
    return "common_correct" in _report_fields()


@dataclass
class Section:
    """One report of the study (one dataset/model setting, usually)."""

    name: str
    report_dir: Path
    runs: list[Path]
    baseline: str
    alpha: float = 0.05
    ci_level: float = 0.95
    correction: str = "holm"
    seed: int = 0
    common_correct: bool = True
    n_boot: int = 2000  # bootstrap resamples of the rank correlations' CIs (0: none)


@dataclass
class StudyInfo:
    name: str
    description: str = ""
    command: str = ""
    zoo_file: str = ""


@dataclass
class _Computed:
    section: Section
    long: pd.DataFrame  # every sample
    used: pd.DataFrame  # the samples the comparisons use (common-correct when on)
    counts: pd.DataFrame  # common-correct counts per (explainer, setting); empty when off
    runs: pd.DataFrame  # run means on ``used``
    dose: pd.DataFrame  # dose-response on ``used``
    dose_all: pd.DataFrame  # dose-response on every sample (the confound table's first column)
    seeds: pd.DataFrame
    mixed: pd.DataFrame
    mono: pd.DataFrame
    meta: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)  # file stem -> PNG
    # Manipulation resistance and visualisation numbers (issue 19 item 4), when the report has them:
    # the same dose-response / run means / monotonicity, over every sample the report used.
    more_dose: pd.DataFrame = field(default_factory=pd.DataFrame)
    more_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    more_mono: pd.DataFrame = field(default_factory=pd.DataFrame)
    more_notes: list[str] = field(default_factory=list)


# -- numbers -------------------------------------------------------------------------------------


def rung_means(runs: pd.DataFrame, level: float) -> pd.DataFrame:
    """One point per rung (explainer, setting, metric, label): analysis.ladder_points, plus the
    between-seed t interval of the seeds' robust accuracy (the figure's horizontal bars)."""
    from scipy import stats

    pts = analysis().ladder_points(runs, ci_level=level)
    n = pts["n_seeds"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n >= 2, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * pts["robust_acc_sd"] / np.sqrt(n), np.nan)
    pts["robust_ci_low"] = pts["robust_acc"] - half
    pts["robust_ci_high"] = pts["robust_acc"] + half
    return pts


def monotonicity(rungs: pd.DataFrame) -> pd.DataFrame:
    """Per ladder (training family with a ladder parameter) and metric: are the rung means
    monotone in the ladder value? Also the rank correlation of rung value and mean."""
    from scipy import stats

    rows = []
    lad = rungs[(rungs["ladder_param"].astype(str) != "") & rungs["ladder_value"].notna()]
    for (explainer, setting, metric, family), g in lad.groupby(["explainer", "setting", "metric", "family"], sort=False):
        g = g.sort_values("ladder_value")
        if len(g) < 3:
            continue
        diffs = np.diff(g["mean"].to_numpy())
        if np.all(diffs > 0):
            shape = "increasing"
        elif np.all(diffs < 0):
            shape = "decreasing"
        elif np.all(diffs == 0):
            # a control map that does not read the model scores the same on every rung: no trend to
            # rank (scipy would warn and return NaN), and "not monotone" would misdescribe it.
            shape = "constant"
        else:
            shape = "not monotone"
        rho = float("nan") if shape == "constant" else float(stats.spearmanr(g["ladder_value"], g["mean"]).statistic)
        direction = g["direction"].iloc[0]
        better = ""
        if shape in ("increasing", "decreasing") and direction in ("higher", "lower"):
            better = "improves" if (shape == "increasing") == (direction == "higher") else "worsens"
        rows.append({"explainer": explainer, "setting": setting, "metric": metric, "family": family,
                     "ladder_param": g["ladder_param"].iloc[0], "rungs": len(g),
                     "values": " ".join(f"{v:g}" for v in g["ladder_value"]),
                     "means": " ".join(f"{v:.4g}" for v in g["mean"]), "shape": shape,
                     "spearman_value_vs_metric": rho, "with_more_robustness": better})
    return pd.DataFrame(rows, columns=["explainer", "setting", "metric", "family", "ladder_param", "rungs", "values",
                                       "means", "shape", "spearman_value_vs_metric", "with_more_robustness"])


def _read_or(path: Path, compute: Any) -> pd.DataFrame:
    """A statistic the report already wrote (same function, same samples), else computed here."""
    if path.is_file():
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            pass
    return compute()


def _study_meta(runs: list[Path], long: pd.DataFrame) -> dict[str, Any]:
    """What the page states about its scale: seeds, presets, n per run, the attack of the axis."""
    presets, ns, attacks = set(), set(), set()
    for run in runs:
        scores = run / RunLayout.SCORES
        for doc_path in sorted(scores.glob("*.json")) if scores.is_dir() else []:
            doc = read_json(doc_path)
            if doc.get("preset"):
                presets.add(str(doc["preset"]))
        rob = RunLayout(run).robustness
        if rob.is_file():
            doc = read_json(rob)
            head = [e for e in doc.get("results", []) if isinstance(e, dict) and e.get("attack") == doc.get("headline")]
            e = head[0] if head else {}
            n = doc.get("n") or e.get("n")
            attacks.add(f"{doc.get('headline', '?')} {e.get('norm', doc.get('headline_norm', ''))} "
                        f"ε {e.get('eps', doc.get('headline_eps', '?'))}" + (f", {n} test images" if n else ""))
    for _, g in long.groupby(["run", "explainer"]):
        ns.add(int(g["sample"].nunique()))
    return {"seeds": sorted(int(s) for s in long["seed"].unique()), "presets": sorted(presets),
            "samples_per_run": sorted(ns), "attacks": sorted(attacks), "n_runs": int(long["run"].nunique()),
            "labels": list(dict.fromkeys(long["label"])), "explainers": list(dict.fromkeys(long["explainer"]))}


def report_samples(report_dir: Path, long: pd.DataFrame) -> pd.DataFrame | None:
    """The samples the report's tables and tests used (its samples.csv: after --common-correct,
    with each sample's noise floor), floor-subtracted as the report's tests are, with the run
    columns of ``long``; None when the report predates samples.csv."""
    from xairobust.report.samples import SAMPLES_CSV

    path = Path(report_dir) / SAMPLES_CSV
    if not path.is_file():
        return None
    got = pd.read_csv(path, usecols=lambda c: c in ("run", "explainer", "metric", "index", "value", "floor"))
    keys = ["run", "explainer", "metric", "sample"]
    got = got.rename(columns={"index": "sample"})
    if "floor" not in got.columns:
        got["floor"] = np.nan
    got["run"] = got["run"].map(_run_names(got["run"].unique(), long["run"].unique(), path))
    per_sample = long.drop(columns=["value", "floor"]).drop_duplicates(keys)
    frame = got.merge(per_sample, on=keys, how="left", validate="one_to_one")
    return analysis().apply_floor(frame[long.columns]).reset_index(drop=True)


def _run_names(recorded: Any, runs: Any, source: Path) -> dict[str, str]:
    """samples.csv names a run as the report was given it (a batch: relative to its root), the
    study's long frame by the path it read (absolute): match each recorded name to the one run
    whose path is it or ends with it."""
    out = {}
    for name in recorded:
        parts = Path(str(name)).parts
        hits = [r for r in runs if str(r) == str(name) or Path(str(r)).parts[-len(parts):] == parts]
        if len(hits) != 1:
            raise ConfigError(f"{source}: run '{name}' matches {len(hits)} of the study's runs; expected exactly one")
        out[name] = hits[0]
    return out


MORE_KIND = {"manipulation": "manipulation resistance", "visual": "visualisation"}


def more_metas() -> dict[str, Any]:
    """Metric metadata of the manipulation measures that have a direction (the report's tested
    ones) and of the visualisation numbers, keyed by metric name."""
    import xairobust.report.manipulation as manipulation
    from xairobust.report.meta import MetricMeta
    from xairobust.report.visual import VISUAL_METRICS

    metas = {m: MetricMeta(m, label, "manipulation", d) for m, label, d in manipulation.COLUMNS if d is not None}
    metas.update(VISUAL_METRICS)
    return metas


def _read_samples(folder: Path, name: str) -> pd.DataFrame | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            try:
                return pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
                raise ConfigError(f"{path}: not a readable per-sample CSV ({exc})") from None
    return None


def _run_fid(runs: list[Path]) -> pd.DataFrame:
    """(run, extractor, fid): each run's FID of its generated images per feature extractor (a
    per-run number: no per-sample file holds it), from the runs' visualisation documents."""
    from xairobust.report.collect import collect_runs
    from xairobust.report.visual import visual_frames

    _, summary = visual_frames(collect_runs([str(p) for p in runs]))
    if summary.empty:
        return pd.DataFrame(columns=["run", "extractor", "fid"])
    return summary[["run", "extractor", "fid"]]


def more_long(report_dir: Path, long: pd.DataFrame, runs: list[Path] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The report's manipulation-resistance and visualisation numbers as a long frame (the columns
    of ``analysis.LONG_COLUMNS`` plus ``kind``), with each run's robust/clean accuracy and ladder
    value taken from ``long`` (the scores' long frame of the same runs), and notes.

    * manipulation (``manipulation_samples.csv``): one "explainer" per (attack, attacked explainer,
      scored explainer) as the report's rows name it (``topk/ig``, ``random/ig→saliency``), the
      measures the report tests (those with a direction: Spearman, top-k intersections, SSIM,
      centre-of-mass shift, the targeted gains, FSR = fooled);
    * visualisation (``visual_samples.csv``): one "explainer" per feature extractor, class FID (per
      class) and feature distance (per image), plus FID (one number per run, from ``runs``' documents).

    Every sample the report used counts (the common-correct filter is about explanations of
    correctly classified images; these numbers have their own sample sets). A run that ``long``
    does not know (no robust accuracy to place it on the axis) is left out and named in a note."""
    import xairobust.report.manipulation as manipulation
    from xairobust.report.samples import MANIPULATION_SAMPLES, VISUAL_SAMPLES

    metas = more_metas()
    columns = [*analysis().LONG_COLUMNS, "kind"]
    info_cols = ["run", "family", "ladder_param", "ladder_value", "eps", "init", "clean_acc", "robust_acc"]
    info = long.drop_duplicates("run")[info_cols]
    known = list(info["run"])
    frames, notes = [], []
    man = _read_samples(Path(report_dir), MANIPULATION_SAMPLES)
    if man is not None and len(man):
        man = man[man["metric"].isin([m for m, meta in metas.items() if meta.category == "manipulation"])].copy()
        man["explainer"] = [manipulation._key(a, b, e) for a, b, e in
                            zip(man["attack"].astype(str), man["attacked"].astype(str), man["explainer"].astype(str),
                                strict=True)]
        frames.append(man.assign(kind="manipulation"))
    vis = _read_samples(Path(report_dir), VISUAL_SAMPLES)
    if vis is not None and len(vis):
        vis = vis[vis["metric"].isin([m for m, meta in metas.items() if meta.category == "visual"])].copy()
        frames.append(vis.assign(kind="visual"))
        if runs:
            fid = _run_fid(runs)
            fid = fid[np.isfinite(fid["fid"].to_numpy(float))]
            if len(fid):
                per_run = vis.drop_duplicates(["run", "explainer"])[["run", "explainer", "setting", "label", "seed"]]
                per_run["run_key"] = per_run["run"].map(_tolerant_names(per_run["run"].unique(), fid["run"].unique()))
                fid = fid.rename(columns={"run": "run_key", "extractor": "explainer"}).merge(
                    per_run, on=["run_key", "explainer"], how="inner")
                frames.append(fid.assign(metric="fid", value=fid["fid"], index=0, kind="visual")
                              .drop(columns=["fid", "run_key"]))
    if not frames:
        return pd.DataFrame(columns=columns), notes
    df = pd.concat(frames, ignore_index=True)
    names = _tolerant_names(df["run"].unique(), known)
    unknown = sorted(str(r) for r in df["run"].unique() if r not in names)
    if unknown:
        notes.append(f"left out (no robust accuracy among the study's runs): {', '.join(unknown)}")
    df = df[df["run"].isin(list(names))].copy()
    df["run"] = df["run"].map(names)
    df = df.rename(columns={"index": "sample"}).drop(columns=[c for c in info_cols[1:] if c in df.columns])
    df = df.merge(info, on="run", how="left")
    df["direction"] = df["metric"].map({m: meta.direction or "" for m, meta in metas.items()})
    df["correct"], df["floor"] = np.nan, np.nan
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df[columns].reset_index(drop=True), notes


def _tolerant_names(recorded: Any, runs: Any) -> dict[Any, str]:
    """Like ``_run_names`` but a recorded name that matches no run (or several) is left out."""
    out = {}
    for name in recorded:
        parts = Path(str(name)).parts
        hits = [r for r in runs if str(r) == str(name) or Path(str(r)).parts[-len(parts):] == parts
                or Path(str(name)).parts[-len(Path(str(r)).parts):] == Path(str(r)).parts]
        if len(hits) == 1:
            out[name] = hits[0]
    return out


def _more(section: Section, long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(dose-response, run means, monotonicity, notes) of the manipulation/visualisation numbers."""
    A = analysis()
    more, notes = more_long(section.report_dir, long, section.runs)
    if more.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), notes
    kinds = more.drop_duplicates(["explainer", "metric"]).set_index(["explainer", "metric"])["kind"]
    dose = A.dose_response(more.drop(columns="kind"), seed=section.seed, n_boot=section.n_boot,
                           ci_level=section.ci_level, alpha=section.alpha)
    dose.insert(0, "kind", [kinds.get((e, m), "") for e, m in zip(dose["explainer"], dose["metric"], strict=True)])
    runs = A.run_means(more.drop(columns="kind"))
    mono = monotonicity(rung_means(runs, section.ci_level))
    return dose, runs, mono, notes


def compute(section: Section) -> _Computed:
    """Every number of a section. One source with its report: the samples are the report's
    (samples.csv), floor-subtracted like the report's tests, and every statistic the report wrote
    (seed_stats.csv, mixed.csv, dose_response.csv, common_correct.csv) is read, not recomputed."""
    A = analysis()
    long = A.apply_floor(A.collect_long([str(p) for p in section.runs]))
    used = report_samples(section.report_dir, long)
    if used is not None:
        counts = _read_or(section.report_dir / "common_correct.csv", pd.DataFrame) if section.common_correct else pd.DataFrame()
    elif section.common_correct:
        used, counts = A.common_correct(long, by=("explainer", "setting"))
    else:
        used, counts = long, pd.DataFrame()
    kw = {"ci_level": section.ci_level, "alpha": section.alpha}
    d = section.report_dir
    dose = _read_or(d / "dose_response.csv", lambda: A.dose_response(used, seed=section.seed, n_boot=section.n_boot, **kw))
    # Every image: only its slope is shown (the confound table), so no bootstrap.
    dose_all = A.dose_response(long, seed=section.seed, n_boot=0, **kw) if section.common_correct else dose
    seeds = _read_or(d / "seed_stats.csv", lambda: A.seed_tests(used, section.baseline, correction=section.correction, **kw))
    mixed = _read_or(d / "mixed.csv", lambda: A.mixed_effects(used, section.baseline, correction=section.correction, **kw))
    runs = A.run_means(used)
    mono = monotonicity(rung_means(runs, section.ci_level))
    more_dose, more_runs, more_mono, more_notes = _more(section, long)
    return _Computed(section=section, long=long, used=used, counts=counts, runs=runs, dose=dose, dose_all=dose_all,
                     seeds=seeds, mixed=mixed, mono=mono, meta=_study_meta(section.runs, long),
                     more_dose=more_dose, more_runs=more_runs, more_mono=more_mono, more_notes=more_notes)


# -- figures -------------------------------------------------------------------------------------


def _family_styles(families: list[str]) -> dict[str, tuple[str, str]]:
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    markers = "osD^vP*Xh<>"
    return {f: (colours[i % len(colours)], markers[i % len(markers)]) for i, f in enumerate(families)}


def _png(fig: Any, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _rung_panel(ax: Any, part: pd.DataFrame, rungs: pd.DataFrame, metric: str, styles: dict[str, tuple[str, str]],
                legend: bool) -> None:
    """One panel: faint points = runs, large points = rung means over seeds with between-seed CIs
    on both axes, lines join the rungs of a ladder; one colour per training family."""
    pr, rr = part[part["metric"] == metric], rungs[rungs["metric"] == metric]
    for fam, (colour, marker) in styles.items():
        fr = pr[pr["family"] == fam]
        ax.scatter(100 * fr["robust_acc"], fr["mean"], s=9, color=colour, alpha=0.35, linewidths=0)
        g = rr[rr["family"] == fam].sort_values(["ladder_value", "robust_acc"])
        if g.empty:
            continue
        x = 100 * g["robust_acc"].to_numpy()
        # Accuracy CIs drawn inside [0, 100] % (a t interval over 2-3 seeds can leave it).
        lo, hi = np.clip(g["robust_ci_low"], 0, 1), np.clip(g["robust_ci_high"], 0, 1)
        xerr = 100 * np.abs(np.vstack([g["robust_acc"] - lo, hi - g["robust_acc"]]))
        yerr = np.abs(np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]]))
        ax.errorbar(x, g["mean"], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt=marker + "-",
                    color=colour, ms=5, lw=1, elinewidth=0.8, capsize=2,
                    label=FAMILY_NAMES.get(fam, fam) if legend else None)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, lw=0.5)


def _legend_band(fig: Any, axes: Any, title: str) -> None:
    """A band of half an inch above the panels holds the title and the colour legend."""
    height = fig.get_figheight()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10, y=1 - 0.05 / height)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.22 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))


def headline_figure(runs: pd.DataFrame, explainer: str, metas: dict[str, Any], level: float, dpi: int) -> bytes:
    """Metric vs robust accuracy for one explainer: one column of panels per metric family,
    one panel per metric (see ``_rung_panel``)."""
    import matplotlib.pyplot as plt

    import xairobust.report.figures as figs  # noqa: F401 - selects the Agg backend first

    part = runs[runs["explainer"] == explainer]
    metrics = [m for m in metas if m in set(part["metric"])]
    families_of: dict[str, list[str]] = {}
    for m in metrics:
        families_of.setdefault(metas[m].category, []).append(m)
    ncols, nrows = len(families_of), max(len(v) for v in families_of.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.5, 3.3 * ncols), 2.7 * nrows + 0.5), squeeze=False)
    styles = _family_styles(list(dict.fromkeys(part["family"])))
    rungs = rung_means(part, level)
    for col, (category, names) in enumerate(families_of.items()):
        for row in range(nrows):
            ax = axes[row][col]
            if row >= len(names):
                ax.axis("off")
                continue
            meta = metas[names[row]]
            _rung_panel(ax, part, rungs, meta.name, styles, legend=row == 0 and col == 0)
            ax.set_title(f"{category}: {meta.label} {meta.arrow}".strip() if row == 0 else f"{meta.label} {meta.arrow}".strip(),
                         fontsize=9)
            if row == len(names) - 1:
                ax.set_xlabel("robust accuracy (%)", fontsize=8)
    _legend_band(fig, axes, f"{explainer}: metric vs robust accuracy (faint: runs; large: mean over seeds, bars {level:.0%} CI)")
    return _png(fig, dpi)


def controls_layout(runs: pd.DataFrame, metas: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(explainers, metrics) of the controls figure: the explainers under test first, then the
    control explainers (registry order of ``CONTROL_ORDER``); the metrics are the first metric of
    each family (in ``metas`` order) that every one of those explainers was scored with. Empty
    lists when the study has no control explainer or no explainer under test."""
    from xairobust.report.sanity import CONTROL_ORDER

    explainers = list(dict.fromkeys(runs["explainer"]))
    controls = sorted((e for e in explainers if _is_control(e)),
                      key=lambda e: CONTROL_ORDER.index(e) if e in CONTROL_ORDER else len(CONTROL_ORDER))
    tested = [e for e in explainers if not _is_control(e)]
    if not controls or not tested:
        return [], []
    columns = tested + controls
    common = set.intersection(*(set(runs.loc[runs["explainer"] == e, "metric"]) for e in columns))
    metrics, seen = [], set()
    for name, meta in metas.items():
        if name in common and meta.category not in seen:
            seen.add(meta.category)
            metrics.append(name)
    return columns, metrics


def controls_figure(runs: pd.DataFrame, metas: dict[str, Any], level: float, dpi: int) -> bytes | None:
    """The headline with its controls beside it: one row per metric family (its first metric
    scored for every explainer), one column per explainer, the control explainers last; the same
    panels as the headline figure, the y axis shared along a row so a control's level (what the
    metric gives a model-independent map) reads against the explainers' curves. None without a
    control explainer."""
    import matplotlib.pyplot as plt

    import xairobust.report.figures as figs  # noqa: F401 - selects the Agg backend first

    columns, metrics = controls_layout(runs, metas)
    if not metrics:
        return None
    part = runs[runs["explainer"].isin(columns) & runs["metric"].isin(metrics)]
    styles = _family_styles(list(dict.fromkeys(part["family"])))
    nrows, ncols = len(metrics), len(columns)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.5, 2.8 * ncols), 2.5 * nrows + 0.5), squeeze=False,
                             sharey="row")
    for col, explainer in enumerate(columns):
        sub = part[part["explainer"] == explainer]
        rungs = rung_means(sub, level)
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            _rung_panel(ax, sub, rungs, metric, styles, legend=row == 0 and col == 0)
            meta = metas[metric]
            head = f"{explainer}" + (" (control)" if _is_control(explainer) else "")
            ax.set_title(f"{head}: {meta.label} {meta.arrow}".strip(), fontsize=9)
            if row == nrows - 1:
                ax.set_xlabel("robust accuracy (%)", fontsize=8)
    _legend_band(fig, axes, f"metric vs robust accuracy, controls beside (mean over seeds, bars {level:.0%} CI;"
                            " y shared per row)")
    return _png(fig, dpi)


MORE_PANELS = 12  # the manipulation/visualisation figure's panel cap (the CSV has every pair)


def more_panels(runs: pd.DataFrame, metas: dict[str, Any]) -> list[tuple[str, str]]:
    """(explainer, metric) pairs of the manipulation/visualisation figure: visualisation first,
    then the manipulations whose scored explainer is the attacked one, then transfers; metrics in
    ``metas`` order; at most ``MORE_PANELS``."""
    if runs.empty:
        return []
    pairs = list(dict.fromkeys(zip(runs["explainer"], runs["metric"], strict=True)))
    order = {m: i for i, m in enumerate(metas)}

    def rank(pair: tuple[str, str]) -> tuple[int, int, str]:
        explainer, metric = pair
        kind = 0 if metas.get(metric) is not None and metas[metric].category == "visual" else (2 if "→" in explainer else 1)
        return kind, order.get(metric, len(order)), explainer

    return sorted(pairs, key=rank)[:MORE_PANELS]


def more_figure(runs: pd.DataFrame, metas: dict[str, Any], level: float, dpi: int) -> bytes | None:
    """Manipulation resistance and visualisation numbers vs robust accuracy: one panel per
    (attack/explainer or feature extractor, measure), the headline's panels; None without them."""
    import matplotlib.pyplot as plt

    import xairobust.report.figures as figs  # noqa: F401 - selects the Agg backend first

    panels = more_panels(runs, metas)
    if not panels:
        return None
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.5, 3.0 * ncols), 2.5 * nrows + 0.5), squeeze=False)
    styles = _family_styles(list(dict.fromkeys(runs["family"])))
    for k, ax in enumerate(ax for row in axes for ax in row):
        if k >= len(panels):
            ax.axis("off")
            continue
        explainer, metric = panels[k]
        part = runs[runs["explainer"] == explainer]
        _rung_panel(ax, part, rung_means(part, level), metric, styles, legend=k == 0)
        meta = metas.get(metric)
        name = f"{meta.label} {meta.arrow}".strip() if meta is not None else metric
        ax.set_title(f"{explainer}: {name}", fontsize=8)
        if k >= len(panels) - ncols:
            ax.set_xlabel("robust accuracy (%)", fontsize=8)
    _legend_band(fig, axes, f"manipulation resistance and visualisation vs robust accuracy (mean over seeds, bars"
                            f" {level:.0%} CI)")
    return _png(fig, dpi)


def accuracy_figure(runs: pd.DataFrame, dpi: int) -> bytes:
    """Clean vs robust accuracy of every run: the confound the adjustment removes."""
    import matplotlib.pyplot as plt

    import xairobust.report.figures as figs  # noqa: F401

    per_run = runs.drop_duplicates("run")
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for fam, (colour, marker) in _family_styles(list(dict.fromkeys(per_run["family"]))).items():
        g = per_run[per_run["family"] == fam]
        ax.scatter(100 * g["robust_acc"], 100 * g["clean_acc"], color=colour, marker=marker, s=22,
                   label=FAMILY_NAMES.get(fam, fam))
    ax.set_xlabel("robust accuracy (%)", fontsize=8)
    ax.set_ylabel("clean accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("clean vs robust accuracy (one point per run)", fontsize=9)
    fig.tight_layout()
    return _png(fig, dpi)


# -- words ---------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    text = f"{v:.{digits}g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text.replace("-", "−")


def _ci(lo: Any, hi: Any) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


def _excludes_zero(lo: Any, hi: Any) -> bool:
    try:
        return math.isfinite(float(lo)) and math.isfinite(float(hi)) and (float(lo) > 0 or float(hi) < 0)
    except (TypeError, ValueError):
        return False


def _effect_word(slope: float, direction: str) -> str:
    if direction not in ("higher", "lower") or not math.isfinite(slope):
        return "changes"
    return "improves" if (slope > 0) == (direction == "higher") else "worsens"


def _is_control(explainer: str) -> bool:
    from xairobust.registry import EXPLAINERS

    try:
        return bool(EXPLAINERS.meta(explainer).get("control"))
    except ConfigError:
        return False


def what_this_shows(c: _Computed, metas: dict[str, Any]) -> list[str]:
    """Paragraphs written from the numbers: the sign and CI of every dose-response slope, whether
    it survives the clean-accuracy adjustment, monotonicity, the seed-level tests, controls."""
    s, out = c.section, []
    seeds = c.meta["seeds"]
    pct = f"{s.ci_level:.0%}"
    for explainer in c.meta["explainers"]:
        d = c.dose[c.dose["explainer"] == explainer]
        if d.empty:
            continue
        control = _is_control(explainer)
        better, worse, flat, survive, lost, gained = [], [], [], [], [], []
        for r in d.itertuples(index=False):
            label = metas[r.metric].label if r.metric in metas else r.metric
            sig = _excludes_zero(r.slope_ci_low, r.slope_ci_high)
            adj_sig = _excludes_zero(r.adj_ci_low, r.adj_ci_high)
            same_sign = math.isfinite(r.slope_per10) and math.isfinite(r.adj_slope_per10) and np.sign(r.slope_per10) == np.sign(r.adj_slope_per10)
            text = f"{label} {_num(r.slope_per10)} {_ci(r.slope_ci_low, r.slope_ci_high)}"
            if sig:
                (better if _effect_word(r.slope_per10, r.direction) == "improves" else worse).append(text)
                (survive if adj_sig and same_sign else lost).append(label)
            else:
                flat.append(text)
                if adj_sig:
                    gained.append(label)
        head = (f"<b>{html.escape(explainer)}</b>" + (" (a control explainer, model-independent)" if control else "")
                + f": over the {int(d['n_runs'].max())} runs, per +10 points of robust accuracy")
        parts = []
        if better:
            parts.append("the metric improves significantly for " + "; ".join(better))
        if worse:
            parts.append("it worsens significantly for " + "; ".join(worse))
        if flat:
            parts.append(f"the {pct} CI includes zero for " + "; ".join(flat))
        para = head + " " + ", ".join(parts) + f" (slope per +10 points, {pct} CI)."
        if better or worse:
            if survive:
                para += " Adjusted for clean accuracy, the effect keeps its sign and significance for " + ", ".join(survive) + "."
            if lost:
                para += (" It does <b>not survive</b> the adjustment (sign flips or the CI then includes zero) for "
                         + ", ".join(lost) + ": there, robustness and clean accuracy cannot be told apart.")
        if gained:
            para += " Only after the adjustment is the slope significant for " + ", ".join(gained) + "."
        notes = [n for n in d.get("adjustment_note", pd.Series(dtype=str)).fillna("") if n]
        if notes and not (lost or gained):
            para += " " + " ".join(html.escape(n) for n in notes)
        m = c.mono[c.mono["explainer"] == explainer]
        if not m.empty:
            mono_parts = []
            for fam, g in m.groupby("family", sort=False):
                k = int(g["shape"].isin(["increasing", "decreasing"]).sum())
                mono_parts.append(f"{FAMILY_NAMES.get(fam, fam)} ({g['ladder_param'].iloc[0]}): {k} of {len(g)} metrics monotone")
            para += " Along the ladders, rung means over seeds are " + "; ".join(mono_parts) + "."
        if control:
            para += (" A control explainer does not read the model, so a dose-response here comes from the metric's"
                     " own dependence on the model (its perturbation or faithfulness probe), not from better explanations.")
        out.append(para)
    out.extend(_more_paragraphs(c, metas))
    if len(seeds) < 2:
        out.append("One training seed: every test is about images only, not about training runs; the seed-level"
                   " statistics need <code>seeds: K</code> with K ≥ 2.")
    elif not c.seeds.empty and "p_adjusted" in c.seeds:
        sig = c.seeds[c.seeds["significant"].astype(bool)] if "significant" in c.seeds else c.seeds.iloc[0:0]
        line = (f"With training runs as the unit ({len(seeds)} seeds; {', '.join(sorted(set(c.seeds['test'].astype(str))))},"
                f" {s.correction}-corrected), {len(sig)} of {len(c.seeds)} rung-vs-{html.escape(s.baseline)} comparisons differ at"
                f" α = {s.alpha:g}")
        if not c.mixed.empty and "significant" in c.mixed:
            ms = int(c.mixed["significant"].astype(bool).sum())
            line += f"; the mixed model over all samples (seed, run and image as random effects) finds {ms} of {len(c.mixed)}"
        out.append(line + ".")
    if not c.counts.empty:
        lo, hi = int(c.counts["n_common_correct"].min()), int(c.counts["n_samples_before"].max())
        out.append(f"All comparisons use the images every model of the comparison classifies correctly"
                   f" ({lo}{'' if lo == int(c.counts['n_common_correct'].max()) else '–' + str(int(c.counts['n_common_correct'].max()))}"
                   f" of {hi} per run), so no model is scored on images it gets wrong.")
    return out


def _more_paragraphs(c: _Computed, metas: dict[str, Any]) -> list[str]:
    """One paragraph per kind (manipulation resistance, visualisation): the significant slopes per
    +10 points of robust accuracy with their CIs, how many are flat, and which lose the effect
    once clean accuracy is held fixed."""
    out = []
    d = c.more_dose
    if d.empty:
        return out
    pct = f"{c.section.ci_level:.0%}"
    for kind, part in d.groupby("kind", sort=False):
        better, worse, lost = [], [], []
        for r in part.itertuples(index=False):
            meta = metas.get(r.metric)
            text = f"{html.escape(str(r.explainer))} {meta.label if meta is not None else r.metric}"
            if not _excludes_zero(r.slope_ci_low, r.slope_ci_high):
                continue
            item = f"{text} {_num(r.slope_per10)} {_ci(r.slope_ci_low, r.slope_ci_high)}"
            (better if _effect_word(r.slope_per10, r.direction) == "improves" else worse).append(item)
            same = (math.isfinite(r.adj_slope_per10) and np.sign(r.adj_slope_per10) == np.sign(r.slope_per10)
                    and _excludes_zero(r.adj_ci_low, r.adj_ci_high))
            if not same:
                lost.append(text)
        n_flat = len(part) - len(better) - len(worse)
        para = (f"<b>{MORE_KIND.get(kind, kind).capitalize()}</b> (every sample the report used), per +10 points of"
                f" robust accuracy over {int(part['n_runs'].max())} runs:")
        bits = []
        if better:
            bits.append(" resists better / improves significantly for " + "; ".join(better))
        if worse:
            bits.append(" worsens significantly for " + "; ".join(worse))
        bits.append(f" the {pct} CI includes zero for {n_flat} of {len(part)} measures")
        para += ",".join(bits) + "."
        if lost:
            para += " Adjusted for clean accuracy, the effect does <b>not survive</b> for " + ", ".join(lost) + "."
        out.append(para)
    return out


# -- the page ------------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.8em;margin:.6em 0 1.2em}td,th{border:1px solid #ddd;padding:.2em .45em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-size:.95em;padding:.3em 0}
.facts td,.facts th{text-align:left}.shows{background:#f6f8fa;border-left:4px solid #4a7;padding:.6em 1em}
img.figure{max-width:100%;height:auto;display:block;margin:.5em 0}.small{font-size:.85em;color:#555}code{background:#f2f2f2;padding:0 .2em}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _frame_html(df: pd.DataFrame, columns: list[tuple[str, str]], caption: str) -> str:
    """A small numbers table: ``columns`` = (frame column or 'a|b' CI pair, header)."""
    if df.empty:
        return f"<p class=small>{html.escape(caption)}: no rows.</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    rows = []
    for r in df.to_dict("records"):
        cells = []
        for col, _ in columns:
            if "|" in col:
                lo, hi = col.split("|")
                cells.append(_ci(r.get(lo), r.get(hi)))
            else:
                v = r.get(col, "")
                cells.append(_num(v) if isinstance(v, (float, np.floating)) else html.escape(str(v)))
            if col in ("slope_per10", "adj_slope_per10", "mean_diff", "estimate"):
                pair = {"slope_per10": ("slope_ci_low", "slope_ci_high"), "adj_slope_per10": ("adj_ci_low", "adj_ci_high"),
                        "mean_diff": ("ci_low", "ci_high"), "estimate": ("ci_low", "ci_high")}[col]
                if _excludes_zero(r.get(pair[0]), r.get(pair[1])):
                    cells[-1] = f"<b>{cells[-1]}</b>"
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _with_labels(df: pd.DataFrame, metas: dict[str, Any]) -> pd.DataFrame:
    if df.empty or "metric" not in df:
        return df
    df = df.copy()
    df["metric"] = [f"{metas[m].label} {metas[m].arrow}".strip() if m in metas else m for m in df["metric"]]
    return df


def _confound_frame(c: _Computed) -> pd.DataFrame:
    keys = ["explainer", "setting", "metric"]
    a = c.dose_all[[*keys, "slope_per10", "slope_ci_low", "slope_ci_high"]].rename(
        columns={"slope_per10": "all_slope", "slope_ci_low": "all_lo", "slope_ci_high": "all_hi"})
    b = c.dose[[*keys, "direction", "slope_per10", "slope_ci_low", "slope_ci_high", "adj_slope_per10", "adj_ci_low",
                "adj_ci_high", "clean_slope_per10", "adjustment_changes", "adjustment_note"]]
    return a.merge(b, on=keys, how="right")


def render_page(computed: list[_Computed], info: StudyInfo, metas: dict[str, Any], page_dir: Path) -> str:
    """The whole HTML document; links to the report files are relative to ``page_dir``."""
    esc = html.escape
    body = [f"<h1>Study {esc(info.name)}</h1>"]
    if info.description:
        body.append(f"<p>{esc(info.description)}</p>")
    for c in computed:
        s, meta = c.section, c.meta
        multi = len(computed) > 1
        if multi:
            body.append(f"<h2>{esc(s.name)}</h2>")
        seeds = meta["seeds"]
        cc = ("on: each comparison (one explainer, one setting) uses only the images every one of its models classifies"
              " correctly" if s.common_correct else "off: every explained image")
        unit = ("training runs (seeds): the seed-level tests compare per-seed means; the dose-response regresses run means"
                " on robust accuracy; the mixed model uses every image with seed, run and image as random effects;"
                " the comparison tables' stars are per-image paired tests" if len(seeds) > 1 else
                "images only (one seed): no statement here is about training runs")
        facts = [("runs", f"{meta['n_runs']} ({len(meta['labels'])} rungs/methods × seeds)"),
                 ("seeds", f"{len(seeds)}: {', '.join(map(str, seeds))}"),
                 ("metric preset", ", ".join(meta["presets"]) or "unknown"),
                 ("images scored per run (n)", ", ".join(map(str, meta["samples_per_run"]))),
                 ("robustness axis", "; ".join(meta["attacks"]) or "no robustness.json"),
                 ("common-correct filter", cc),
                 ("unit of analysis", unit),
                 ("baseline", s.baseline),
                 ("explainers", ", ".join(meta["explainers"]))]
        if not c.counts.empty:
            facts.insert(4, ("images after the common-correct filter",
                             ", ".join(f"{r.explainer}: {int(r.n_common_correct)} of {int(r.n_samples_before)}"
                                       for r in c.counts.itertuples(index=False))))
        body.append("<table class=facts><tbody>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
                    + "</tbody></table>")
        body.append("<h3>What this shows</h3><div class=shows>" + "".join(f"<p>{p}</p>" for p in what_this_shows(c, metas)) + "</div>")
        body.append("<h3>Headline: interpretability vs robustness</h3>")
        for explainer in meta["explainers"]:
            stem = _stem("headline", explainer, s.name if multi else "")
            if stem in c.figures:
                body.append(_img(c.figures[stem], f"headline figure {explainer}"))
        stem = _stem("headline", "with controls", s.name if multi else "")
        if stem in c.figures:
            body.append("<p>The same curves with the control explanations beside them (model-independent maps:"
                        " a metric that gives a control the explainers' level, or the same slope, cannot tell the"
                        " model's explanation from the image):</p>")
            body.append(_img(c.figures[stem], "headline figure with controls"))
        body.append("<h3>Dose–response</h3>")
        body.append(_frame_html(_with_labels(c.dose, metas), [
            ("explainer", "explainer"), ("metric", "metric"), ("n_runs", "runs"), ("spearman", "Spearman ρ"),
            ("spearman_ci_low|spearman_ci_high", "CI"), ("kendall", "Kendall τ"), ("kendall_ci_low|kendall_ci_high", "CI"),
            ("slope_per10", "slope / +10 pts robust"), ("slope_ci_low|slope_ci_high", "CI"), ("slope_p", "p")],
            f"Rank correlation of robust accuracy and the run's mean metric over the zoo (bootstrap CI over runs) and the"
            f" OLS slope per +10 points of robust accuracy ({s.ci_level:.0%} CI; bold: CI excludes 0)."))
        body.append(_frame_html(_with_labels(c.mono, metas), [
            ("explainer", "explainer"), ("metric", "metric"), ("family", "ladder"), ("ladder_param", "param"),
            ("values", "rungs"), ("means", "rung means (over seeds)"), ("shape", "shape"),
            ("with_more_robustness", "with a higher rung")],
            "Monotonicity along each ladder: the rung means over seeds in rung order."))
        body.append("<h3>The clean-accuracy confound</h3>")
        if "accuracy" in c.figures:
            body.append(_img(c.figures["accuracy"], "clean vs robust accuracy"))
        body.append(_frame_html(_with_labels(_confound_frame(c), metas), [
            ("explainer", "explainer"), ("metric", "metric"), ("all_slope", "slope, all images"), ("all_lo|all_hi", "CI"),
            ("slope_per10", "slope, common-correct" if s.common_correct else "slope"), ("slope_ci_low|slope_ci_high", "CI"),
            ("adj_slope_per10", "slope adjusted for clean acc."), ("adj_ci_low|adj_ci_high", "CI"),
            ("clean_slope_per10", "clean-acc. slope / +10 pts"), ("adjustment_note", "adjustment")],
            "Slope per +10 points of robust accuracy: on every image, on the common-correct images, and from"
            " metric ~ robust + clean accuracy (OLS over runs) — the last is the effect at fixed clean accuracy."))
        if not c.more_dose.empty:
            body.append("<h3>Manipulation resistance and visualisation vs robustness</h3>")
            stem = _stem("headline", "manipulation visual", s.name if multi else "")
            if stem in c.figures:
                body.append(_img(c.figures[stem], "manipulation and visualisation vs robustness"))
            body.append(_frame_html(_with_labels(c.more_dose, metas), [
                ("kind", "kind"), ("explainer", "attack / explainer or extractor"), ("metric", "measure"),
                ("n_runs", "runs"), ("spearman", "Spearman ρ"), ("spearman_ci_low|spearman_ci_high", "CI"),
                ("slope_per10", "slope / +10 pts robust"), ("slope_ci_low|slope_ci_high", "CI"),
                ("adj_slope_per10", "adjusted for clean acc."), ("adj_ci_low|adj_ci_high", "CI"),
                ("adjustment_note", "adjustment")],
                f"The report's manipulation measures (↑: the explanation resisted better) and visualisation numbers"
                f" (FID per run, class FID per class, feature distance per image) as a dose-response over runs, on"
                f" every sample the report used: rank correlation with robust accuracy (bootstrap CI over runs), OLS"
                f" slope per +10 points ({s.ci_level:.0%} CI; bold: excludes 0) and the slope at fixed clean accuracy."))
            body.append(_frame_html(_with_labels(c.more_mono, metas), [
                ("explainer", "attack / explainer or extractor"), ("metric", "measure"), ("family", "ladder"),
                ("values", "rungs"), ("means", "rung means (over seeds)"), ("shape", "shape"),
                ("with_more_robustness", "with a higher rung")],
                "Monotonicity of the manipulation/visualisation numbers along each ladder."))
            for note in c.more_notes:
                body.append(f"<p class=small>{esc(note)}</p>")
        body.append("<h3>Seeds as the unit, and the mixed model</h3>")
        body.append(_frame_html(_with_labels(c.seeds, metas), [
            ("explainer", "explainer"), ("metric", "metric"), ("label", "method"), ("unit", "unit"), ("test", "test"),
            ("n_pairs", "pairs"), ("mean_diff", "diff vs baseline"), ("ci_low|ci_high", "CI"), ("p_adjusted", "p adj."),
            ("better", "better")],
            f"Per-seed means of each rung against {esc(s.baseline)} (bold: CI excludes 0)."))
        body.append(_frame_html(_with_labels(c.mixed, metas), [
            ("explainer", "explainer"), ("metric", "metric"), ("label", "method"), ("estimate", "diff vs baseline"),
            ("ci_low|ci_high", "CI"), ("p_adjusted", "p adj."), ("var_seed", "var seed"), ("var_run", "var run"),
            ("var_sample", "var image"), ("var_residual", "var resid.")],
            "MixedLM (statsmodels, REML) over all samples: value ~ method + (1|seed) + (1|run) + (1|image)."))
        body.append("<h3>Comparison tables</h3>")
        rel = os.path.relpath(s.report_dir, start=page_dir)
        table_html = s.report_dir / "table.html"
        if table_html.is_file():
            body.append(table_html.read_text())
        body.append("<p class=small>LaTeX, CSV and Markdown beside this page: "
                    + ", ".join(f"<code>{esc(rel)}/{f}</code>" for f in ("table.tex", "table_body.tex", "table.csv",
                                                                         "table.md", "stats.csv")
                                if (s.report_dir / f).is_file()) + ".</p>")
    body.append(f"<p class=small>Written by <code>{esc(info.command or 'xairobust study')}</code>"
                f" (xairobust, git {esc(str(git_commit() or 'unknown'))}) on {time.strftime('%Y-%m-%d')}."
                " Self-contained: figures are embedded, nothing is loaded from elsewhere.</p>")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>" + esc(f"Study {info.name}")
            + f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _stem(kind: str, explainer: str, section: str) -> str:
    from xairobust.report.figures import slug

    return "_".join(p for p in (kind, slug(section) if section else "", slug(explainer)) if p)


def build_study(sections: list[Section], out: Path, info: StudyInfo, *, dpi: int = 110, quiet: bool = False) -> list[Path]:
    """Compute every section, then write ``out/index.html``, ``out/figures/*.png``, the study's CSVs
    and ``out/study.json`` (inputs' sha256) -- staged and moved in file by file, like the report."""
    from xairobust.progress import track
    from xairobust.report.collect import run_inputs
    from xairobust.report.meta import metric_meta, order_metrics
    from xairobust.report.output import move_into, staging

    if not sections:
        raise ConfigError("study: no report finished, so there is nothing to show")
    out = Path(out)
    computed = [compute(s) for s in track(sections, len(sections), "study statistics", quiet)]
    names = list(dict.fromkeys(m for c in computed for m in c.long["metric"]))
    metas = {m.name: m for m in order_metrics([metric_meta(n) for n in names])}
    if any(not c.more_dose.empty for c in computed):
        metas.update({k: v for k, v in more_metas().items() if k not in metas})
    multi = len(computed) > 1
    for c in computed:
        for explainer in c.meta["explainers"]:
            c.figures[_stem("headline", explainer, c.section.name if multi else "")] = headline_figure(
                c.runs, explainer, metas, c.section.ci_level, dpi)
        png = controls_figure(c.runs, metas, c.section.ci_level, dpi)
        if png is not None:
            c.figures[_stem("headline", "with controls", c.section.name if multi else "")] = png
        c.figures["accuracy"] = accuracy_figure(c.runs, dpi)
        if not c.more_runs.empty:
            png = more_figure(c.more_runs, metas, c.section.ci_level, dpi)
            if png is not None:
                c.figures[_stem("headline", "manipulation visual", c.section.name if multi else "")] = png
    page = render_page(computed, info, metas, out)
    out.mkdir(parents=True, exist_ok=True)
    with staging(out) as folder:
        (folder / STUDY_HTML).write_text(page)
        (folder / "figures").mkdir()
        for c in computed:
            prefix = f"{c.section.name}_" if multi else ""
            for stem, png in c.figures.items():
                name = stem if stem != "accuracy" or not multi else f"accuracy_{c.section.name}"
                (folder / "figures" / f"{name}.png").write_bytes(png)
            c.dose.to_csv(folder / f"{prefix}dose_response.csv", index=False)
            _confound_frame(c).to_csv(folder / f"{prefix}confound.csv", index=False)
            c.mono.to_csv(folder / f"{prefix}monotonicity.csv", index=False)
            c.runs.to_csv(folder / f"{prefix}run_means.csv", index=False)
            if not c.counts.empty:
                c.counts.to_csv(folder / f"{prefix}common_correct.csv", index=False)
            if not c.more_dose.empty:
                c.more_dose.to_csv(folder / f"{prefix}dose_response_manipulation_visual.csv", index=False)
                c.more_mono.to_csv(folder / f"{prefix}monotonicity_manipulation_visual.csv", index=False)
                c.more_runs.to_csv(folder / f"{prefix}run_means_manipulation_visual.csv", index=False)
        written = move_into(folder, out)
    inputs = {}
    for c in computed:
        inputs.update({role: file_sha256(path) for role, path in run_inputs(c.section.runs).items()})
        for f in sorted(c.section.report_dir.glob("*.csv")):
            inputs[f"{f}"] = file_sha256(f)
    write_json_atomic(out / STUDY_JSON, {
        "format": "xairobust-study-1", "study": info.name, "command": info.command, "zoo": info.zoo_file,
        "sections": [{"name": c.section.name, "report": str(c.section.report_dir), "baseline": c.section.baseline,
                      "common_correct": c.section.common_correct, **c.meta} for c in computed],
        "files": [str(p.relative_to(out)) for p in written], "inputs_sha256": inputs,
        "versions": versions(), "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return [*written, out / STUDY_JSON]


# -- from a batch ----------------------------------------------------------------------------------


def study_zoo(zoo: Any, common_correct: bool) -> Any:
    """The zoo with ``common_correct`` (and the mixed model) set in its report block unless the file
    sets them: a study's tables use the common-correct images by default. Returns a copy."""
    import sys

    report = dict(zoo.report)
    if "mixed" in _report_fields():
        report.setdefault("mixed", True)  # the mixed model is part of every study page (the report's mixed.csv)
    if has_common_correct():
        report.setdefault("common_correct", common_correct)
    elif common_correct:
        print("warning: this installation's report cannot restrict to common-correct images; every image is used",
              file=sys.stderr)
    return dataclasses.replace(zoo, report=report)


def study_sections(result: Any) -> list[Section]:
    """One section per report of the batch that finished (its report.json names the runs it used)."""
    from xairobust import config as cfg
    from xairobust.report.build import REPORT_JSON, ReportConfig

    out = []
    for job in result.plan.reports():
        outcome = result.outcomes.get(job.id)
        report_dir = result.root / job.target
        if outcome is None or outcome.status not in ("cached", "done") or not (report_dir / REPORT_JSON).is_file():
            continue
        doc = read_json(report_dir / REPORT_JSON)
        conf = cfg.build(ReportConfig, {k: v for k, v in job.config.items() if k != "runs"}, f"report {job.id}")
        runs = [Path(p) if Path(p).is_absolute() else result.root / p for p in doc.get("runs", [])]
        out.append(Section(name=Path(job.target).name, report_dir=report_dir, runs=runs,
                           baseline=str(doc.get("baseline") or conf.baseline), alpha=conf.alpha,
                           ci_level=conf.ci_level, correction=conf.correction, seed=conf.seed,
                           common_correct=bool(getattr(conf, "common_correct", False))))
    return out
