"""The music-emotion study's report: Table 1, Fig. 3 (ΔMAE box plot), Fig. 4 (scatter), t-tests.

Input: run directories that went through ``train`` and the ``bim-regression`` attack. Runs are
grouped by their ``label`` (A2E, A2B2E, A2M2E, aA2E, aA2B2E in the zoo), one run per seed.

* Table 1: clean Avg. Corr. (mean over the 8 emotions of Pearson's r on the test split) and MAE,
  mean ± std over seeds (population std, ddof=0, as the reference's numpy), plus ΔMAE, the
  correlation after the attack and the perturbations' SNR.
* Fig. 3: ΔMAE = MAE(after) − MAE(before), one point per run, box per label.
* Fig. 4: true vs predicted value of chosen emotions, clean (x) and attacked (o), per model.
* t-tests: A2E vs A2M2E and A2B2E vs A2M2E, two-sided paired t-tests (``scipy.stats.ttest_rel``)
  over test excerpts × seeds, pairing the same excerpt under the same seed. The statistic is
  each excerpt's MAE over the 8 emotions after the attack (``on="after"``, what the reference
  tested: 36 excerpts × 10 seeds gives its t(359)) or its increase ΔMAE (``on="delta"``).
  Bonferroni: p is multiplied by the number of tests (2), i.e. α = 0.05/2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.attacks.bim_regression import NAME
from xairobust.errors import ConfigError
from xairobust.layout import RunLayout
from xairobust.report.render import latex_grid, markdown_grid, tex_escape
from xairobust.report.samples import MER_SAMPLES
from xairobust.report.stats import adjust_p, paired_test
from xairobust.runs import find_runs, read_json, read_run_meta, write_json_atomic
from xairobust.stages.attack import verify_robustness
from xairobust.stages.contract import NOT_IDENTITY, STAGES, Stage, StageIdentity, Written, write_document

ORDER = ("A2E", "A2B2E", "A2M2E", "aA2E", "aA2B2E")
# (model, training method) -> the paper's system name; runs of other combinations keep their label.
SYSTEMS = {("a2e", "standard"): "A2E", ("a2b2e", "standard"): "A2B2E", ("a2m2e", "a2m2e_joint"): "A2M2E",
           ("a2e", "bim_adv"): "aA2E", ("a2b2e", "bim_adv"): "aA2B2E"}
PAIRS = (("A2E", "A2M2E"), ("A2B2E", "A2M2E"))
EMOTIONS = ("valence", "energy", "tension", "anger", "fear", "happy", "sad", "tender")
# Colours as the paper's Fig. 3: black boxes orange, adversarially trained blue, bottleneck green.
COLOURS = {"A2E": "chocolate", "A2B2E": "chocolate", "aA2E": "cornflowerblue", "aA2B2E": "cornflowerblue",
           "A2M2E": "mediumseagreen"}


@dataclass
class MerRun:
    path: Path
    label: str
    seed: int
    entry: dict[str, Any]
    samples: dict[str, Any]  # numpy arrays of the per-sample file


def _candidates(results: list[dict[str, Any]], unconstrained: bool) -> list[dict[str, Any]]:
    return [r for r in results if r.get("attack") == NAME and bool(r.get("unconstrained_reference")) == unconstrained]


def _common_eps(per_run: list[list[dict[str, Any]]]) -> float | None:
    """The radius attacked in the most runs (ties: the smallest), for reports without --eps."""
    counts: dict[float, int] = {}
    for entries in per_run:
        for e in {float(r["eps"]) for r in entries}:
            counts[e] = counts.get(e, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda e: (-counts[e], e))


def collect(paths: list[str | Path], eps: float | None = None, unconstrained: bool = False) -> list[MerRun]:
    """Runs under ``paths`` with a bim-regression result at radius ``eps`` (others are skipped).

    Without ``eps``: the radius attacked in the most runs (a run may hold several radii).
    """
    from xairobust.runs import load_tensors

    found = []
    for path in find_runs(list(paths)):
        rob = RunLayout(path).robustness
        if rob.is_file():
            # Refuse results computed on other weights than the run's (one line, with the command).
            verify_robustness(path, f"xairobust attack --run {path} --attack {NAME}")
            cands = _candidates(read_json(rob).get("results", []), unconstrained)
            if cands:
                found.append((path, cands))
    if eps is None:
        eps = _common_eps([c for _, c in found])
    runs = []
    for path, cands in found:
        match = [r for r in cands if abs(float(r["eps"]) - eps) <= 1e-9 * max(1.0, abs(eps))]
        if not match:
            continue
        entry = match[-1]
        meta = read_run_meta(path)
        tensors = load_tensors(path / entry["file"])
        system = SYSTEMS.get((meta["model"]["name"], meta["method"]["name"]))
        label = meta.get("label") if meta.get("label") in ORDER else system or meta.get("label") or meta["method"]["name"]
        runs.append(MerRun(path, label, int(meta.get("seed", 0)), entry,
                           {k: v.double().numpy() for k, v in tensors.items()}))
    if not runs:
        radius = "" if eps is None else f" at eps {eps:g}"
        raise ConfigError(
            f"report: no run under {', '.join(map(str, paths))} has a {NAME} result{radius};"
            " run `xairobust mer-attack RUN` first"
        )
    return runs


def _labels(runs: list[MerRun]) -> list[str]:
    present = {r.label for r in runs}
    return [lab for lab in ORDER if lab in present] + sorted(present - set(ORDER))


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=0))


def table1(runs: list[MerRun]) -> pd.DataFrame:
    rows = []
    for lab in _labels(runs):
        group = [r for r in runs if r.label == lab]
        row: dict[str, Any] = {"system": lab, "seeds": len(group)}
        for key, name in (("corr_before", "avg_corr"), ("mae_before", "mae"), ("delta_mae", "delta_mae"),
                          ("corr_after", "corr_after"), ("snr_db", "snr_db")):
            vals = [r.entry[key] for r in group if r.entry.get(key) is not None]
            mean, std = _mean_std(vals) if vals else (float("nan"), float("nan"))
            row[f"{name}_mean"], row[f"{name}_std"] = mean, std
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int = 2) -> str:
    return "–" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table1_markdown(df: pd.DataFrame) -> str:
    head = ["System", "Avg. Corr.", "MAE", "ΔMAE", "Corr. after", "SNR (dB)", "seeds"]
    rows = [[str(r["system"]), _pm(r["avg_corr_mean"], r["avg_corr_std"]), _pm(r["mae_mean"], r["mae_std"]),
             _pm(r["delta_mae_mean"], r["delta_mae_std"], 4), _pm(r["corr_after_mean"], r["corr_after_std"]),
             _pm(r["snr_db_mean"], r["snr_db_std"], 1), str(r["seeds"])] for _, r in df.iterrows()]
    return "\n".join(markdown_grid(head, rows)) + "\n"


def table1_latex(df: pd.DataFrame) -> str:
    def pm(m: float, s: float, d: int = 2) -> str:
        return "--" if np.isnan(m) else f"${m:.{d}f} \\pm {s:.{d}f}$"

    head = ["System", r"Avg.\ Corr.", "MAE", r"$\Delta$MAE"]
    rows = [[tex_escape(r["system"]), pm(r["avg_corr_mean"], r["avg_corr_std"]), pm(r["mae_mean"], r["mae_std"]),
             pm(r["delta_mae_mean"], r["delta_mae_std"], 4)] for _, r in df.iterrows()]
    return latex_grid("lccc", head, rows)


def per_sample_statistic(run: MerRun, on: str) -> np.ndarray:
    """Each test excerpt's MAE over the outputs after the attack, or its increase (``on='delta'``)."""
    s = run.samples
    after = np.abs(s["pred_adv"] - s["targets"]).mean(1)
    if on == "after":
        return after
    return after - np.abs(s["pred_clean"] - s["targets"]).mean(1)


