"""The score-epochs stage: per-epoch scores for metric-vs-epoch curves, from a run's kept checkpoints.

A run trained with ``--save-every N`` keeps ``checkpoints/epoch_NNN.safetensors``. For each
checkpoint this explains and scores the same test samples with the explain and score stages
(so the numbers are computed exactly like the final model's) and writes, inside the run:

    scores/epochs/<explainer>_epoch_NNN.csv    index,target,metric,value (the scores format)
    scores/epochs/<explainer>_epoch_NNN.json   the score stage's JSON + the configs and checkpoint hash
    attributions/epochs/<explainer>_epoch_NNN.safetensors (+ .json)   the attributions scored

One stage call is one checkpoint (``ScoreEpochConfig.epoch``): its input is the checkpoint file,
its identity the explain and score configs; :func:`score_checkpoints` runs it for every
checkpoint. The report reads only the CSVs (sample means per epoch) plus history.csv.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.errors import RunError
from xairobust.layout import RunLayout
from xairobust.progress import track
from xairobust.runs import (
    RUN_JSON,
    WEIGHTS,
    file_sha256,
    read_json,
    read_run_meta,
    require_run,
    write_bytes_atomic,
)
from xairobust.stages.contract import (
    OUTPUTS_KEY,
    Stage,
    StageIdentity,
    StaleError,
    Written,
    not_identity,
    stamp_outputs,
    write_sealed,
)

EPOCH_FORMAT = 1
CHECKPOINT = re.compile(r"^epoch_(\d+)\.safetensors$")


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """epoch -> checkpoint file, sorted by epoch."""
    folder = RunLayout(run_dir).checkpoints
    found = {int(m[1]): p for p in folder.glob("*.safetensors") if (m := CHECKPOINT.match(p.name))} if folder.is_dir() else {}
    return dict(sorted(found.items()))


def verify_checkpoints(run_dir: Path, meta: dict[str, Any], found: dict[int, Path]) -> None:
    """Refuse a checkpoint that this run did not write (e.g. one left by an interrupted run of
    another config in the same directory): each records the run identity it was saved under."""
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


@dataclass
class ScoreEpochConfig:
    """One checkpoint's explain + score (``explain``/``score``: ExplainConfig / ScoreConfig keys)."""

    explain: dict = field(default_factory=dict)
    score: dict = field(default_factory=dict)
    epoch: int = not_identity(0)  # which checkpoint (the checkpoint's sha256 is the input)

    def configs(self) -> tuple[Any, Any]:
        from xairobust.stages.explain import ExplainConfig
        from xairobust.stages.score import ScoreConfig

        e = cfg.build(ExplainConfig, self.explain, "score-epochs: explain")
        s = cfg.build(ScoreConfig, self.score, "score-epochs: score")
        if e.explainer != s.explainer:
            raise RunError(f"score-epochs: explain uses '{e.explainer}' but score '{s.explainer}'")
        return e, s


def _legacy_fields(conf: Any) -> dict[str, Any]:
    """A config as score-epochs first recorded it: every field but device and batch size."""
    d = cfg.to_dict(conf)
    for key in ("device", "batch_size", "channels_last"):
        d.pop(key, None)
    if d.get("precision") == "fp32":  # added since: counts only when not the default
        d.pop("precision")
    return d


def epoch_paths(run_dir: Path, explainer: str, epoch: int) -> tuple[Path, Path, Path]:
    """(scores CSV, scores JSON, attributions safetensors) of one epoch."""
    return RunLayout(run_dir).epoch(explainer, epoch)


