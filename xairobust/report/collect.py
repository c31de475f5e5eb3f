"""Collect run directories into pandas frames: one record per run, one row per sample x metric.

Reads only the files of the shared formats: ``run.json`` (label, method, seed, clean_accuracy,
test.mae, dataset/model names), ``robustness.json`` (robust_accuracy; for regression the headline
entry's delta_mae), ``scores/<explainer>.csv``
(index,target,metric,value) and, for metric-vs-epoch curves,
``scores/epochs/<explainer>_epoch_NNN.csv`` (same columns). A malformed file is a one-line
RunError naming it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xairobust.errors import ConfigError, RunError
from xairobust.layout import RunLayout
from xairobust.registry import did_you_mean
from xairobust.runs import WEIGHTS, file_sha256, find_runs, read_json, read_run_meta
from xairobust.stages.contract import StaleError, changed_body, verify_artefact

SCORE_COLUMNS = ("index", "target", "metric", "value")
EPOCH_SCORES = re.compile(r"^(?P<explainer>.+)_epoch_(?P<epoch>\d+)\.csv$")


@dataclass(frozen=True)
class RunRecord:
    """What a report needs from one run directory."""

    path: Path
    label: str
    method: str
    seed: int
    dataset: str
    model: str
    clean_accuracy: float  # NaN when the run has none (regression)
    robust_accuracy: float  # NaN when robustness.json is absent
    clean_mae: float = math.nan  # regression: run.json test.mae
    delta_mae: float = math.nan  # regression: the headline attack's MAE after - before

    @property
    def setting(self) -> str:
        """Runs are compared only within one dataset/model setting."""
        return "/".join(p for p in (self.dataset, self.model) if p)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    def score_file(self, explainer: str) -> Path:
        return self.layout.score(explainer)[0]

    def columns(self) -> dict[str, Any]:
        """The run's columns in every section's long frame (what a row is compared by)."""
        return {"setting": self.setting, "label": self.label, "method": self.method, "seed": self.seed,
                "run": str(self.path)}

    def explainers(self) -> list[str]:
        folder = self.path / RunLayout.SCORES
        return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []

    def epoch_score_files(self, explainer: str) -> dict[int, Path]:
        folder = self.path / RunLayout.SCORES / RunLayout.EPOCHS
        found: dict[int, Path] = {}
        if folder.is_dir():
            for p in folder.glob("*.csv"):
                m = EPOCH_SCORES.match(p.name)
                if m and m["explainer"] == explainer:
                    found[int(m["epoch"])] = p
        return dict(sorted(found.items()))


def _number(value: Any, where: str) -> float:
    """A float from JSON, NaN for null/absent; anything else is a RunError."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError(f"{where} must be a number or null, got {value!r}")
    return float(value)


def _name(value: Any) -> str:
    """``{"name": "pgd", ...}`` or ``"pgd"`` -> ``"pgd"``."""
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value is not None else ""


def read_run(path: Path) -> RunRecord:
    """One run directory's record; missing or malformed run.json/robustness.json -> RunError."""
    meta = read_run_meta(path)
    where = RunLayout(path).run_json
    method = _name(meta.get("method"))
    if not method:
        raise RunError(f"{where}: missing field 'method'")
    seed = meta.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunError(f"{where}: 'seed' must be an integer, got {seed!r}")
    label = meta.get("label") or method
    if not isinstance(label, str):
        raise RunError(f"{where}: 'label' must be a string, got {label!r}")
    clean = _number(meta.get("clean_accuracy"), f"{where}: 'clean_accuracy'")
    test = meta.get("test") if isinstance(meta.get("test"), dict) else {}
    mae = _number(test.get("mae"), f"{where}: 'test.mae'")
    robust = delta = math.nan
    rob_path = RunLayout(path).robustness
    if rob_path.is_file():
        rob = read_json(rob_path)
        robust = _number(rob.get("robust_accuracy"), f"{rob_path}: 'robust_accuracy'")
        if math.isnan(clean):
            clean = _number(rob.get("clean_accuracy"), f"{rob_path}: 'clean_accuracy'")
        delta = _headline_delta_mae(rob, rob_path)
    return RunRecord(
        path=path, label=label, method=method, seed=seed,
        dataset=_name(meta.get("dataset")), model=_name(meta.get("model")),
        clean_accuracy=clean, robust_accuracy=robust, clean_mae=mae, delta_mae=delta,
    )


