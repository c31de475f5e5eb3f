#!/usr/bin/env python
"""Re-check committed results: recompute every table's means and stars from its per-sample file.

    python scripts/check_results.py               # every folder under results/
    python scripts/check_results.py results/X ...  # some folders

Every folder must record the command that produced it (a ``COMMAND.sh``, or a ``README.md`` that
names an ``xairobust`` / ``python`` / ``pytest`` / script command). Then, for every starred table
below it, the values are recomputed from the per-sample file beside it:

* score tables (``table.csv`` + ``stats.csv``, written by ``xairobust report``) from
  ``samples.csv``: each cell's mean, sd and n (per-run means, then over the runs), each test's p
  value recomputed here with scipy.stats on the pairs built from the samples, the
  multiplicity-adjusted p (statsmodels' multipletests over the file), the decision, every star;
* manipulation tables (``manipulation.csv`` + ``manipulation_stats.csv``, written by
  ``xairobust report`` / ``manipulation-report``) from ``manipulation_samples.csv``: each mean
  (over every sample of a label), the tests as above (one family per section) and every value
  and star of ``manipulation.md``'s tables;
* visualisation tables (``visual_table.csv`` + ``visual_stats.csv``) from ``visual_samples.csv``:
  class FID (mean over classes) and feature distance (mean over images) per run averaged over
  seeds, the tests, the stars;
* MER t-tests (``ttests.csv`` / ``ttests.md``, written by ``xairobust mer-report``) from
  ``mer_samples.csv``: every paired t-test recomputed with scipy.stats.ttest_rel on the excerpts
  of the seeds both systems share (paired by seed and excerpt), its n, df, t, p and means, the
  multiplicity adjustment over the file (the ``p_<method>`` column: statsmodels' multipletests),
  the decision and every value and star of ``ttests.md``;
* a per-sample file may be committed gzipped (``samples.csv.gz``: large files);
* every per-sample file names the weights (sha256) of each row's run; where ``report.json``
  recorded the report's inputs, they must be among them;
* every JSON document below the folder that records its own body's sha256 (``provenance.
  body_sha256``, docs/contributing.md) still has it: a hand-edited value in report.json, MER's
  summary.json or a run's robustness.json / scores JSON is a FAIL, naming the file.

This file re-implements the pairing on purpose instead of importing the report package: it is an
independent check of the numbers, not a second run of the same code.

A value that differs is a FAIL. A starred table without its per-sample file (older folders
predate them) is a FAIL too, unless the folder's README says plainly why
it cannot be re-checked, in a line ``Not re-checkable: <reason>``; the folder is then reported as
``not re-checkable: <reason>`` (never as ok), while whatever it does have is still checked.
Exit status: 0 when every folder re-checks, 1 when any fails, 3 when none fails but some are not
re-checkable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sst
from statsmodels.stats.multitest import multipletests

RTOL = 1e-9  # values are written with full precision; only summation order may differ
MISSING = "no per-sample file"  # marks a problem that a README's "Not re-checkable:" line can explain
KEYS = ["explainer", "setting", "label"]


def _close(a: float, b: float) -> bool:
    if (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or math.isnan(b)):
        return True
    return bool(np.isclose(a, b, rtol=RTOL, atol=1e-12))


COMMAND = re.compile(r"(^|\s|`)(xairobust|python\s+(-m\s+\S+|scripts/|\S+\.py)|pytest|bash\s+scripts/|\S+\.sh\b)")
NOT_RECHECKABLE = re.compile(r"^[\s>*_-]*not re-checkable[*_]*:[*_]*\s*(?P<reason>.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _readme(folder: Path) -> str:
    readme = folder / "README.md"
    return readme.read_text(errors="replace") if readme.is_file() else ""


def _records_command(folder: Path) -> bool:
    command = folder / "COMMAND.sh"
    if command.is_file() and COMMAND.search(command.read_text(errors="replace")):
        return True
    return bool(COMMAND.search(_readme(folder)))


def not_recheckable_reason(folder: Path) -> str | None:
    """The reason the folder's README gives for not being re-checkable, or None."""
    found = NOT_RECHECKABLE.search(_readme(folder))
    return found.group("reason").rstrip(".") if found else None