# Not registered in STAGES: one call is one checkpoint, and which checkpoints a run keeps is known
# only once it has trained, so a zoo cannot plan these jobs; `xairobust score-epochs` runs them.
class ScoreEpochStage(Stage, name="score-epochs", Config=ScoreEpochConfig, format=EPOCH_FORMAT, per="run",
                             after="train", order=3.2):
    """checkpoints/epoch_NNN.safetensors -> scores/epochs/<explainer>_epoch_NNN.{csv,json}."""

    def inputs(self, run_dir: Path, conf: ScoreEpochConfig) -> dict[str, Path]:
        found = checkpoints(require_run(run_dir))
        if conf.epoch not in found:
            raise RunError(f"{run_dir}: no checkpoints/epoch_{conf.epoch:03d}.safetensors; train with --save-every N to keep them")
        return {"checkpoint": found[conf.epoch]}

    def identity(self, run_dir: Path, conf: ScoreEpochConfig) -> dict[str, Any]:
        # The two stages' configs as they were first recorded (every field but device and batch
        # size): kept in this form so that stored per-epoch scores stay current.
        # Fields added to the two configs since (precision at fp32, channels_last) are left out
        # too, so the hash of every stored epoch stays what it was.
        e, s = conf.configs()
        return {"explain": _legacy_fields(e), "score": _legacy_fields(s)}

    def outputs(self, run_dir: Path, conf: ScoreEpochConfig) -> list[Path]:
        csv_path, json_path, _ = epoch_paths(Path(run_dir), conf.configs()[0].explainer, conf.epoch)
        return [csv_path, json_path]

    def hint(self, run_dir: Path, conf: ScoreEpochConfig) -> str:
        return f"xairobust score-epochs --run {run_dir}"

    def compute(self, run_dir: Path, conf: ScoreEpochConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _score_epoch(Path(run_dir), conf, resolved)


def _score_epoch(run_dir: Path, conf: ScoreEpochConfig, resolved: StageIdentity) -> Written:
    """Explain + score one checkpoint in a temporary copy of the run (its run.json with the
    checkpoint's weights hash), never touching the run's own outputs."""
    from xairobust.stages.explain import explain
    from xairobust.stages.score import score

    explain_conf, score_conf = conf.configs()
    explainer = explain_conf.explainer
    ckpt = checkpoints(run_dir)[conf.epoch]
    sha = resolved.inputs["checkpoint"]["sha256"]
    csv_path, json_path, attr_t = epoch_paths(run_dir, explainer, conf.epoch)
    meta = read_run_meta(run_dir)
    with tempfile.TemporaryDirectory(prefix="xairobust-epoch-") as tmp:
        shadow = Path(tmp) / run_dir.name
        shadow.mkdir()
        shutil.copyfile(ckpt, shadow / WEIGHTS)
        if file_sha256(shadow / WEIGHTS) != sha:
            raise RunError(f"{ckpt} changed while it was being scored; run score-epochs again")
        (shadow / RUN_JSON).write_text(json.dumps({**meta, "weights_sha256": sha, "epoch": conf.epoch}))
        explain(shadow, explain_conf, quiet=True)
        score(shadow, score_conf, quiet=True)
        shadow_tensors, shadow_doc = RunLayout(shadow).attribution(explainer)
        write_bytes_atomic(attr_t, shadow_tensors.read_bytes())
        adoc = read_json(shadow_doc)
        # Output hashes name files beside their document: the copies have other names here.
        adoc[OUTPUTS_KEY] = stamp_outputs(attr_t.with_suffix(".json"), attr_t)
        write_sealed(attr_t.with_suffix(".json"), adoc)  # explain's own document, renamed (its body hash again)
        shadow_csv, shadow_scores = RunLayout(shadow).score(explainer)
        doc = read_json(shadow_scores)
        doc["epoch_scores"] = {"epoch": conf.epoch, "checkpoint": str(ckpt), "checkpoint_sha256": sha,
                               "identity": resolved.identity}
        # The shadow run's provenance names files in a deleted temporary folder: the contract
        # writes this one's, naming the checkpoint in the run, so the chain can be verified.
        doc.pop("provenance", None)
        doc.pop(OUTPUTS_KEY, None)
        write_bytes_atomic(csv_path, shadow_csv.read_bytes())
    return Written(doc, (csv_path,))


def score_checkpoints(run_dir: str | Path, explain_conf: Any, score_conf: Any, quiet: bool = False) -> list[Path]:
    """Explain + score every checkpoint of ``run_dir``; returns the per-epoch score CSVs.

    ``explain_conf`` is a stages.explain.ExplainConfig, ``score_conf`` a stages.score.ScoreConfig
    (their explainer must agree). A checkpoint whose outputs are current is skipped.
    """
    run_dir = require_run(run_dir)
    if explain_conf.explainer != score_conf.explainer:
        raise RunError(f"score-epochs: explain uses '{explain_conf.explainer}' but score '{score_conf.explainer}'")
    found = checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir}: no checkpoints/epoch_NNN.safetensors; train with --save-every N to keep them")
    verify_checkpoints(run_dir, read_run_meta(run_dir), found)
    stage = ScoreEpochStage()
    written = []
    for epoch in track(list(found), len(found), f"score epochs ({explain_conf.explainer})", quiet):
        conf = ScoreEpochConfig(explain=cfg.to_dict(explain_conf), score=cfg.to_dict(score_conf), epoch=epoch)
        stage.run(run_dir, conf, quiet=True)
        written.append(stage.outputs(run_dir, conf)[0])
    return written