def _headline_delta_mae(rob: dict[str, Any], where: Path) -> float:
    """ΔMAE of the headline (attack, norm, eps) entry of a regression robustness.json, else NaN."""
    results = rob.get("results")
    if not isinstance(results, list):
        return math.nan
    for entry in results:
        if (isinstance(entry, dict) and entry.get("attack") == rob.get("headline")
                and entry.get("norm") == rob.get("headline_norm") and entry.get("eps") == rob.get("headline_eps")):
            return _number(entry.get("delta_mae"), f"{where}: 'delta_mae'")
    return math.nan


def collect_runs(paths: list[str | Path], labels: dict[str, str] | None = None) -> list[RunRecord]:
    """Records of every run directory among/below ``paths``; none found or duplicates -> error.

    ``labels`` maps a run directory (resolved path) to the row label to use instead of its
    run.json's (a zoo's ``run:`` entry with ``label:``)."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise RunError(f"report: no such file or directory: {', '.join(missing)}")
    dirs = find_runs(list(paths))
    if not dirs:
        raise RunError(
            f"report: no run directories (with run.json) in {', '.join(map(str, paths)) or '(nothing given)'};"
            " create them with `xairobust train`"
        )
    runs = [read_run(d) for d in dirs]
    if labels:
        import dataclasses

        wanted = {str(Path(k).resolve()): v for k, v in labels.items()}
        runs = [dataclasses.replace(r, label=wanted.get(str(r.path.resolve()), r.label)) for r in runs]
    seen: dict[tuple[str, str, int], Path] = {}
    for r in runs:
        key = (r.setting, r.label, r.seed)
        if key in seen:
            raise ConfigError(
                f"report: runs {seen[key]} and {r.path} both are '{r.label}' with seed {r.seed}"
                f"{' on ' + r.setting if r.setting else ''}; give one a different --label or seed,"
                " or leave one out"
            )
        seen[key] = r.path
    return runs


def read_scores(path: Path) -> pd.DataFrame:
    """A scores CSV (index,target,metric,value) validated; value may be NaN (a dropped sample)."""
    return read_long_csv(path, SCORE_COLUMNS, ("index", "metric"), "scores")


def read_long_csv(path: Path, columns: tuple[str, ...], unique: tuple[str, ...], what: str,
                  split_size: int | None = None, numeric: tuple[str, ...] = ("index", "target", "value"),
                  integer: tuple[str, ...] = ("index",)) -> pd.DataFrame:
    """A per-sample CSV written by a stage (scores, manipulation, visualisation metrics), checked.

    One-line RunError naming ``path`` for: unreadable bytes, missing columns, no rows (a
    header-only file), a non-numeric ``numeric`` cell (``value`` may be empty: NaN, a dropped
    sample), a non-integer or negative ``integer`` cell, an index beyond ``split_size`` (the test
    split the stage drew from), and a row repeated on the ``unique`` columns (duplicated rows
    would double the samples behind every mean, standard deviation and test).
    """
    if not path.is_file():
        raise RunError(f"missing file: {path}")
    try:
        df = pd.read_csv(path, dtype={c: str for c in columns if c not in numeric})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"{path}: not a valid {what} CSV ({first})") from None
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise RunError(f"{path}: missing column(s) {', '.join(absent)}; expected {','.join(columns)}")
    if df.empty:
        raise RunError(f"{path}: no {what} rows (only a header)")
    numeric = tuple(c for c in numeric if c in columns)
    for col in numeric:
        converted = pd.to_numeric(df[col], errors="coerce")
        bad = converted.isna() & df[col].notna() if col == "value" else converted.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunError(f"{path}: line {row + 2}: '{col}' is not a number ({df[col].iloc[row]!r})")
        df[col] = converted
    if "target" in numeric and "target" in df and (df["target"] == df["target"].round()).all():
        df["target"] = df["target"].astype(np.int64)  # an output index, as the stage wrote it
    for col in integer:
        values = df[col].to_numpy(dtype=float)
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise RunError(f"{path}: '{col}' must hold integer sample indices")
        if (values < 0).any() or (split_size is not None and (values >= split_size).any()):
            row = int(np.flatnonzero((values < 0) | (values >= (split_size if split_size is not None else np.inf)))[0])
            limit = f" (the test split has {split_size})" if split_size is not None else ""
            raise RunError(f"{path}: line {row + 2}: sample index {int(values[row])} is outside the test split{limit}")
        df[col] = df[col].astype(np.int64)
    for col in columns:
        if col not in numeric:
            df[col] = df[col].astype(str)
    dup = df.duplicated(list(unique))
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        if tuple(unique) == ("index", "metric"):
            raise RunError(f"{path}: line {row + 2}: sample {df['index'].iloc[row]} scored twice for '{df['metric'].iloc[row]}'")
        what_row = ", ".join(f"{c} {df[c].iloc[row]}" for c in unique)
        raise RunError(f"{path}: line {row + 2}: a duplicated row ({what_row} appears twice)")
    return df[list(columns)].astype({"value": float})


def available_explainers(runs: list[RunRecord]) -> list[str]:
    return sorted({e for r in runs for e in r.explainers()})


def resolve_explainers(runs: list[RunRecord], wanted: list[str]) -> list[str]:
    """The explainers to report: ``wanted`` (each must have scores somewhere) or all found."""
    found = available_explainers(runs)
    if not found:
        raise RunError(
            "report: none of the runs has scores (scores/<explainer>.csv);"
            " run `xairobust explain` and `xairobust score` first"
        )
    for name in wanted:
        if name not in found:
            raise ConfigError(
                f"report: --explainer '{name}': no run has scores/{name}.csv.{did_you_mean(name, found)}"
                f" Scored: {', '.join(found)}"
            )
    return list(wanted) or found


def collect_scores(runs: list[RunRecord], explainers: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Long frame (explainer, setting, label, method, seed, run, index, target, metric, value).

    Returns the frame and notes about runs without scores for an explainer (they are left out of
    that explainer's table, not an error: a zoo may be partly scored).
    """
    frames, notes = [], []
    for explainer in explainers:
        for r in runs:
            path = r.score_file(explainer)
            if not path.is_file():
                notes.append(f"{r.path} has no scores/{explainer}.csv; left out of the {explainer} table")
                continue
            df = read_scores(path)
            df.insert(0, "explainer", explainer)
            df.insert(1, "setting", r.setting)
            df.insert(2, "label", r.label)
            df.insert(3, "method", r.method)
            df.insert(4, "seed", r.seed)
            df.insert(5, "run", str(r.path))
            frames.append(df)
    return pd.concat(frames, ignore_index=True), notes