def per_excerpt_frame(runs: list[MerRun]) -> pd.DataFrame:
    """mer_samples.csv: one row per run x test excerpt with every value a t-test reads (``mae_after``
    for ``--ttest-on after``, ``delta_mae`` for ``delta``; ``mae_before`` beside them) and the run's
    weights sha256, so that scripts/check_results.py can recompute ttests.csv without the runs."""
    from xairobust.report.samples import with_weights

    frames = []
    for r in sorted(runs, key=lambda r: (_labels(runs).index(r.label), r.seed)):
        frames.append(pd.DataFrame({
            "label": r.label, "seed": r.seed, "run": str(r.path),
            "index": np.asarray(r.samples["indices"]).astype(np.int64),
            "mae_before": np.abs(r.samples["pred_clean"] - r.samples["targets"]).mean(1),
            "mae_after": per_sample_statistic(r, "after"), "delta_mae": per_sample_statistic(r, "delta")}))
    cols = ["label", "seed", "run", "index", "mae_before", "mae_after", "delta_mae"]
    return with_weights(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols), runs)


def paired_tests(runs: list[MerRun], on: str = "after", pairs=PAIRS, alpha: float = 0.05) -> pd.DataFrame:
    """Two-sided paired t-tests (the report's ``paired_test``, scipy's ttest_rel) with Bonferroni
    correction (the report's ``adjust_p``) over the pairs that can be tested."""
    if on not in ("after", "delta"):
        raise ConfigError(f"report: --ttest-on must be 'after' or 'delta', got '{on}'")
    by = {(r.label, r.seed): r for r in runs}
    rows = []
    for a, b in pairs:
        seeds = sorted({s for (lab, s) in by if lab == a} & {s for (lab, s) in by if lab == b})
        if not seeds:
            continue
        xa, xb = [], []
        for s in seeds:
            ra, rb = by[(a, s)], by[(b, s)]
            if not np.array_equal(ra.samples["indices"], rb.samples["indices"]):
                raise ConfigError(f"report: {ra.path} and {rb.path} attacked different test samples; cannot pair them")
            xa.append(per_sample_statistic(ra, on))
            xb.append(per_sample_statistic(rb, on))
        va, vb = np.concatenate(xa), np.concatenate(xb)
        t, p, _ = paired_test(va, vb, "ttest")
        rows.append({"a": a, "b": b, "on": on, "seeds": len(seeds), "n": len(va), "df": len(va) - 1,
                     "t": t, "p": p, "mean_a": float(va.mean()), "mean_b": float(vb.mean())})
    frame = pd.DataFrame(rows, columns=["a", "b", "on", "seeds", "n", "df", "t", "p", "mean_a", "mean_b"])
    frame.insert(frame.columns.get_loc("p") + 1, "p_bonferroni", adjust_p(frame["p"].to_numpy(float), "bonferroni"))
    frame["significant"] = frame["p_bonferroni"] < alpha
    return frame