def _per_sample_file(folder: Path, name: str) -> Path | None:
    """``name`` in ``folder``, or its gzipped copy (large committed files are kept as ``.csv.gz``)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _missing(where: str, file: str, what: str) -> str:
    return f"{where}: {MISSING} ({file}): {what} cannot be recomputed"


def _read_samples(folder: Path, name: str, what: str, doc: dict) -> tuple[pd.DataFrame | None, list[str]]:
    """The per-sample file ``name`` of ``folder`` (or its .gz) and the problems of its weights column
    against ``doc`` (report.json / summary.json); (None, [missing]) when there is no such file."""
    path = _per_sample_file(folder, name)
    if path is None:
        return None, [_missing(folder.as_posix(), name, what)]
    samples = pd.read_csv(path)
    return samples, _check_weights(path.as_posix(), samples, doc)


def _pairs(part: pd.DataFrame, label: str, baseline: str, matched: bool, pairing: str) -> tuple[np.ndarray, np.ndarray]:
    """The (method, baseline) value pairs of one test, built from the per-sample rows."""
    # groupby, not pivot_table: pivot_table drops an all-NaN column, and a metric that is undefined
    # for every sample (e.g. a constant control map's faithfulness) must give empty pairs, not a KeyError.
    m = part[part["label"] == label].groupby(["seed", "index"])["v"].first()
    b = part[part["label"] == baseline].groupby(["seed", "index"])["v"].first()
    if matched:
        both = pd.concat([m.rename("m"), b.rename("b")], axis=1, join="inner").dropna()
        if pairing == "mean":
            both = both.groupby(level="index").mean()
        return both["m"].to_numpy(float), both["b"].to_numpy(float)
    mi = m.dropna().groupby(level="index").mean()
    bi = b.dropna().groupby(level="index").mean()
    both = pd.concat([mi.rename("m"), bi.rename("b")], axis=1, join="inner")
    return both["m"].to_numpy(float), both["b"].to_numpy(float)


def _p_value(x: np.ndarray, y: np.ndarray, test: str) -> float:
    if len(x) < 2:
        return math.nan
    if np.all(x - y == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float((sst.wilcoxon(x, y) if test == "wilcoxon" else sst.ttest_rel(x, y)).pvalue)


def _check_weights(where: str, samples: pd.DataFrame, report: dict) -> list[str]:
    """Every row names its run's weights; where report.json recorded its inputs, among them."""
    if "weights_sha256" not in samples.columns:
        return [f"{where}: no weights_sha256 column: the values do not say which model produced them"]
    problems = []
    shas = samples["weights_sha256"]
    if shas.isna().any() or not shas.dropna().astype(str).str.fullmatch("[0-9a-f]{64}").all():
        problems.append(f"{where}: rows without the weights sha256 of their run")
    if samples.groupby("run")["weights_sha256"].nunique().gt(1).any():
        problems.append(f"{where}: one run with two weights sha256")
    recorded = {v["sha256"] for k, v in (report.get("provenance", {}).get("inputs") or {}).items()
                if k.endswith(":model.safetensors")}
    if recorded and not set(shas.dropna()) <= recorded:
        problems.append(f"{where}: weights sha256 not among the inputs report.json recorded")
    return problems


