"""Projected gradient descent (Madry et al.) under an L-inf or L2 budget, in the model's input space.

``pgd_attack`` is the single implementation used by PGD adversarial training
(``xairobust.training.pgd``) and by robust evaluation (``xairobust.stages.attack``), so the
threat model a model was trained against is exactly the one it is evaluated with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from xairobust.registry import ATTACKS

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
LossFn = Callable[[Tensor, Tensor], Tensor]

# Guards the division by a gradient's L2 norm (a zero gradient gives a zero step, not NaN).
_TINY = 1e-12


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped (B, 1, 1, ...) to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def uniform_in_ball(x: Tensor, norm: Norm, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """A perturbation drawn uniformly from the norm ball of radius ``eps`` around 0 (one per sample).

    L-inf: uniform in the cube. L2: uniform in the ball, i.e. a uniform direction (normalised
    Gaussian) times a radius ``eps * U**(1/d)`` (d = input dimension), whose law P(r <= s) =
    (s/eps)**d is that of the volume of the ball -- not a renormalised cube sample.
    """
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = g / _flat_norm(g)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def project(delta: Tensor, norm: Norm, eps: float) -> Tensor:
    """Euclidean projection of each sample's perturbation onto the norm ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _flat_norm(delta)).clamp(max=1.0)
    return delta * factor


def _clamp(x: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    return x if value_range is None else x.clamp(value_range[0], value_range[1])


def _ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest ascent direction of unit norm: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _flat_norm(grad)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (BN running stats, no dropout) and restore its mode, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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

    Each of the ``steps`` iterations takes an ascent step of length ``step_size`` (sign step for
    L-inf, normalised gradient for L2), projects onto the ball and clamps to ``value_range``
    (skipped when None, e.g. spectrograms). The model runs in eval mode and gets its previous
    mode back afterwards, even when the attack raises. Parameter gradients are untouched.
    ``loss_fn`` is the task criterion (CE, or MSE for regression); a batch-mean loss is fine
    since the step direction is computed per sample and does not depend on the batch size.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
    x = x.detach()
    with eval_mode(model):
        if random_start:
            delta = _start(x, norm, eps, generator, value_range)
        else:
            delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(model(x + delta), y)
                (grad,) = torch.autograd.grad(loss, delta)
            delta = delta.detach() + step_size * _ascent_direction(grad, norm)
            delta = _clamp(x + project(delta, norm, eps), value_range) - x
        return (x + delta).detach()


def _start(x: Tensor, norm: Norm, eps: float, generator: torch.Generator | None,
           value_range: tuple[float, float] | None) -> Tensor:
    # Clamping towards x only shrinks each coordinate of delta, so it stays inside the ball.
    return _clamp(x + uniform_in_ball(x, norm, eps, generator), value_range) - x


@torch.no_grad()
def _per_sample_loss(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    out = model(x)
    return torch.stack([loss_fn(out[i : i + 1], y[i : i + 1]) for i in range(len(x))])


def pgd_worst_of_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    restarts: int,
    task: str = "classification",
    **kwargs,
) -> Tensor:
    """Run ``pgd_attack`` ``restarts`` times and keep, per sample, the most damaging result.

    Classification: an input counts as broken if any restart misclassifies it (the first such
    adversarial input is kept). Regression: the restart with the largest loss is kept.
    """
    loss_fn: LossFn = kwargs.get("loss_fn", nn.functional.cross_entropy)
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


ATTACKS.register("pgd", label="PGD", norms=NORMS)(pgd_attack)
