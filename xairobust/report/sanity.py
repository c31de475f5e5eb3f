"""The report's sanity section (issue 18 items 2-4): control rows, the blur control, MPRT per
layer, and one verdict per metric on whether the robust-vs-baseline difference survives them.

Written by ``build_report`` when ``--controls`` is on (the default) and some run has scores of a
control explainer (registry meta ``control=True``: random, sobel, constant, blur) or MPRT
per-layer diagnostics; otherwise nothing is written. Files: ``sanity.md``, ``sanity.csv`` (one row
per setting x label x explainer x metric: the mean over samples, then over seeds),
``sanity_verdicts.csv`` and ``figures/sanity_mprt[_<setting>].<fmt>``.

Definitions
-----------
* *Control value*: the metric's mean for a control explainer on the same runs.
* *Sobel beats* an explainer under test on a row (run label) when Sobel's mean is better than the
  explainer's in the metric's direction; such a cell is flagged ``(!)``: on that model the metric
  prefers the image's edges to the explanation.
* *Gap closed by blur*: with the blur control scored on the baseline's runs,
  (blur_baseline - e_baseline) / (e_method - e_baseline) for explainer e; >= 1 means blurring the
  baseline's maps alone reaches the method's value.
* *Verdict* (per setting, explainer under test, metric, method): from the report's statistics
  (stats.csv: significant after correction, which side is better) -- "no significant difference";
  "reversed" when the baseline is better; when the method is better, "does not survive" if Sobel
  beats the explainer on the method's row or the blur closes >= 100 % of the gap, "survives" if a
  control was scored and neither happened, "untested" if no control was scored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.registry import EXPLAINERS, Registry

CONTROL_ORDER = ("sobel", "random", "constant", "blur")


def is_control(explainer: str) -> bool:
    return explainer in EXPLAINERS and bool(EXPLAINERS.meta(explainer).get("control"))


def _scores(runs: list[Any], explainers: list[str]) -> pd.DataFrame:
    """The per-sample scores of ``explainers`` (only those: a run may hold score files of
    explainers another zoo or report asked for, and their rows do not belong in this report)."""
    from xairobust.report.collect import collect_scores

    if not explainers:
        return pd.DataFrame()
    frame, _ = collect_scores(runs, explainers)
    return frame


def _shown(explainers: list[str], selected: bool) -> str:
    """The section's statement of which explainers it shows."""
    names = ", ".join(explainers)
    if selected:
        return (f"Explainers: {names} (the ones this report was asked for: `--explainer` or the zoo's"
                " explainers; other score files in the runs are left out).\n")
    return f"Explainers: {names} (every explainer the runs have scores of: no explainer was selected).\n"


def control_means(scores: pd.DataFrame) -> pd.DataFrame:
    """setting, label, explainer, metric, mean (over samples, then seeds), n_runs, control."""
    per_run = scores.groupby(["setting", "label", "explainer", "metric", "run"], sort=False)["value"].mean().reset_index()
    out = per_run.groupby(["setting", "label", "explainer", "metric"], sort=False)["value"].agg(mean="mean", n_runs="count").reset_index()
    out["control"] = [is_control(e) for e in out["explainer"]]
    return out


def _in_row_order(means: pd.DataFrame, baseline: str, order: list[str]) -> pd.DataFrame:
    """``means`` with its labels in the tables' row order (tables.order_rows); stable otherwise."""
    from xairobust.report.tables import order_rows

    rank = {lab: i for i, lab in enumerate(order_rows(list(dict.fromkeys(means["label"])), baseline, order))}
    return means.sort_values("label", key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)


def _better(a: float, b: float, direction: str | None) -> bool:
    """a better than b in ``direction``."""
    if direction not in ("higher", "lower") or not (math.isfinite(a) and math.isfinite(b)):
        return False
    return a > b if direction == "higher" else a < b