def ttests_markdown(df: pd.DataFrame, alpha: float = 0.05) -> str:
    if df.empty:
        return "No pair could be tested (each pair needs runs of both labels with common seeds).\n"
    m = len(df)
    lines = [f"Two-sided paired t-tests, Bonferroni-corrected for {m} test(s) (α = {alpha}/{m}):", ""]
    for _, r in df.iterrows():
        lines.append(
            f"- {r['a']} vs. {r['b']} ({'MAE after attack' if r['on'] == 'after' else 'ΔMAE'} per excerpt,"
            f" {r['seeds']} seed(s)): t({r['df']}) = {r['t']:.2f}, p = {r['p']:.3g}"
            f" (Bonferroni {r['p_bonferroni']:.3g}){' *' if r['significant'] else ''}"
        )
    return "\n".join(lines) + "\n"


FIGURE_DPI = 200


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_delta_mae(runs: list[MerRun], path: Path) -> None:
    plt = _plt()
    labels = _labels(runs)
    data = [[r.entry["delta_mae"] for r in runs if r.label == lab] for lab in labels]
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2, 4))
    box = ax.boxplot(data, patch_artist=True, widths=0.6, medianprops={"color": "k", "linewidth": 2})
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for patch, lab in zip(box["boxes"], labels, strict=True):
        patch.set_facecolor(COLOURS.get(lab, "lightgrey"))
    for i, vals in enumerate(data, start=1):
        ax.scatter(np.full(len(vals), i), vals, s=12, c="k", zorder=3)
    ax.set_ylabel("ΔMAE (after − before attack)")
    ax.set_title("Impact of the BIM attack (lower = more robust)")
    fig.tight_layout()
    from xairobust.report.figures import save

    save(fig, path.parent, path.name, ["png", "pdf"], FIGURE_DPI)


