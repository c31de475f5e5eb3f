"""Per-epoch scores for metric-vs-epoch curves, from a run's kept checkpoints.

A run trained with ``--save-every N`` keeps ``checkpoints/epoch_NNN.safetensors``. For each
checkpoint this explains and scores the same test samples with the explain and score stages
(so the numbers are computed exactly like the final model's) and writes, inside the run:

    scores/epochs/<explainer>_epoch_NNN.csv    index,target,metric,value (the scores format)
    scores/epochs/<explainer>_epoch_NNN.json   the score stage's JSON + the configs and checkpoint hash
    attributions/epochs/<explainer>_epoch_NNN.safetensors (+ .json)   the attributions scored

The report reads only the CSVs (sample means per epoch) plus history.csv for accuracy.
A checkpoint whose outputs exist for the same configs and checkpoint hash is skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.errors import RunError
from xairobust.progress import track
from xairobust.runs import (
    RUN_JSON,
    WEIGHTS,
    file_sha256,
    read_json,
    read_run_meta,
    require_run,
    write_bytes_atomic,
    write_json_atomic,
)
from xairobust.stages.contract import OUTPUTS_KEY, StageIdentity, is_current, stamp_inputs, stamp_outputs

EPOCH_FORMAT = 1
CHECKPOINT = re.compile(r"^epoch_(\d+)\.safetensors$")


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """epoch -> checkpoint file, sorted by epoch."""
    folder = run_dir / "checkpoints"
    found = {int(m[1]): p for p in folder.glob("*.safetensors") if (m := CHECKPOINT.match(p.name))} if folder.is_dir() else {}
    return dict(sorted(found.items()))


def verify_checkpoints(run_dir: Path, meta: dict[str, Any], found: dict[int, Path]) -> None:
    """Refuse a checkpoint that this run did not write (e.g. one left by an interrupted run of
    another config in the same directory): each records the run identity it was saved under."""
    from xairobust.stages.contract import StaleError
    from xairobust.stages.train import checkpoint_identity

    block = meta.get("provenance")
    ours = block.get("identity_hash") if isinstance(block, dict) else None
    if ours is None:
        return  # a run written before provenance blocks: its checkpoints carry no identity either
    hint = f"xairobust train --config {run_dir / 'config.yaml'} --out {run_dir} --force"
    for ckpt in found.values():
        if checkpoint_identity(ckpt) != ours:
            raise StaleError(
                f"{ckpt} was not written by the run in {run_dir} (another config's checkpoint);"
                f" remove it, or retrain with `{hint}`"
            )


def score_checkpoints(run_dir: str | Path, explain_conf: Any, score_conf: Any, quiet: bool = False) -> list[Path]:
    """Explain + score every checkpoint of ``run_dir``; returns the per-epoch score CSVs.

    ``explain_conf`` is a stages.explain.ExplainConfig, ``score_conf`` a stages.score.ScoreConfig
    (their explainer must agree). Each checkpoint is evaluated in a temporary copy of the run
    (its run.json with the checkpoint's weights hash), never touching the run's own outputs.
    """
    from xairobust.stages.explain import explain
    from xairobust.stages.score import score

    run_dir = require_run(run_dir)
    if explain_conf.explainer != score_conf.explainer:
        raise RunError(f"score-epochs: explain uses '{explain_conf.explainer}' but score '{score_conf.explainer}'")
    explainer = explain_conf.explainer
    found = checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir}: no checkpoints/epoch_NNN.safetensors; train with --save-every N to keep them")
    meta = read_run_meta(run_dir)
    verify_checkpoints(run_dir, meta, found)
    identity = {"explain": cfg.to_dict(explain_conf), "score": cfg.to_dict(score_conf)}
    for key in ("device", "batch_size"):  # speed/placement only: results do not depend on them
        identity["explain"].pop(key, None)
        identity["score"].pop(key, None)
    written = []
    for epoch, ckpt in track(list(found.items()), len(found), f"score epochs ({explainer})", quiet):
        stem = f"{explainer}_epoch_{epoch:03d}"
        csv_path = run_dir / "scores" / "epochs" / f"{stem}.csv"
        json_path = csv_path.with_suffix(".json")
        sha = file_sha256(ckpt)
        # The contract: inputs are the checkpoint (its sha256), identity the two configs.
        resolved = StageIdentity("score-epochs", EPOCH_FORMAT, identity, stamp_inputs({"checkpoint": ckpt}, run_dir))
        if is_current([csv_path, json_path], resolved):
            written.append(csv_path)
            continue
        with tempfile.TemporaryDirectory(prefix="xairobust-epoch-") as tmp:
            shadow = Path(tmp) / run_dir.name
            shadow.mkdir()
            shutil.copyfile(ckpt, shadow / WEIGHTS)
            (shadow / RUN_JSON).write_text(json.dumps({**meta, "weights_sha256": sha, "epoch": epoch}))
            explain(shadow, explain_conf, quiet=True)
            score(shadow, score_conf, quiet=True)
            attr_t = run_dir / "attributions" / "epochs" / f"{stem}.safetensors"
            write_bytes_atomic(attr_t, (shadow / "attributions" / f"{explainer}.safetensors").read_bytes())
            adoc = read_json(shadow / "attributions" / f"{explainer}.json")
            # Output hashes name files beside their document: the copies have other names here.
            adoc[OUTPUTS_KEY] = stamp_outputs(attr_t.with_suffix(".json"), attr_t)
            write_json_atomic(attr_t.with_suffix(".json"), adoc)
            doc = read_json(shadow / "scores" / f"{explainer}.json")
            doc["epoch_scores"] = {"epoch": epoch, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "identity": identity}
            # The shadow run's provenance names files in a deleted temporary folder: this one
            # names the checkpoint in the run, so the chain can be verified (report does).
            doc["provenance"] = resolved.block()
            write_bytes_atomic(csv_path, (shadow / "scores" / f"{explainer}.csv").read_bytes())
            doc[OUTPUTS_KEY] = stamp_outputs(json_path, csv_path)
            write_json_atomic(json_path, doc)  # last: marks a complete epoch
        written.append(csv_path)
    return written
