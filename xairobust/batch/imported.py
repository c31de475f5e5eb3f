"""The ``use`` job of a zoo's ``run:`` entry: an existing run directory (imported or trained
elsewhere) joins the zoo as it is.

The job trains nothing. It checks that the run loads (weights match run.json's checksum and fit
the architecture with strict key matching) and reports its weights and run.json as its outputs,
so the batch runner's marker fingerprints them: replacing the run (re-importing another
checkpoint into the same directory) changes the fingerprint, and its attack / explain / score
jobs and the reports are redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xairobust.runs import RUN_JSON, WEIGHTS, load_run


@dataclass
class UseRunConfig:
    run: str = ""  # the run directory (absolute; the job's target)


def use_run(target: str | Path, conf: UseRunConfig, quiet: bool = False) -> list[Path]:
    """Check run ``target`` loads; returns the files that identify it."""
    target = Path(target)
    load_run(target)  # RunError when missing, tampered with or not fitting its architecture
    return [target / WEIGHTS, target / RUN_JSON]