def fig_scatter(runs: list[MerRun], emotions: list[str], models: list[str], seed: int | None, path: Path) -> list[str]:
    """Fig. 4: rows = emotions, columns = models; returns the runs shown."""
    plt = _plt()
    chosen = []
    for lab in models:
        group = sorted((r for r in runs if r.label == lab), key=lambda r: r.seed)
        if seed is not None:
            group = [r for r in group if r.seed == seed]
        if group:
            chosen.append(group[0])
    if not chosen:
        return []
    idx = []
    for emo in emotions:
        if emo not in EMOTIONS:
            raise ConfigError(f"report: unknown emotion '{emo}' (choose from {', '.join(EMOTIONS)})")
        idx.append(EMOTIONS.index(emo))
    fig, axs = plt.subplots(len(idx), len(chosen), figsize=(4 * len(chosen), 3.6 * len(idx)), squeeze=False,
                            sharex=True)
    for col, run in enumerate(chosen):
        s = run.samples
        for row, (k, emo) in enumerate(zip(idx, emotions, strict=True)):
            ax = axs[row, col]
            ax.scatter(s["targets"][:, k], s["pred_clean"][:, k], marker="x", c="cornflowerblue", label="clean")
            ax.scatter(s["targets"][:, k], s["pred_adv"][:, k], marker="o", facecolors="none",
                       edgecolors="chocolate", label="attacked")
            ax.plot([0, 1], [0, 1], ls="--", c="mediumseagreen")
            shown = np.concatenate([s["pred_clean"][:, k], s["pred_adv"][:, k]])
            if shown.min() < -0.1 or shown.max() > 1.1:
                # attacked predictions leave [0, 1]: an inset shows the clean ones in the
                # annotations' range (as the paper's Fig. 4)
                inset = ax.inset_axes([0.64, 0.04, 0.33, 0.33], xticklabels=[], yticklabels=[])
                inset.scatter(s["targets"][:, k], s["pred_clean"][:, k], marker="x", s=8, c="cornflowerblue")
                inset.plot([0, 1], [0, 1], ls="--", c="mediumseagreen")
                inset.set_xlim(0, 1)
                inset.set_ylim(0, 1)
            ax.set_title(f"{run.label} (seed {run.seed}) — {emo}")
            if col == 0:
                ax.set_ylabel("prediction")
            if row == len(idx) - 1:
                ax.set_xlabel("true annotation")
    axs[0, -1].legend()
    fig.tight_layout()
    from xairobust.report.figures import save

    save(fig, path.parent, path.name, ["png", "pdf"], FIGURE_DPI)
    return [str(r.path) for r in chosen]


@dataclass
class MerOptions:
    """What the MER section renders (write_report's arguments)."""

    paths: list[str | Path]
    eps: float | None = None
    unconstrained: bool = False
    emotions: tuple[str, ...] = ("tension", "tender")
    scatter_models: tuple[str, ...] = ("A2B2E", "A2M2E", "aA2B2E")
    scatter_seed: int | None = None
    ttest_on: str = "after"
    pairs: tuple[tuple[str, str], ...] = PAIRS


@dataclass
class MerData:
    runs: list[MerRun]
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json, filled by render


def collect_section(opts: MerOptions) -> MerData:
    """The runs with a bim-regression result (verified), after checking the options."""
    if opts.ttest_on not in ("after", "delta"):
        raise ConfigError(f"report: --ttest-on must be 'after' or 'delta', got '{opts.ttest_on}'")
    for emo in opts.emotions:
        if emo not in EMOTIONS:
            raise ConfigError(f"report: unknown emotion '{emo}' (choose from {', '.join(EMOTIONS)})")
    return MerData(collect(opts.paths, opts.eps, opts.unconstrained))


def render_section(opts: MerOptions, data: MerData, out: Path) -> None:
    """table1.{csv,md,tex}, ttests.{csv,md}, mer_samples.csv, figures/*.{png,pdf} and summary.json into ``out``."""
    runs = data.runs
    (out / "figures").mkdir(parents=True, exist_ok=True)
    df = table1(runs)
    (out / "table1.csv").write_text(df.to_csv(index=False))
    (out / "table1.md").write_text(table1_markdown(df))
    (out / "table1.tex").write_text(table1_latex(df))
    tests = paired_tests(runs, opts.ttest_on, opts.pairs)
    (out / "ttests.csv").write_text(tests.to_csv(index=False))
    per_excerpt_frame(runs).to_csv(out / MER_SAMPLES, index=False)  # the values behind ttests.csv
    (out / "ttests.md").write_text(ttests_markdown(tests))
    fig_delta_mae(runs, out / "figures" / "delta_mae_box")
    models = [m for m in opts.scatter_models if any(r.label == m for r in runs)] or _labels(runs)[:3]
    shown = fig_scatter(runs, list(opts.emotions), models, opts.scatter_seed, out / "figures" / "true_vs_pred")
    data.summary = {
        "eps": runs[0].entry["eps"],
        "unconstrained_reference": opts.unconstrained,
        "runs": [{"path": str(r.path), "label": r.label, "seed": r.seed, **{k: r.entry.get(k) for k in (
            "mae_before", "mae_after", "delta_mae", "corr_before", "corr_after", "snr_db", "eps", "steps")}}
                 for r in runs],
        "table1": json.loads(df.to_json(orient="records")),
        "ttests": json.loads(tests.to_json(orient="records")),
        "scatter_runs": shown,
    }
    write_json_atomic(out / "summary.json", data.summary)


