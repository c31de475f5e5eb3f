"""PGD adversarial training (Madry et al. 2018): minimise the task loss on worst-case inputs.

The inner maximisation is ``xairobust.attacks.pgd.pgd_under`` -- the same function robust
evaluation uses, under the ThreatModel of these options -- run on ``ctx.criterion`` (cross-entropy, or MSE for regressors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xairobust.attacks.pgd import pgd_under
from xairobust.config import require
from xairobust.perturb import DEFAULT_EPS, ThreatOptions
from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod


@dataclass
class PGDParams(ThreatOptions):
    """Threat model and schedule of adversarial training (``xairobust train --method pgd``)."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = DEFAULT_EPS
    step_size: float | None = None  # default 2.5 * eps / steps (Madry et al.)
    steps: int = 7
    random_start: bool = True
    adv_every: int = 1  # adversarial batches in epochs 1, 1+N, 1+2N, ...; clean batches otherwise
    adv_mix: bool = False  # train on clean and adversarial rows together (one concatenated batch)

    def __post_init__(self) -> None:
        # eps 0 is the bottom rung of a robustness ladder: clean training through this same method.
        self.check_threat("pgd", zero_eps=True)
        require(self.adv_every >= 1, f"pgd: --adv-every must be >= 1, got {self.adv_every}")


@METHODS.register("pgd", label="Adv. Training")
class PGDTraining(TrainingMethod):
    """Cross-entropy (or MSE) on PGD adversarial examples of each batch."""

    Params = PGDParams

    def is_adversarial_epoch(self, epoch: int) -> bool:
        """``--adv-every N``: epochs 0, N, 2N, ... (0-based) train on adversarial batches."""
        return epoch % self.params.adv_every == 0

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        p = self.params
        if p.eps == 0 or not self.is_adversarial_epoch(ctx.epoch):
            loss = ctx.criterion(model(x), y)
            return loss, {"task_loss": float(loss.detach())}
        x_adv = pgd_under(p.threat_model(ctx.value_range), model, x, y, loss_fn=ctx.criterion, generator=ctx.generator)
        if p.adv_mix:
            # One forward over [clean; adversarial]: the mean loss weighs both halves equally.
            out = model(torch.cat([x, x_adv]))
            loss = ctx.criterion(out, torch.cat([y, y]))
            with torch.no_grad():
                clean = ctx.criterion(out[: len(x)], y)
            return loss, {"task_loss": float(loss.detach()), "clean_loss": float(clean)}
        loss = ctx.criterion(model(x_adv), y)
        return loss, {"task_loss": float(loss.detach()), "adv_loss": float(loss.detach())}

    def describe(self) -> dict[str, Any]:
        return {"step_size_resolved": self.params.resolved_step_size(), "attack": "pgd_attack (eval mode)"}
