"""The ``use`` stage: an existing run directory (imported, or trained elsewhere) joins a zoo as it is.

A zoo's ``run: PATH`` method entry becomes one ``use`` job per run directory. It trains nothing:
it checks that the run loads (weights match run.json's checksum and fit the architecture with
strict key matching) and records the check in ``.batch/used.json`` (the batch's folder of the run;
nothing of the run itself is touched), whose provenance block holds the sha256 of the weights and
run.json. So the check is current until the run is replaced (re-importing another checkpoint into
the directory), and then it, the run's attack / explain / score jobs and the reports are redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xairobust.layout import RunLayout
from xairobust.runs import RUN_JSON, WEIGHTS, load_run, require_run
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, not_identity

USED_JSON = "used.json"  # the record of the last check, in the run's .batch folder


@dataclass
class UseRunConfig:
    run: str = not_identity("")  # the run directory (absolute; also the job's target)


@STAGES.register("use")
class UseStage(Stage, name="use", Config=UseRunConfig, per="run", after=None, order=0):
    """Check-only stage of a zoo's ``run:`` entries (its record goes into the run's .batch folder)."""

    def inputs(self, run_dir: Path, conf: UseRunConfig) -> dict[str, Path]:
        run_dir = require_run(run_dir)
        return {"weights": run_dir / WEIGHTS, "run": run_dir / RUN_JSON}

    def outputs(self, run_dir: Path, conf: UseRunConfig) -> list[Path]:
        return [Path(run_dir) / WEIGHTS, Path(run_dir) / RUN_JSON, Path(run_dir) / RunLayout.BATCH / USED_JSON]

    def hint(self, run_dir: Path, conf: UseRunConfig) -> str:
        return f"xairobust import CHECKPOINT ... --out {run_dir}"

    def compute(self, run_dir: Path, conf: UseRunConfig, resolved: StageIdentity, quiet: bool) -> Written:
        load_run(run_dir)  # RunError when missing, tampered with or not fitting its architecture
        return Written({"run": str(run_dir), "checked": "weights and run.json load and verify (runs.load_run)"})
