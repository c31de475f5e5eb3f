#!/usr/bin/env python
"""Re-check committed results: recompute every table's means and stars from its per-sample file.

    python scripts/check_results.py               # every folder under results/
    python scripts/check_results.py results/X ...  # some folders

For each folder it checks that the README records the command that produced it, and for every
report table below it (a folder with ``table.csv`` and ``stats.csv``) that:

* ``samples.csv`` (written by ``xairobust report``) is there and names the weights (sha256) of
  every run, the same hashes ``report.json`` recorded as the report's inputs;
* each table cell's mean, sd and n equal the per-run means of ``samples.csv`` averaged over runs;
* each test in ``stats.csv`` gives the same p value when recomputed here with scipy.stats on the
  pairs built from ``samples.csv``, the same multiplicity-adjusted p (statsmodels' multipletests)
  and the same decision, and every starred cell of ``table.csv`` is a significant test.

This file re-implements the pairing on purpose instead of importing the report package: it is an
independent check of the numbers, not a second run of the same code. A folder whose starred
values have no per-sample file (a manipulation or visualisation table, or a report made before
samples.csv existed) fails with a line saying so. Exit status 1 when any folder fails.
"""

from __future__ import annotations

import argparse
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
STAR_FILES = ("manipulation_stats.csv", "visual_stats.csv", "ttests.csv")  # starred, per-sample-free today
KEYS = ["explainer", "setting", "label"]


def _close(a: float, b: float) -> bool:
    if (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or math.isnan(b)):
        return True
    return bool(np.isclose(a, b, rtol=RTOL, atol=1e-12))


def _records_command(folder: Path) -> bool:
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(errors="replace")
    return bool(re.search(r"(^|\s|`)(xairobust|python\s+scripts/|bash\s+scripts/|\S+\.sh\b|python\s+\S+\.py)", text))


def _pairs(part: pd.DataFrame, label: str, baseline: str, matched: bool, pairing: str) -> tuple[np.ndarray, np.ndarray]:
    """The (method, baseline) value pairs of one test, built from the per-sample rows."""
    m = part[part["label"] == label].pivot_table(index=["seed", "index"], values="v", aggfunc="first")["v"]
    b = part[part["label"] == baseline].pivot_table(index=["seed", "index"], values="v", aggfunc="first")["v"]
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


def check_table(folder: Path) -> list[str]:
    """Problems of one report folder (table.csv + stats.csv + samples.csv); [] when it re-checks."""
    where = folder.as_posix()
    samples_path = folder / "samples.csv"
    if not samples_path.is_file():
        return [f"{where}: no samples.csv: its means and stars cannot be recomputed (regenerate with xairobust report)"]
    samples = pd.read_csv(samples_path)
    table = pd.read_csv(folder / "table.csv")
    stats = pd.read_csv(folder / "stats.csv")
    problems: list[str] = []

    if samples["weights_sha256"].isna().any():
        problems.append(f"{where}/samples.csv: rows without the weights sha256 of their run")
    report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
    recorded = {v["sha256"] for k, v in (report.get("provenance", {}).get("inputs") or {}).items()
                if k.endswith(":model.safetensors")}
    if recorded and not set(samples["weights_sha256"].dropna()) <= recorded:
        problems.append(f"{where}/samples.csv: weights sha256 not among the inputs report.json recorded")
    identity = report.get("provenance", {}).get("identity", {})
    alpha = float(identity.get("alpha", 0.05))

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

    # the tests, their adjustment, and the stars
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
            problems.append(f"{where}/stats.csv: {r.method} vs {r.baseline} {r.metric}: p {r.p_value} on {r.n_pairs}"
                            f" pairs, samples.csv gives {p} on {len(x)}")
    if len(stats):
        p_arr = np.asarray(p_values, float)
        adjusted = np.full(len(p_arr), math.nan)
        finite = np.isfinite(p_arr)
        method = str(stats["correction"].iloc[0])
        if finite.any():
            adjusted[finite] = p_arr[finite] if method == "none" else multipletests(p_arr[finite], method=method)[1]
        for r, adj in zip(stats.itertuples(index=False), adjusted, strict=True):
            significant = bool(np.isfinite(adj) and adj < alpha)
            if not _close(float(adj), float(r.p_adjusted)) or significant != bool(r.significant):
                problems.append(f"{where}/stats.csv: {r.method} {r.metric}: adjusted p {r.p_adjusted}"
                                f" (significant {r.significant}), recomputed {adj} ({significant})")
            col = f"{r.metric}_significant"
            row = table[(table["explainer"] == r.explainer) & (table["setting"] == r.setting) & (table["method"] == r.method)]
            if col in table.columns and len(row) and bool(row.iloc[0][col]) != significant:
                problems.append(f"{where}/table.csv: {r.method} {r.metric} star is {row.iloc[0][col]}, recomputed {significant}")
    return problems


def check_folder(folder: Path) -> list[str]:
    problems = [] if _records_command(folder) else [f"{folder.as_posix()}: README.md does not record the command"]
    tables = sorted({p.parent for p in folder.rglob("table.csv") if (p.parent / "stats.csv").is_file()})
    for table in tables:
        problems += check_table(table)
    for name in STAR_FILES:
        for path in sorted(folder.rglob(name)):
            problems.append(f"{path.as_posix()}: starred values without a per-sample file to recompute them from")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="result folders (default: every folder under results/)")
    args = parser.parse_args(argv)
    folders = args.folders or sorted(p for p in (Path(__file__).resolve().parents[1] / "results").iterdir() if p.is_dir())
    failed = 0
    for folder in folders:
        if not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
        problems = check_folder(folder)
        failed += bool(problems)
        print(f"{'ok  ' if not problems else 'FAIL'} {folder.as_posix()}")
        for line in problems:
            print(f"     {line}")
    print(f"{len(folders) - failed} of {len(folders)} folders re-check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
