"""Transitional: the score stage through the contract until ``stages/score.py`` registers its own.

``score.py`` writes ``scores/<explainer>.json`` with the sha256 of the attributions it scored
(``attributions.sha256``) but no provenance block yet; this adapter gives it the contract's
shape (inputs, identity, outputs, hint, run) so the batch runner can call every stage the same
way. It registers only when no ``score`` stage is registered, so the real one replaces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.runs import WEIGHTS, require_run
from xairobust.stages.contract import STAGES, Stage
from xairobust.stages.score import ScoreConfig


class ScoreShimStage(Stage):
    name = "score"
    Config = ScoreConfig
    format = 1
    per = "explainer"
    after = "explain"
    order = 3
    report_input = True

    def inputs(self, run_dir: Path, conf: Any) -> dict[str, Path]:
        from xairobust.stages.explain import attribution_paths

        return {"weights": require_run(run_dir) / WEIGHTS, "attributions": attribution_paths(Path(run_dir), conf.explainer)[0]}

    def identity(self, run_dir: Path, conf: Any) -> dict[str, Any]:
        d = cfg.to_dict(conf)
        for k in ("device", "batch_size", "data_dir"):
            d.pop(k, None)
        return d

    def outputs(self, run_dir: Path, conf: Any) -> list[Path]:
        from xairobust.stages.score import score_paths

        return list(score_paths(Path(run_dir), conf.explainer))

    def hint(self, run_dir: Path, conf: Any) -> str:
        return f"xairobust score --run {run_dir} --explainer {conf.explainer}"

    def run(self, run_dir: Path, conf: Any, quiet: bool = False) -> Path:
        from xairobust.stages.score import score

        return score(run_dir, conf, quiet)


def register_score_shim() -> None:
    STAGES.register("score")(ScoreShimStage)
