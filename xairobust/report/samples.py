"""Per-sample files beside starred tables, with the weights each value came from (issue 21 item 5).

Every section that stars a value (the score tables' ``samples.csv``, the manipulation section's
``manipulation_samples.csv``, the visualisation section's ``visual_samples.csv``, the MER
t-tests' ``mer_samples.csv``) writes the long
frame its tests were computed from, plus each run's weights sha256, so that
``scripts/check_results.py`` can recompute the means and stars without the run directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from xairobust.runs import WEIGHTS, file_sha256

SAMPLES_CSV = "samples.csv"
MANIPULATION_SAMPLES = "manipulation_samples.csv"
VISUAL_SAMPLES = "visual_samples.csv"
MER_SAMPLES = "mer_samples.csv"  # the MER t-tests' per-excerpt values (report/mer.py)


def with_weights(frame: pd.DataFrame, runs: list[Any]) -> pd.DataFrame:
    """``frame`` (a ``run`` column of run paths) plus ``weights_sha256`` of each row's run."""
    shas = {str(r.path): file_sha256(Path(r.path) / WEIGHTS) for r in runs}
    return frame.assign(weights_sha256=frame["run"].astype(str).map(shas))