def _check_tests(where: str, samples: pd.DataFrame, stats: pd.DataFrame, alpha: float) -> tuple[list[str], dict]:
    """Recompute every test of ``stats`` (one multiplicity family) from ``samples``.

    Returns (problems, {(explainer, setting, method, metric): recomputed significance})."""
    problems: list[str] = []
    p_values = []
    for r in stats.itertuples(index=False):
        part = samples[(samples["explainer"] == r.explainer) & (samples["setting"] == r.setting)
                       & (samples["metric"] == r.metric)]
        floor_corrected = bool(getattr(r, "floor_corrected", False)) and "floor" in part.columns
        part = part.assign(v=part["value"] - part["floor"] if floor_corrected else part["value"])
        x, y = _pairs(part, r.method, r.baseline, bool(r.seed_matched), str(r.pairing))
        p = _p_value(x, y, r.test)
        p_values.append(p)
        if len(x) != r.n_pairs or not _close(p, float(r.p_value)):
            problems.append(f"{where}: {r.explainer} {r.method} vs {r.baseline} {r.metric}: p {r.p_value} on"
                            f" {r.n_pairs} pairs, the samples give {p} on {len(x)}")
    significance: dict = {}
    if not len(stats):
        return problems, significance
    p_arr = np.asarray(p_values, float)
    adjusted = np.full(len(p_arr), math.nan)
    finite = np.isfinite(p_arr)
    method = str(stats["correction"].iloc[0])
    if finite.any():
        adjusted[finite] = p_arr[finite] if method == "none" else multipletests(p_arr[finite], method=method)[1]
    for r, adj in zip(stats.itertuples(index=False), adjusted, strict=True):
        significant = bool(np.isfinite(adj) and adj < alpha)
        significance[(r.explainer, r.setting, r.method, r.metric)] = significant
        if not _close(float(adj), float(r.p_adjusted)) or significant != bool(r.significant):
            problems.append(f"{where}: {r.explainer} {r.method} {r.metric}: adjusted p {r.p_adjusted}"
                            f" (significant {r.significant}), recomputed {adj} ({significant})")
    return problems, significance


def _report_json(folder: Path) -> dict:
    for here in (folder, *folder.parents):
        if (here / "report.json").is_file():
            return json.loads((here / "report.json").read_text())
        if here.name == "results":
            break
    return {}


def check_table(folder: Path) -> list[str]:
    """Problems of one report folder (table.csv + stats.csv + samples.csv); [] when it re-checks."""
    where = folder.as_posix()
    report = _report_json(folder)
    samples, problems = _read_samples(folder, "samples.csv", "its means and stars", report)
    if samples is None:
        return problems
    table = pd.read_csv(folder / "table.csv")
    stats = pd.read_csv(folder / "stats.csv")
    alpha = float(report.get("provenance", {}).get("identity", {}).get("alpha", 0.05))

    # means, sd and n: per-run means, then over the runs (seeds) of each row
    per_run = samples.groupby([*KEYS, "seed", "run", "metric"], sort=False)["value"].mean().reset_index()
    cells = per_run.groupby([*KEYS, "metric"], sort=False)["value"]
    for (explainer, setting, label, metric), values in cells:
        row = table[(table["explainer"] == explainer) & (table["setting"] == setting) & (table["method"] == label)]
        if row.empty or f"{metric}_mean" not in table.columns:
            problems.append(f"{where}/table.csv: no cell for {explainer} {setting} {label} {metric}")
            continue
        row = row.iloc[0]
        want = {"mean": values.mean(), "std": values.std(ddof=1) if values.count() > 1 else math.nan, "n": values.count()}
        for what, value in want.items():
            got = row.get(f"{metric}_{what}")
            if got is not None and not _close(float(got), float(value)):
                problems.append(f"{where}/table.csv: {label} {metric} {what} is {got}, samples.csv gives {value}")

    tests, significance = _check_tests(f"{where}/stats.csv", samples, stats, alpha)
    problems += tests
    for (explainer, setting, method, metric), significant in significance.items():
        col = f"{metric}_significant"
        row = table[(table["explainer"] == explainer) & (table["setting"] == setting) & (table["method"] == method)]
        if col in table.columns and len(row) and bool(row.iloc[0][col]) != significant:
            problems.append(f"{where}/table.csv: {method} {metric} star is {row.iloc[0][col]}, recomputed {significant}")
    return problems


