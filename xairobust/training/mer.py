"""Training methods of the music-emotion study: A2M2E's joint loss and BIM adversarial training.

* ``a2m2e_joint``: ``emotion_weight * MSE(emotions) + midlevel_weight * MSE(bottleneck, mid-level
  annotations)`` (0.5 / 0.5 in the reference). Needs a bottleneck model (``a2m2e``) and the
  dataset's mid-level extras (``dataset_kwargs: {midlevel: true}``).
* ``bim_adv``: regression adversarial training as in Hoedt et al. Every batch gets the usual
  clean step; on every ``every``-th epoch (1-based: epochs 5, 10, ... for ``every=5``, as the
  reference's ``epoch % 5 == 0`` with epochs counted from 1) the batch is then attacked with
  BIM (``attack_iter`` iterations, eps/step as the test-time attack) *after* the clean update,
  and a second, separate optimiser step is taken on the adversarial batch with the emotion
  loss only. The loop's ``TrainingMethod.extra_steps`` hook provides that second step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.models.audio import has_concepts, outputs_and_concepts
from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod

MIDLEVEL_HINT = (
    "set dataset_kwargs midlevel: true (and midlevel_dir: DIR holding the mid-level annotations"
    " metadata.csv and annotations.csv)"
)


def require_mer_inputs(who: str, model: nn.Module, ctx: TrainContext, regression_hint: str, concepts: str | None) -> None:
    """One-line refusals before anything is written: a regression dataset and, unless ``concepts``
    is None (the method needs no bottleneck; else: when it does, e.g. " with --midlevel-weight > 0"),
    a concept-bottleneck model and mid-level targets."""
    if ctx.task != "regression":
        raise ConfigError(f"{who} is for regression datasets{regression_hint}")
    if concepts is None:
        return
    if not has_concepts(model):
        raise ConfigError(f"{who}{concepts} needs a concept-bottleneck model: use --model a2m2e")
    if "midlevel" not in ctx.extras:
        raise ConfigError(f"{who}{concepts} needs mid-level targets, which the dataset did not provide: {MIDLEVEL_HINT}")


def joint_loss(
    model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext, emotion_weight: float, midlevel_weight: float, who: str
) -> tuple[Tensor, dict[str, float]]:
    """Weighted emotion MSE + bottleneck/mid-level MSE; plain emotion MSE when midlevel_weight is 0."""
    out, concepts = outputs_and_concepts(model, x)
    emo = ctx.criterion(out, y)
    if midlevel_weight == 0:
        return emo, {"emotion_loss": float(emo.detach())}
    if concepts is None:
        raise ConfigError(f"method '{who}': the model has no concept bottleneck; use --model a2m2e")
    if "midlevel" not in ctx.extras:
        raise ConfigError(f"method '{who}' needs mid-level targets, which the dataset did not provide: {MIDLEVEL_HINT}")
    target = ctx.extras["midlevel"].to(concepts.dtype)
    if target.shape != concepts.shape:
        raise ConfigError(
            f"method '{who}': mid-level targets have shape {tuple(target.shape[1:])} but the bottleneck"
            f" has {concepts.shape[1]} units"
        )
    mid = nn.functional.mse_loss(concepts, target)
    loss = emotion_weight * emo + midlevel_weight * mid
    return loss, {"emotion_loss": float(emo.detach()), "midlevel_loss": float(mid.detach())}


@dataclass
class JointParams:
    emotion_weight: float = 0.5
    midlevel_weight: float = 0.5

    def __post_init__(self) -> None:
        require(self.emotion_weight >= 0, f"train: --emotion-weight must be >= 0, got {self.emotion_weight}")
        require(self.midlevel_weight > 0, f"train: --midlevel-weight must be > 0, got {self.midlevel_weight}")


@METHODS.register("a2m2e_joint", label="A2M2E", task="regression")
class A2M2EJoint(TrainingMethod):
    """Concept-bottleneck training: emotions and the 7 bottleneck units (mid-level features) jointly."""

    Params = JointParams

    def prepare(self, model: nn.Module, ctx: TrainContext) -> None:
        require_mer_inputs("method 'a2m2e_joint'", model, ctx, " (e.g. --dataset soundtracks)", concepts="")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        p = self.params
        return joint_loss(model, x, y, ctx, p.emotion_weight, p.midlevel_weight, "a2m2e_joint")


@dataclass
class BIMAdvParams:
    every: int = 5  # adversarial steps on every n-th epoch (1-based)
    eps: float = 0.001
    step_size: float = 0.002
    attack_iter: int = 50
    corr_threshold: float | None = -1.0
    mse_threshold: float | None = None
    # > 0: the clean step uses the A2M2E joint loss (an adversarially trained A2M2E); the
    # adversarial step always uses the emotion loss only.
    midlevel_weight: float = 0.0

    def __post_init__(self) -> None:
        require(self.every >= 1, f"train: --every must be >= 1, got {self.every}")
        require(self.eps > 0, f"train: --eps must be > 0, got {self.eps}")
        require(self.step_size > 0, f"train: --step-size must be > 0, got {self.step_size}")
        require(self.attack_iter >= 1, f"train: --attack-iter must be >= 1, got {self.attack_iter}")
        require(0 <= self.midlevel_weight < 1, f"train: --midlevel-weight must be in [0, 1), got {self.midlevel_weight}")


def is_adversarial_epoch(epoch0: int, every: int) -> bool:
    """Whether 0-based ``epoch0`` is an adversarial epoch: 1-based epoch number divisible by ``every``."""
    return (epoch0 + 1) % every == 0


@METHODS.register("bim_adv", label="BIM adversarial", task="regression")
class BIMAdversarial(TrainingMethod):
    """Clean step on every batch, plus a BIM-adversarial step after it on every n-th epoch."""

    Params = BIMAdvParams

    def prepare(self, model: nn.Module, ctx: TrainContext) -> None:
        require_mer_inputs("method 'bim_adv'", model, ctx, "; use --method pgd for classifiers",
                           concepts=" with --midlevel-weight > 0" if self.params.midlevel_weight > 0 else None)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        w = self.params.midlevel_weight
        return joint_loss(model, x, y, ctx, 1.0 - w, w, "bim_adv")

    def extra_steps(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> Iterator[tuple[Tensor, dict[str, float]]]:
        if not is_adversarial_epoch(ctx.epoch, self.params.every):
            return
        from xairobust.attacks.bim_regression import bim_regression_attack

        p = self.params
        # Runs after the clean step (the loop resumes this generator only then); the attack puts
        # the model in eval mode and restores train mode, as the reference does.
        x_adv = bim_regression_attack(
            model, x, y, eps=p.eps, step_size=p.step_size, max_iter=p.attack_iter,
            corr_threshold=p.corr_threshold, mse_threshold=p.mse_threshold,
        ).x_adv
        adv_loss = ctx.criterion(model(x_adv), y)
        yield adv_loss, {"adv_loss": float(adv_loss.detach())}

    def describe(self) -> dict[str, Any]:
        return {"adversarial_epochs": f"every {self.params.every}th (1-based)", "attack": "bim-regression"}