def collect_epoch_scores(runs: list[RunRecord], explainers: list[str]) -> pd.DataFrame:
    """Per-epoch scores (mean over samples per run x epoch x metric); empty when no run has any."""
    rows = []
    for explainer in explainers:
        for r in runs:
            for epoch, path in r.epoch_score_files(explainer).items():
                df = read_scores(path)
                means = df.groupby("metric", sort=False)["value"].mean()
                for metric, value in means.items():
                    rows.append({"explainer": explainer, "setting": r.setting, "label": r.label,
                                 "seed": r.seed, "run": str(r.path), "epoch": epoch,
                                 "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["explainer", "setting", "label", "seed", "run", "epoch", "metric", "value"])


def run_frame(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run: setting, label, method, seed, run and the accuracy/error columns."""
    return pd.DataFrame(
        [{"setting": r.setting, "label": r.label, "method": r.method, "seed": r.seed, "run": str(r.path),
          "clean_accuracy": r.clean_accuracy, "robust_accuracy": r.robust_accuracy,
          "clean_mae": r.clean_mae, "delta_mae": r.delta_mae} for r in runs]
    )


# -- the provenance chain ------------------------------------------------------------------------


def verify_run(run: RunRecord, explainers: list[str]) -> None:
    """Refuse (StaleError: one line naming the file and the command that recomputes it) to
    report a run whose robustness.json, attributions or scores were computed from other weights
    or other attributions than the ones in the run directory now.

    The chain: run.json -> model.safetensors -> robustness.json, attributions/<e>.json ->
    scores/<e>.json (and checkpoints -> scores/epochs/*). Documents written before provenance
    blocks existed are checked against the hashes they recorded (weights_sha256, attributions.sha256).
    """
    path, layout = run.path, run.layout
    weights = layout.weights
    meta = read_run_meta(path)
    retrain = f"xairobust train --config {layout.config_yaml} --out {path} --force"
    if not weights.is_file():
        raise StaleError(f"{path}: no {WEIGHTS}, so nothing in it can be verified; retrain it with `{retrain}`")
    edited = changed_body(meta, layout.run_json)  # its clean accuracy, method, seed are reported
    if edited is not None:
        raise StaleError(f"{edited}; retrain it with `{retrain}`")
    recorded = meta.get("weights_sha256")
    if recorded and file_sha256(weights) != recorded:
        raise StaleError(f"{weights} does not match the checksum in {layout.run_json}; retrain it with `{retrain}`")
    if layout.robustness.is_file():
        from xairobust.stages.attack import verify_robustness

        verify_robustness(path)
    for explainer in explainers:
        scores, score_json = layout.score(explainer)
        attr_t, attr_j = layout.attribution(explainer)
        score_hint = f"xairobust score --run {path} --explainer {explainer}"
        explain_hint = f"xairobust explain --run {path} --explainer {explainer}"
        if attr_j.is_file():
            adoc = read_json(attr_j)
            run_block = adoc.get("run") if isinstance(adoc.get("run"), dict) else {}
            verify_artefact(attr_j, path, explain_hint, legacy={"weights": (run_block.get("weights_sha256"), weights)})
        if not scores.is_file():
            continue
        if not score_json.is_file():
            raise StaleError(f"{scores} has no {score_json.name} recording what it was computed from; recompute it with `{score_hint}`")
        sdoc = read_json(score_json)
        attr_block = sdoc.get("attributions") if isinstance(sdoc.get("attributions"), dict) else {}
        verify_artefact(score_json, path, score_hint, legacy={"attributions": (attr_block.get("sha256"), attr_t)})
        if not attr_j.is_file():
            raise StaleError(
                f"{scores} was computed from {attr_t}, whose {attr_j.name} (the weights it was computed from) is missing;"
                f" recompute it with `{explain_hint}` and `{score_hint}`"
            )
        for epoch, csv_path in run.epoch_score_files(explainer).items():
            _verify_epoch_scores(path, epoch, csv_path)


def _verify_epoch_scores(run_dir: Path, epoch: int, csv_path: Path) -> None:
    """A per-epoch score file must name the checkpoint it was computed on, unchanged."""
    hint = f"xairobust score-epochs {run_dir}"
    doc_path = csv_path.with_suffix(".json")
    doc = read_json(doc_path) if doc_path.is_file() else {}
    if isinstance(doc.get("provenance"), dict):
        verify_artefact(doc_path, run_dir, hint)
        return
    info = doc.get("epoch_scores") if isinstance(doc.get("epoch_scores"), dict) else {}
    sha = info.get("checkpoint_sha256")
    ckpt = RunLayout(run_dir).checkpoint(epoch)
    if not sha:
        raise StaleError(f"{csv_path} records no checkpoint it was computed on; recompute it with `{hint}`")
    if not ckpt.is_file() or file_sha256(ckpt) != sha:
        raise StaleError(f"{csv_path} is stale: {ckpt} changed or is gone since it was scored; recompute it with `{hint}`")


RUN_FILES = (RunLayout.RUN_JSON, RunLayout.WEIGHTS, RunLayout.ROBUSTNESS)
RUN_FOLDERS = (RunLayout.SCORES, RunLayout.ATTRIBUTIONS, RunLayout.MANIPULATION, RunLayout.VISUALISATIONS)


def run_keys(run_paths: list[Path]) -> dict[Path, str]:
    """The name each run goes by in a report's provenance: the first 16 hex digits of its
    weights' sha256 (of its run.json where it has no weights), never its path, so a report of
    runs that were moved, mounted elsewhere or named by another relative path keeps its identity.
    Runs with the same weights (copies) are told apart by their order: ``<sha>#2``, ``<sha>#3``."""
    keys: dict[Path, str] = {}
    seen: dict[str, int] = {}
    for path in map(Path, run_paths):
        layout = RunLayout(path)
        source = layout.weights if layout.weights.is_file() else layout.run_json
        base = file_sha256(source)[:16] if source.is_file() else "no-weights"
        seen[base] = seen.get(base, 0) + 1
        keys[path] = base if seen[base] == 1 else f"{base}#{seen[base]}"
    return keys


def run_inputs(run_paths: list[Path], folders: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file a report reads from its runs, by role ``<run key>:<file>`` (:func:`run_keys`;
    hashed into its provenance, which also records each file's path): each run's RUN_FILES, plus
    the CSV/JSON/safetensors files under ``folders``."""
    files: dict[str, Path] = {}
    for path, key in run_keys(run_paths).items():
        for rel in RUN_FILES:
            if (path / rel).is_file():
                files[f"{key}:{rel}"] = path / rel
        for folder in folders:
            if (path / folder).is_dir():
                for f in sorted((path / folder).rglob("*")):
                    if f.is_file() and f.suffix in (".csv", ".json", ".safetensors"):
                        files[f"{key}:{f.relative_to(path).as_posix()}"] = f
    return files