# manipulation.md's column names -> metric (the report's COLUMNS / SUMMARY, written out again here)
MANIPULATION_LABELS = {
    "Spearman": "spearman", "Top-1%": "topk_1", "Top-5%": "topk_5", "Top-10%": "topk_10", "SSIM": "ssim",
    "CoM shift": "com_shift", "ρ(target) before": "target_spearman_before", "ρ(target)": "target_spearman",
    "Δρ(target)": "target_gain", "FSR": "fooled", "Pred. kept": "pred_unchanged", "‖δ‖∞": "norm_linf",
    "‖δ‖₂": "norm_l2", "Top-10% ↑": "topk_10", "Spearman ↑": "spearman", "FSR ↓": "fooled",
    "Δρ(target) ↓": "target_gain",
}
TITLE = re.compile(r"^\*\*(?P<setting>.+?): (?P<attack>\S+) attack on (?P<attacked>[^,*]+?)"
                   r"(?:, scored with (?P<explainer>[^*]+?))?\*\* \(mean")
CELL = re.compile(r"^(?P<value>-?[0-9.]+|nan)(?: ± (?:-?[0-9.]+|nan))?(?P<star>\*?)$")


def _key(attack: str, attacked: str, explainer: str) -> str:
    return f"{attack}/{attacked}" + ("" if explainer == attacked else f"→{explainer}")


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _check_manipulation_md(where: str, md: str, means: dict, significance: dict, labels: list[str]) -> list[str]:
    """Every value and star of manipulation.md's summary and per-attack tables."""
    problems, lines = [], md.splitlines()
    checked = 0

    def compare(key: str, setting: str, label: str, metric: str, cell: str) -> None:
        nonlocal checked
        found = CELL.match(cell)
        if cell in ("–", "") or not found:
            return
        checked += 1
        want = means.get((setting, key, label, metric))
        if want is None or f"{want:.3f}" != found["value"]:
            problems.append(f"{where}: {setting} {key} {label} {metric} shows {found['value']}, the samples give {want}")
        if bool(found["star"]) != significance.get((key, setting, label, metric), False):
            problems.append(f"{where}: {setting} {key} {label} {metric}: star {bool(found['star'])},"
                            f" recomputed {significance.get((key, setting, label, metric), False)}")

    setting = None
    for i, line in enumerate(lines):
        title = TITLE.match(line)
        plain = re.fullmatch(r"\*\*(.+)\*\*", line.strip())
        if title:  # a per-attack table: rows = labels, columns = metrics
            setting = title["setting"]
            explainer = (title["explainer"] or title["attacked"]).strip()
            key = _key(title["attack"], title["attacked"].strip(), explainer)
            head = _md_cells(lines[i + 2])
            metrics = [MANIPULATION_LABELS.get(h.rstrip(" ↑↓").strip()) for h in head[2:]]
            for row in lines[i + 4:]:
                if not row.startswith("|"):
                    break
                cells = _md_cells(row)
                for metric, cell in zip(metrics, cells[2:], strict=False):
                    if metric:
                        compare(key, setting, cells[0], metric, cell)
        elif plain and i + 2 < len(lines) and lines[i + 2].startswith("| Attack / explainer"):
            setting = plain.group(1)  # a summary table: columns = "<metric name> <label>"
            head = _md_cells(lines[i + 2])[1:]
            columns = []
            for h in head:
                lab = next((lab for lab in sorted(labels, key=len, reverse=True) if h.endswith(" " + lab)), None)
                name = h[: -len(lab) - 1] if lab else h
                columns.append((MANIPULATION_LABELS.get(name), lab))
            for row in lines[i + 4:]:
                if not row.startswith("|"):
                    break
                cells = _md_cells(row)
                for (metric, lab), cell in zip(columns, cells[1:], strict=False):
                    if metric and lab:
                        compare(cells[0], setting, lab, metric, cell)
    if not checked:
        problems.append(f"{where}: no table values found to check")
    return problems


