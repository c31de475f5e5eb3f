"""Projected gradient descent (Madry et al.) under an L-inf or L2 budget, in the model's input space.

``pgd_attack`` is the single implementation used by PGD adversarial training
(``xairobust.training.pgd``) and by robust evaluation (``xairobust.stages.attack``, through
``pgd_worst_of_restarts``, the registered ``pgd``), so the threat model a model was trained
against is exactly the one it is evaluated with. Its loop is the one perturbation core,
``xairobust.perturb.projected_ascent``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xairobust.perturb import NORMS, Norm, ThreatModel, eval_mode, projected_ascent
from xairobust.registry import ATTACKS

LossFn = Callable[[Tensor, Tensor], Tensor]


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    loss_fn: LossFn = nn.functional.cross_entropy,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial inputs maximising ``loss_fn(model(x_adv), y)`` within ``||x_adv - x|| <= eps``.

    :func:`xairobust.perturb.projected_ascent` under ``ThreatModel(norm, eps, step_size,
    value_range)``: each of the ``steps`` iterations takes an ascent step of length ``step_size``
    (sign step for L-inf, normalised gradient for L2), projects onto the ball and clamps to
    ``value_range`` (skipped when None, e.g. spectrograms). The model runs in eval mode and gets
    its previous mode back afterwards, even when the attack raises. Parameter gradients are
    untouched. ``loss_fn`` is the task criterion (CE, or MSE for regression); a batch-mean loss
    is fine since the step direction is computed per sample and does not depend on the batch size.
    """
    threat = ThreatModel(norm, eps, step_size, value_range, steps, random_start)
    return pgd_under(threat, model, x, y, loss_fn=loss_fn, generator=generator)


def pgd_under(
    threat: ThreatModel,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`pgd_attack` under a :class:`~xairobust.perturb.ThreatModel` (PGD training's call)."""
    with eval_mode(model):
        return projected_ascent(lambda z: loss_fn(model(z), y), x, threat, generator=generator)


@torch.no_grad()
def _per_sample_loss(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    out = model(x)
    return torch.stack([loss_fn(out[i : i + 1], y[i : i + 1]) for i in range(len(x))])


def pgd_worst_of_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    task: str = "classification",
    random_start: bool = True,
    loss_fn: LossFn = nn.functional.cross_entropy,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run ``pgd_attack`` ``restarts`` times and keep, per sample, the most damaging result.

    Classification: an input counts as broken if any restart misclassifies it (the first such
    adversarial input is kept). Regression: the restart with the largest loss is kept. With one
    restart this is ``pgd_attack`` (same draws, same result). Registered as ``pgd``: the attack
    stage's PGD.
    """
    kwargs = {"norm": norm, "eps": eps, "step_size": step_size, "steps": steps, "random_start": random_start,
              "loss_fn": loss_fn, "value_range": value_range, "generator": generator}
    best = x.detach().clone()
    best_score: Tensor | None = None
    with eval_mode(model):
        for _ in range(restarts):
            adv = pgd_attack(model, x, y, **kwargs)
            with torch.no_grad():
                if task == "classification":
                    score = (model(adv).argmax(1) != y).float()
                else:
                    score = _per_sample_loss(model, adv, y, loss_fn)
            if best_score is None:
                best, best_score = adv, score
                continue
            better = score > best_score
            best[better] = adv[better]
            best_score = torch.where(better, score, best_score)
    return best


ATTACKS.register("pgd", label="PGD", norms=NORMS)(pgd_worst_of_restarts)