def write_report(paths: list[str | Path], out: str | Path, **options: Any) -> dict[str, Any]:
    """The ``mer-report`` kind of the report pipeline (its one section, sections/mer.py) into
    ``out``; ``options`` are :class:`MerOptions` fields. Returns summary.json's content."""
    import xairobust.report.pipeline as pipeline
    from xairobust.report.sections import ReportContext

    ctx = ReportContext([], MerOptions(list(paths), **options))
    collected = pipeline.collect(ctx, "mer-report")
    written = pipeline.render(ctx, Path(out), collected, marker=None)
    summary = next(d.summary for _, d in collected if isinstance(d, MerData))
    # summary.json again, with its provenance block (the runs' files it was computed from), the
    # sha256 of every file written beside it (tables, t-tests, per-excerpt values, figures) and
    # its own body's: a hand-edited table or value is refused by is_current and check_results.
    o = ctx.conf  # the MerOptions
    conf = MerReportConfig(eps=o.eps, unconstrained_reference=o.unconstrained, emotions=list(o.emotions),
                           scatter_models=list(o.scatter_models), scatter_seed=o.scatter_seed, ttest_on=o.ttest_on,
                           pairs=[f"{a}:{b}" for a, b in o.pairs], runs=[str(p) for p in paths])
    beside = tuple(p for p in written if Path(p).name != "summary.json")
    write_document(Path(out) / "summary.json", Written(summary, beside), MerReportStage().resolve(Path(out), conf))
    return summary


@dataclass
class MerReportConfig:
    """The batch runner's report stage for MER zoos (``stages: {report: ...}``); mer-report's options."""

    eps: float | None = None
    unconstrained_reference: bool = False
    emotions: list[str] = field(default_factory=lambda: ["tension", "tender"])
    scatter_models: list[str] = field(default_factory=lambda: ["A2B2E", "A2M2E", "aA2B2E"])
    scatter_seed: int | None = None
    ttest_on: str = "after"
    pairs: list[str] = field(default_factory=lambda: ["A2E:A2M2E", "A2B2E:A2M2E"])
    runs: list[str] = field(default_factory=list, metadata=NOT_IDENTITY)  # run directories (set by the batch runner)


@STAGES.register("mer-report")
class MerReportStage(Stage, name="mer-report", role="report", Config=MerReportConfig, per="report", after=None, order=4):
    """The report slot of MER zoos (``stages: {report: mer-report}``): Table 1, figures, t-tests."""

    def inputs(self, run_dir: Path, conf: MerReportConfig) -> dict[str, Path]:
        from xairobust.report.sections import report_inputs

        return report_inputs("mer-report", find_runs(list(conf.runs)))  # robustness.json + the per-sample attack files

    def outputs(self, run_dir: Path, conf: MerReportConfig) -> list[Path]:
        return [Path(run_dir) / name for name in ("table1.md", "ttests.md", "summary.json")]

    def hint(self, run_dir: Path, conf: MerReportConfig | None = None) -> str:
        return f"xairobust mer-report RUNS... --out {run_dir}"

    def compute(self, run_dir: Path, conf: MerReportConfig, resolved: StageIdentity, quiet: bool) -> None:
        build_report([Path(p) for p in conf.runs], Path(run_dir), conf, quiet)  # writes summary.json with provenance


def build_report(run_dirs: list[Path], out: Path, conf: MerReportConfig, quiet: bool = False) -> list[Path]:
    """``build_report(run_dirs, out, conf)`` with the batch runner's signature."""
    pairs = tuple(tuple(p.split(":", 1)) for p in conf.pairs)
    write_report(list(run_dirs), out, eps=conf.eps, unconstrained=conf.unconstrained_reference,
                 emotions=tuple(conf.emotions), scatter_models=tuple(conf.scatter_models),
                 scatter_seed=conf.scatter_seed, ttest_on=conf.ttest_on, pairs=pairs)  # type: ignore[arg-type]
    return [Path(out) / name for name in ("table1.md", "ttests.md", "summary.json")]