def check_manipulation(folder: Path) -> list[str]:
    """manipulation.csv / _stats.csv / .md against manipulation_samples.csv."""
    where = folder.as_posix()
    report = _report_json(folder)
    samples, problems = _read_samples(folder, "manipulation_samples.csv", "the manipulation means and stars", report)
    if samples is None:
        return problems
    table = pd.read_csv(folder / "manipulation.csv")
    stats = pd.read_csv(folder / "manipulation_stats.csv")
    alpha = float(report.get("provenance", {}).get("identity", {}).get("alpha", 0.05))

    # the table's means pool every sample (and seed) of a label
    samples["key"] = [_key(a, b, c) for a, b, c in zip(samples["attack"], samples["attacked"], samples["explainer"], strict=True)]
    means = samples.groupby(["setting", "key", "label", "metric"])["value"].mean().to_dict()
    for r in table.to_dict("records"):
        key = _key(r["attack"], r["attacked"], r["explainer"])
        for metric in (c for c in table.columns if c in MANIPULATION_LABELS.values()):
            want = means.get((r["setting"], key, r["label"], metric))
            got = r[metric]
            if want is None and pd.isna(got):
                continue
            if want is None or not _close(float(got), float(want)):
                problems.append(f"{where}/manipulation.csv: {key} {r['label']} {metric} is {got}, the samples give {want}")

    tested = samples.assign(explainer=samples["key"])
    tests, significance = _check_tests(f"{where}/manipulation_stats.csv", tested, stats, alpha)
    problems += tests
    if (folder / "manipulation.md").is_file():
        problems += _check_manipulation_md(f"{where}/manipulation.md", (folder / "manipulation.md").read_text(),
                                           means, significance, list(samples["label"].unique()))
    return problems


VISUAL_MEANS = {"class_fid": "class_fid_mean", "feature_distance": "feature_distance_mean"}


def check_visual(folder: Path) -> list[str]:
    """visual_table.csv / visual_stats.csv against visual_samples.csv."""
    where = folder.as_posix()
    report = _report_json(folder)
    samples, problems = _read_samples(folder, "visual_samples.csv", "the class FID / feature distance means and stars", report)
    if samples is None:
        return problems
    table = pd.read_csv(folder / "visual_table.csv")
    stats = pd.read_csv(folder / "visual_stats.csv")
    alpha = float(report.get("provenance", {}).get("identity", {}).get("alpha", 0.05))

    # a run's value is its mean over classes / images; the table averages the runs (seeds)
    per_run = samples.groupby(["explainer", "setting", "label", "run", "metric"])["value"].mean()
    cells = per_run.groupby(level=["explainer", "setting", "label", "metric"]).mean()
    for (extractor, setting, label, metric), want in cells.items():
        row = table[(table["extractor"] == extractor) & (table["setting"] == setting) & (table["method"] == label)]
        column = VISUAL_MEANS.get(metric)
        if row.empty or column not in table.columns:
            problems.append(f"{where}/visual_table.csv: no cell for {extractor} {setting} {label} {metric}")
            continue
        got = float(row.iloc[0][column])
        if not np.isclose(got, want, rtol=1e-6, atol=1e-9):  # the table's value comes from the run's JSON
            problems.append(f"{where}/visual_table.csv: {extractor} {label} {metric} is {got}, the samples give {want}")

    tests, significance = _check_tests(f"{where}/visual_stats.csv", samples, stats, alpha)
    problems += tests
    for (extractor, setting, method, metric), significant in significance.items():
        col = f"{metric}_significant"
        row = table[(table["extractor"] == extractor) & (table["setting"] == setting) & (table["method"] == method)]
        if col in table.columns and len(row) and bool(row.iloc[0][col]) != significant:
            problems.append(f"{where}/visual_table.csv: {extractor} {method} {metric} star is {row.iloc[0][col]},"
                            f" recomputed {significant}")
    return problems


MER_VALUE = {"after": "mae_after", "delta": "delta_mae"}  # ttests.csv's ``on`` -> the column it tests
MER_LINE = re.compile(r"^- (?P<a>\S+) vs\. (?P<b>\S+) \(.*\): t\((?P<df>\d+)\) = (?P<t>\S+), p = (?P<p>\S+)"
                      r" \((?P<method>\w+) (?P<adj>\S+)\)(?P<star> \*)?$")


