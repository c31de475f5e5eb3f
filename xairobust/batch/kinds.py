"""Job kinds: how the batch runner calls each stage. Looked up by module path at run time.

A stage is named by ``"module[:function[:ConfigClass]]"``; the zoo's ``stages:`` block may point
a stage at another implementation with the same signature (tests use this for stub stages).
Nothing here imports a stage module until a job of that kind is planned or run, so the batch
runner works with whatever stages the installation has.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xairobust.errors import ConfigError


@dataclass(frozen=True)
class StageRef:
    """Where a stage's function and config class live."""

    module: str
    function: str
    config: str

    @classmethod
    def parse(cls, text: str, default: StageRef) -> StageRef:
        parts = text.split(":")
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise ConfigError(f"stage '{text}' must look like module[:function[:ConfigClass]]")
        return cls(parts[0], parts[1] if len(parts) > 1 else default.function,
                   parts[2] if len(parts) > 2 else default.config)

    def __str__(self) -> str:
        return f"{self.module}:{self.function}:{self.config}"

    def load(self, stage: str) -> tuple[Callable[..., Any], type]:
        """(function, config class); a missing module is a ConfigError naming the stage."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and (self.module == exc.name or self.module.startswith(exc.name + ".")):
                raise ConfigError(
                    f"this installation has no '{stage}' stage ({self.module} is missing);"
                    f" remove the zoo's '{stage}' jobs or point stages.{stage} at an implementation"
                ) from None
            raise
        try:
            return getattr(module, self.function), getattr(module, self.config)
        except AttributeError as exc:
            raise ConfigError(f"stage '{stage}': {self.module} has no {exc.name}") from None


# The built-in stages (see the stage modules for their signatures).
DEFAULT_STAGES: dict[str, StageRef] = {
    "train": StageRef("xairobust.stages.train", "train", "TrainConfig"),
    "use": StageRef("xairobust.stages.use", "use_run", "UseRunConfig"),  # zoo `run:` entries
    "attack": StageRef("xairobust.stages.attack", "attack", "AttackConfig"),
    "explain": StageRef("xairobust.stages.explain", "explain", "ExplainConfig"),
    "score": StageRef("xairobust.stages.score", "score", "ScoreConfig"),
    "report": StageRef("xairobust.report", "build_report", "ReportConfig"),
}


def call_stage(stage: str, func: Callable[..., Any], conf: Any, target: Path, inputs: list[Path]) -> list[Path]:
    """Call a stage with its own signature; returns the output paths it reports.

    train(conf, out) -> run dir; attack/explain/score(run_dir, conf) -> file;
    build_report(run_dirs, out, conf) -> files.
    """
    if stage == "train":
        result = func(conf, target, quiet=True)
    elif stage == "report":
        result = func(inputs, target, conf, quiet=True)
    else:
        result = func(target, conf, quiet=True)
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return [Path(p) for p in result]
    return [Path(result)]
