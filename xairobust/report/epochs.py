"""Per-epoch scores for metric-vs-epoch curves: computed by the score-epochs stage
(:mod:`xairobust.stages.score_epochs`); the report reads only their CSVs. The names here are
kept for callers of the report package."""

from xairobust.stages.score_epochs import (  # noqa: F401 - re-exported
    CHECKPOINT,
    EPOCH_FORMAT,
    checkpoints,
    score_checkpoints,
    verify_checkpoints,
)
