"""The ``use`` stage: an existing run directory (imported, or trained elsewhere) joins a zoo as it is.

A zoo's ``run: PATH`` method entry becomes one ``use`` job per run directory. It trains nothing:
it checks that the run loads (weights match run.json's checksum and fit the architecture with
strict key matching) and returns the weights and run.json as its outputs, so the batch runner's
marker fingerprints them. Replacing the run (re-importing another checkpoint into the directory)
changes the fingerprint, and its attack / explain / score jobs and the reports are redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xairobust.runs import RUN_JSON, WEIGHTS, load_run, require_run
from xairobust.stages.contract import STAGES, Stage, StageIdentity, not_identity


@dataclass
class UseRunConfig:
    run: str = not_identity("")  # the run directory (absolute; also the job's target)


@STAGES.register("use")
class UseStage(Stage, name="use", Config=UseRunConfig, per="run", after=None, order=0):
    """Check-only stage of a zoo's ``run:`` entries (writes nothing into the run)."""

    def inputs(self, run_dir: Path, conf: UseRunConfig) -> dict[str, Path]:
        run_dir = require_run(run_dir)
        return {"weights": run_dir / WEIGHTS, "run": run_dir / RUN_JSON}

    def outputs(self, run_dir: Path, conf: UseRunConfig) -> list[Path]:
        return [Path(run_dir) / WEIGHTS, Path(run_dir) / RUN_JSON]

    def hint(self, run_dir: Path, conf: UseRunConfig) -> str:
        return f"xairobust import CHECKPOINT ... --out {run_dir}"

    def is_current(self, run_dir: Path, conf: UseRunConfig, resolved: StageIdentity | None = None) -> bool:
        return False  # check-only: the run is verified every time it is used

    def compute(self, run_dir: Path, conf: UseRunConfig, resolved: StageIdentity, quiet: bool) -> None:
        load_run(run_dir)  # RunError when missing, tampered with or not fitting its architecture
