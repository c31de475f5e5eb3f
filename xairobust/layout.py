"""RunLayout: the one owner of every path inside a run directory.

A run directory holds what train/import wrote (weights, run.json, config.yaml, history.csv,
checkpoints/) and what the stages computed from it (robustness.json, attributions/, scores/,
manipulation/, visualisations/, tune_lambda.json), plus the batch runner's logs. Every module
asks this class for a path instead of spelling it again, so a layout change is one edit here.
It imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

from pathlib import Path


class RunLayout:
    """Paths inside the run directory ``root`` (names as class constants, paths as methods)."""

    WEIGHTS = "model.safetensors"
    RUN_JSON = "run.json"
    CONFIG_YAML = "config.yaml"
    HISTORY_CSV = "history.csv"
    CHECKPOINTS = "checkpoints"
    ROBUSTNESS = "robustness.json"
    ATTRIBUTIONS = "attributions"
    SCORES = "scores"
    EPOCHS = "epochs"  # per-epoch scores / attributions, below SCORES and ATTRIBUTIONS
    MANIPULATION = "manipulation"
    VISUALISATIONS = "visualisations"
    ATTACKS = "attacks"  # adversarial examples a regression attack keeps (mer-attack)
    TUNE_LAMBDA = "tune_lambda.json"
    LOGS = "logs"
    BATCH = ".batch"
    REPLACED = ".replaced"
    # Every name the stages write at a run's top level: anything else in a folder given as a
    # run's --out is a user's file, never moved aside.
    ENTRIES = frozenset({
        WEIGHTS, RUN_JSON, CONFIG_YAML, HISTORY_CSV, CHECKPOINTS, ROBUSTNESS, ATTRIBUTIONS, SCORES,
        MANIPULATION, VISUALISATIONS, ATTACKS, TUNE_LAMBDA, LOGS, BATCH, REPLACED,
    })

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- what train / import write --------------------------------------------------------------

    @property
    def weights(self) -> Path:
        return self.root / self.WEIGHTS

    @property
    def run_json(self) -> Path:
        return self.root / self.RUN_JSON

    @property
    def config_yaml(self) -> Path:
        return self.root / self.CONFIG_YAML

    @property
    def history_csv(self) -> Path:
        return self.root / self.HISTORY_CSV

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:03d}.safetensors"

    # -- what the stages compute ----------------------------------------------------------------

    @property
    def robustness(self) -> Path:
        return self.root / self.ROBUSTNESS

    def attribution(self, explainer: str) -> tuple[Path, Path]:
        """(tensors, document) of the explain stage."""
        base = self.root / self.ATTRIBUTIONS
        return base / f"{explainer}.safetensors", base / f"{explainer}.json"

    def score(self, explainer: str) -> tuple[Path, Path]:
        """(CSV, document) of the score stage."""
        base = self.root / self.SCORES
        return base / f"{explainer}.csv", base / f"{explainer}.json"

    def score_partial(self, explainer: str) -> Path:
        """Per-metric results of an unfinished score job (resumed, then removed)."""
        return self.root / self.SCORES / f"{explainer}.partial"

    def epoch(self, explainer: str, epoch: int) -> tuple[Path, Path, Path]:
        """(scores CSV, scores document, attributions tensors) of one checkpoint (score-epochs)."""
        stem = f"{explainer}_epoch_{epoch:03d}"
        csv = self.root / self.SCORES / self.EPOCHS / f"{stem}.csv"
        return csv, csv.with_suffix(".json"), self.root / self.ATTRIBUTIONS / self.EPOCHS / f"{stem}.safetensors"

    def manipulation(self, attack: str, explainer: str) -> tuple[Path, Path, Path]:
        """(tensors, CSV, document) of the manipulate stage."""
        base = self.root / self.MANIPULATION / f"{attack}_{explainer}"
        return base.with_suffix(".safetensors"), base.with_suffix(".csv"), base.with_suffix(".json")

    def visualisation(self, kind: str) -> tuple[Path, Path]:
        """(tensors, document) of the visualize stage."""
        base = self.root / self.VISUALISATIONS
        return base / f"{kind}.safetensors", base / f"{kind}.json"

    def visual_metrics(self, extractor_slug: str) -> tuple[Path, Path]:
        """(CSV, document) of the fid stage."""
        base = self.root / self.VISUALISATIONS
        return base / f"metrics_{extractor_slug}.csv", base / f"metrics_{extractor_slug}.json"

    @property
    def tune_lambda(self) -> Path:
        return self.root / self.TUNE_LAMBDA

    # -- the batch runner -----------------------------------------------------------------------

    def log(self, tag: str) -> Path:
        return self.root / self.LOGS / f"{tag}.log"