def mprt_curves(runs: list[Any], explainers: list[str] | None = None) -> pd.DataFrame:
    """setting, label, explainer, depth (1 = first layer randomised), layer, similarity (mean over
    seeds), of ``explainers`` (default: every explainer a run has scores of)."""
    from xairobust.runs import read_json

    rows = []
    for r in runs:
        for explainer in r.explainers():
            if explainers is not None and explainer not in explainers:
                continue
            path = r.score_file(explainer).with_suffix(".json")
            try:
                diag = read_json(path)["metrics"]["mprt"]["diagnostics"]
                order, means = diag["layer_order"], diag["per_layer_mean"]
            except (KeyError, TypeError, FileNotFoundError, ValueError):
                continue
            for depth, (layer, value) in enumerate(zip(order, means, strict=True), start=1):
                rows.append({"setting": r.setting, "label": r.label, "explainer": explainer, "run": str(r.path),
                             "depth": depth, "layer": layer, "similarity": np.nan if value is None else float(value)})
    cols = ["setting", "label", "explainer", "depth", "layer", "similarity"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    return df.groupby(["setting", "label", "explainer", "depth", "layer"], sort=False)["similarity"].mean().reset_index()[cols]


def verdicts(means: pd.DataFrame, stats: pd.DataFrame, baseline: str, metas: dict[str, Any]) -> pd.DataFrame:
    """One row per (setting, explainer under test, metric, method) of stats.csv (module doc)."""
    cols = ["setting", "explainer", "metric", "method", "baseline", "difference", "p_adjusted", "sobel_method",
            "sobel_baseline", "explainer_method", "sobel_beats", "blur_gap_closed", "verdict", "sentence"]
    rows = []
    look = {(r.setting, r.label, r.explainer, r.metric): r.mean for r in means.itertuples(index=False)}
    for s in stats.itertuples(index=False):
        if is_control(s.explainer):
            continue
        meta = metas.get(s.metric)
        label = getattr(meta, "label", s.metric)
        direction = getattr(meta, "direction", None)
        e_m = look.get((s.setting, s.method, s.explainer, s.metric), math.nan)
        e_b = look.get((s.setting, baseline, s.explainer, s.metric), math.nan)
        sob_m = look.get((s.setting, s.method, "sobel", s.metric), math.nan)
        sob_b = look.get((s.setting, baseline, "sobel", s.metric), math.nan)
        blur_b = look.get((s.setting, baseline, "blur", s.metric), math.nan)
        gap = (blur_b - e_b) / (e_m - e_b) if math.isfinite(blur_b) and math.isfinite(e_m - e_b) and e_m != e_b else math.nan
        beats = _better(sob_m, e_m, direction)
        controls = any(math.isfinite(look.get((s.setting, lab, c, s.metric), math.nan))
                       for c in CONTROL_ORDER for lab in (s.method, baseline))
        sig = bool(s.significant) if isinstance(s.significant, (bool, np.bool_)) else False
        if not sig:
            verdict = "no significant difference"
        elif s.better == "baseline":
            verdict = "reversed"
        elif beats:
            verdict = "does not survive (Sobel beats the explainer)"
        elif math.isfinite(gap) and gap >= 1:
            verdict = "does not survive (blur reproduces it)"
        elif controls:
            verdict = "survives"
        else:
            verdict = "untested (no control scores)"
        rel = "<" if s.mean_diff < 0 else (">" if s.mean_diff > 0 else "=")
        parts = [f"{label} ({s.explainer}): {s.method} {rel} {baseline} (p = {s.p_adjusted:.3g})"]
        if math.isfinite(sob_m) or math.isfinite(sob_b):
            parts.append(f"Sobel scores {sob_b:.3g} ({baseline}) / {sob_m:.3g} ({s.method})" + (" and beats it" if beats else ""))
        if math.isfinite(gap):
            parts.append(f"blurring {baseline}'s maps closes {int(round(100 * gap))} % of the gap")
        rows.append({"setting": s.setting, "explainer": s.explainer, "metric": s.metric, "method": s.method,
                     "baseline": baseline, "difference": s.mean_diff, "p_adjusted": s.p_adjusted,
                     "sobel_method": sob_m, "sobel_baseline": sob_b, "explainer_method": e_m, "sobel_beats": beats,
                     "blur_gap_closed": gap, "verdict": verdict, "sentence": "; ".join(parts) + f"; {verdict}."})
    return pd.DataFrame(rows, columns=cols)


def _fmt(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.3g}"


def _control_tables(means: pd.DataFrame, metas: dict[str, Any]) -> str:
    out = []
    for setting, part in means.groupby("setting", sort=False):
        metrics = list(dict.fromkeys(part["metric"]))
        head = [getattr(metas.get(m), "label", m) + getattr(metas.get(m), "arrow", "") for m in metrics]
        out.append(f"### Control rows — {setting}\n")
        out.append("| model | explainer | " + " | ".join(head) + " |")
        out.append("|---|---|" + "---|" * len(metrics))
        for label, rows in part.groupby("label", sort=False):
            look = {(r.explainer, r.metric): r.mean for r in rows.itertuples(index=False)}
            tested = [e for e in dict.fromkeys(rows["explainer"]) if not is_control(e)]
            ctrls = [c for c in CONTROL_ORDER if c in set(rows["explainer"])]
            for e in [*tested, *ctrls]:
                cells = []
                for m in metrics:
                    v = look.get((e, m), math.nan)
                    flag = not is_control(e) and _better(look.get(("sobel", m), math.nan), v, getattr(metas.get(m), "direction", None))
                    cells.append(_fmt(v) + (" (!)" if flag else ""))
                name = f"*{e}* (control)" if is_control(e) else e
                out.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("(!): the Sobel control (an edge detector that ignores the model) scores better than this explainer on"
               " this model: the metric cannot tell the explanation from the image's edges here.\n")
    return "\n".join(out)


def _mprt_figure(curves: pd.DataFrame, setting: str):
    import matplotlib.pyplot as plt

    part = curves[curves["setting"] == setting]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (label, explainer), line in part.groupby(["label", "explainer"], sort=False):
        style = "--" if is_control(explainer) else "-"
        ax.plot(line["depth"], line["similarity"], style, marker="o", ms=3, label=f"{label} · {explainer}")
    layers = part.drop_duplicates("depth").sort_values("depth")
    ax.set_xticks(layers["depth"], layers["layer"], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("layers randomised (cascading, top first), last one named")
    ax.set_ylabel("Spearman similarity to the original map")
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.set_title(f"MPRT per layer — {setting}", fontsize=9)
    return fig


def write_section(runs: list[Any], folder: Path, stats: pd.DataFrame, baseline: str, registry: Registry | None,
                  figures: bool = True, formats: tuple[str, ...] = ("png",), dpi: int = 150,
                  common_correct: bool = False, explainers: list[str] | None = None,
                  selected: bool = False, order: list[str] | None = None) -> list[Path]:
    """Write the sanity section into ``folder``; [] when there is nothing to say (module doc).

    ``explainers``: the report's explainers (default: every one the runs have scores of);
    ``selected``: whether they were asked for (``--explainer``, a zoo's list) -- the section says
    which. The control tables list the rows in the tables' order (baseline first, then ``order``,
    then alphabetical). With ``common_correct`` the control rows are means over the same common-correct samples as
    the tables and the tests the verdicts quote, so a verdict never sets a test on one image set
    beside means of another."""
    import xairobust.report.analysis as analysis
    import xairobust.report.figures as figs
    from xairobust.report.meta import metric_meta

    if explainers is None:
        explainers, selected = sorted({e for r in runs for e in r.explainers()}), False
    scores = _scores(runs, explainers)
    if common_correct and not scores.empty:
        scores, _ = analysis.restrict_common_correct(scores, runs, list(dict.fromkeys(scores["explainer"])))
    curves = mprt_curves(runs, explainers)
    if scores.empty or (not any(is_control(e) for e in set(scores["explainer"])) and curves.empty):
        return []
    means = control_means(scores)
    metas = {m: metric_meta(m, registry) for m in set(means["metric"])}
    ver = verdicts(means, stats, baseline, metas)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md = ["# Sanity checks\n", "Controls: model-independent explanations scored like the explainers under test"
          " (xairobust.report.sanity explains the flags and verdicts).\n", _shown(list(explainers), selected),
          _control_tables(_in_row_order(means, baseline, order or []), metas)]
    if len(ver):
        md.append("### Does the difference survive the controls?\n")
        md += [f"- {s}" for s in ver["sentence"]]
        md.append("")
    if not curves.empty:
        md.append("### MPRT per layer (Spearman similarity after randomising the layers up to this one)\n")
        for (setting, label, explainer), line in curves.groupby(["setting", "label", "explainer"], sort=False):
            md.append(f"- {setting} · {label} · {explainer}: " + ", ".join(f"{r.layer} {_fmt(r.similarity)}" for r in line.itertuples()))
        md.append("")
    written = [folder / "sanity.md", folder / "sanity.csv", folder / "sanity_verdicts.csv"]
    written[0].write_text("\n".join(md))
    means.to_csv(written[1], index=False)
    ver.to_csv(written[2], index=False)
    if figures and not curves.empty:
        (folder / "figures").mkdir(exist_ok=True)
        settings = list(dict.fromkeys(curves["setting"]))
        for setting in settings:
            stem = "sanity_mprt" + (f"_{figs.slug(setting)}" if len(settings) > 1 else "")
            written += figs.save(_mprt_figure(curves, setting), folder / "figures", stem, list(formats), dpi)
    return written