def _mer_test(samples: pd.DataFrame, a: str, b: str, column: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(values of a, values of b, seeds) paired by seed and excerpt, the seeds both systems have."""
    part = samples.set_index(["label", "seed", "index"])[column].sort_index()
    seeds = sorted(set(samples.loc[samples["label"] == a, "seed"]) & set(samples.loc[samples["label"] == b, "seed"]))
    xa, xb = [], []
    for seed in seeds:
        both = pd.concat([part.loc[(a, seed)].rename("a"), part.loc[(b, seed)].rename("b")], axis=1, join="outer")
        if both.isna().any().any():
            return np.array([]), np.array([]), -1  # not the same excerpts: the report refuses to pair them
        xa.append(both["a"].to_numpy(float))
        xb.append(both["b"].to_numpy(float))
    return (np.concatenate(xa) if xa else np.array([])), (np.concatenate(xb) if xb else np.array([])), len(seeds)


def check_mer(folder: Path, alpha: float = 0.05) -> list[str]:
    """ttests.csv (and ttests.md) against mer_samples.csv."""
    where = folder.as_posix()
    summary = folder / "summary.json"
    samples, problems = _read_samples(folder, "mer_samples.csv", "the MER t-tests",
                                      json.loads(summary.read_text()) if summary.is_file() else {})
    if samples is None:
        return problems
    tests = pd.read_csv(folder / "ttests.csv")
    adjusted_cols = [c for c in tests.columns if c.startswith("p_")]
    if len(adjusted_cols) != 1:
        return [*problems, f"{where}/ttests.csv: expected one adjusted p column (p_<method>), found {adjusted_cols}"]
    adj_col = adjusted_cols[0]
    method = adj_col[2:]
    recomputed = []
    for r in tests.to_dict("records"):
        name = f"{where}/ttests.csv: {r['a']} vs {r['b']} ({r['on']})"
        column = MER_VALUE.get(str(r["on"]))
        if column is None:
            problems.append(f"{name}: unknown 'on' value {r['on']!r}")
            recomputed.append(None)
            continue
        xa, xb, seeds = _mer_test(samples, str(r["a"]), str(r["b"]), column)
        if seeds < 0:
            problems.append(f"{name}: the two systems' samples are not the same excerpts")
            recomputed.append(None)
            continue
        res = sst.ttest_rel(xa, xb)
        got = {"seeds": seeds, "n": len(xa), "df": len(xa) - 1, "t": float(res.statistic), "p": float(res.pvalue),
               "mean_a": float(xa.mean()), "mean_b": float(xb.mean())}
        for key, value in got.items():
            if not _close(float(r[key]), float(value)):
                problems.append(f"{name}: {key} is {r[key]}, mer_samples.csv gives {value}")
        recomputed.append(got)
    ps = np.array([g["p"] if g else math.nan for g in recomputed], float)
    finite = np.isfinite(ps)
    adjusted = np.full(len(ps), math.nan)
    if finite.any():
        adjusted[finite] = multipletests(ps[finite], method=method)[1]
    for r, adj in zip(tests.to_dict("records"), adjusted, strict=True):
        significant = bool(np.isfinite(adj) and adj < alpha)
        if not _close(float(r[adj_col]), float(adj)) or significant != bool(r["significant"]):
            problems.append(f"{where}/ttests.csv: {r['a']} vs {r['b']}: {adj_col} {r[adj_col]} (significant"
                            f" {r['significant']}), recomputed {adj} ({significant})")
    md = folder / "ttests.md"
    if md.is_file():
        problems += _check_mer_md(f"{where}/ttests.md", md.read_text(), tests, recomputed, adjusted, alpha)
    return problems


def _check_mer_md(where: str, md: str, tests: pd.DataFrame, recomputed: list, adjusted: np.ndarray,
                  alpha: float) -> list[str]:
    """Every t, p, adjusted p and star of ttests.md (the report's formats: t .2f, p .3g)."""
    problems = []
    lines = [MER_LINE.match(line) for line in md.splitlines()]
    lines = [m for m in lines if m]
    if len(lines) != len(tests):
        return [f"{where}: {len(lines)} test line(s), ttests.csv has {len(tests)}"]
    for m, got, adj in zip(lines, recomputed, adjusted, strict=True):
        if got is None:
            continue
        want = {"df": str(got["df"]), "t": f"{got['t']:.2f}", "p": f"{got['p']:.3g}", "adj": f"{adj:.3g}"}
        for key, value in want.items():
            if m[key] != value:
                problems.append(f"{where}: {m['a']} vs {m['b']}: {key} shows {m[key]}, the samples give {value}")
        if bool(m["star"]) != bool(np.isfinite(adj) and adj < alpha):
            problems.append(f"{where}: {m['a']} vs {m['b']}: star {bool(m['star'])}, recomputed {not m['star']}")
    return problems


def _body_sha256(doc: dict) -> str:
    """sha256 of a document's canonical JSON (sorted keys, no whitespace, ASCII escapes) without
    its ``provenance.body_sha256`` field: re-implemented here, as docs/contributing.md defines it."""
    body = dict(doc)
    body["provenance"] = {k: v for k, v in doc["provenance"].items() if k != "body_sha256"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def check_documents(folder: Path) -> list[str]:
    """Every JSON document below ``folder`` that records its body's sha256 (in its provenance
    block) must still have it: a hand-edited value (a robust accuracy, a mean, a row of
    summary.json) is a FAIL. Documents written before body hashes carry none and are not checked."""
    problems = []
    for path in sorted(folder.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue  # not a document of the tool's (one that names it is refused where it is read)
        block = doc.get("provenance") if isinstance(doc, dict) else None
        if not isinstance(block, dict) or "body_sha256" not in block:
            continue
        try:
            same = block["body_sha256"] == _body_sha256(doc)
        except (ValueError, RecursionError):  # NaN / Infinity, or nested too deeply: never written by the tool
            same = False
        if not same:
            problems.append(f"{path.as_posix()} was changed after it was written (its content no longer has the"
                            " sha256 recorded in it)")
    return problems


def check_folder(folder: Path) -> list[str]:
    """Every problem of one results folder ([] when it re-checks), missing per-sample files included."""
    problems = [] if _records_command(folder) else [f"{folder.as_posix()}: README.md does not record the command"]
    problems += check_documents(folder)
    for table in sorted({p.parent for p in folder.rglob("table.csv") if (p.parent / "stats.csv").is_file()}):
        problems += check_table(table)
    for stats in sorted(folder.rglob("manipulation_stats.csv")):
        problems += check_manipulation(stats.parent)
    for stats in sorted(folder.rglob("visual_stats.csv")):
        if (stats.parent / "visual_table.csv").is_file():
            problems += check_visual(stats.parent)
    for tests in sorted(folder.rglob("ttests.csv")):
        problems += check_mer(tests.parent)
    return problems


def folder_status(folder: Path) -> tuple[str, list[str]]:
    """("ok" | "FAIL" | "not re-checkable: <reason>", the problem lines)."""
    problems = check_folder(folder)
    reason = not_recheckable_reason(folder)
    if reason is None:
        return ("FAIL" if problems else "ok"), problems
    wrong = [p for p in problems if MISSING not in p]
    if wrong:
        return "FAIL", problems
    if not problems:
        return "FAIL", [f"{folder.as_posix()}: README says not re-checkable ({reason}), but every value re-checks"]
    return f"not re-checkable: {reason}", problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="result folders (default: every folder under results/)")
    args = parser.parse_args(argv)
    folders = args.folders or sorted(p for p in (Path(__file__).resolve().parents[1] / "results").iterdir() if p.is_dir())
    counts = {"ok": 0, "FAIL": 0, "not": 0}
    for folder in folders:
        if not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
        status, problems = folder_status(folder)
        counts["not" if status.startswith("not") else status] += 1
        if status.startswith("not"):
            print(f"n/a  {folder.as_posix()}: {status}")
        else:
            print(f"{'ok  ' if status == 'ok' else status} {folder.as_posix()}")
        for line in problems:
            print(f"     {line}")
    print(f"{counts['ok']} of {len(folders)} folders re-check, {counts['not']} not re-checkable, {counts['FAIL']} fail")
    return 1 if counts["FAIL"] else (3 if counts["not"] else 0)


if __name__ == "__main__":
    sys.exit(main())
