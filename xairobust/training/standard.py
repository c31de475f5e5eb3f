"""Standard empirical-risk training: the baseline every robust method is compared with."""

from __future__ import annotations

from torch import Tensor, nn

from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod


@METHODS.register("standard", label="Standard")
class Standard(TrainingMethod):
    """Minimise the task loss (cross-entropy or MSE) on clean batches."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        out = model(x)
        loss = ctx.criterion(out, y)
        return loss, {"task_loss": float(loss.detach())}
