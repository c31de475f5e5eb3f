"""The one perturbation core (issue #17 item 3): budgets, projection, the projected-gradient loop.

Every input perturbation in xairobust goes through here: PGD training and the PGD evaluation
attack (``xairobust.attacks.pgd``), BIM for regression (``xairobust.attacks.bim_regression``),
the explanation-manipulation attacks (``xairobust.manipulate.attacks``) and the three
visualisations (``xairobust.visualize``). A :class:`ThreatModel` is the norm, radius, step length,
value range, number of steps and random start; :meth:`ThreatModel.step` is one projected ascent
step; :func:`projected_ascent` is the loop around it (random start, per-step callback). The
default radius and the step-size rule are defined only here, so a change reaches every caller at
once. The option dataclasses of the commands and methods (``train --method pgd``, ``attack``,
``manipulate``, ``visualize``, BIM) keep their own field names -- they are the CLI and config keys
and their identity hashes -- and build their ThreatModel through :class:`ThreatOptions` (or
:meth:`ThreatModel.of`), so none of them carries the rule itself.

All of it works on perturbations ``delta`` of inputs in the model's input space (pixels in
[0, 1] for images; normalisation is inside the model), one budget per sample of a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")

# The CIFAR-10 L-inf radius used by Madry et al. 2018 and most robustness papers.
DEFAULT_EPS: float = 8 / 255

# Guards the division by a gradient's L2 norm (a zero gradient gives a zero step, not NaN).
_TINY = 1e-12


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule of 2.5 * eps / steps, so the iterates can cross the ball from a random start."""
    return 2.5 * eps / steps


def resolve_step_size(eps: float, steps: int, step_size: float | None) -> float:
    """``step_size`` as given, or the default rule when it is None (the options' "default")."""
    return step_size if step_size is not None else default_step_size(eps, steps)


def flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped (B, 1, 1, ...) to broadcast against ``t`` (at least 1e-12)."""
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
    direction = g / flat_norm(g)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def project(delta: Tensor, norm: Norm, eps: float) -> Tensor:
    """Euclidean projection of each sample's perturbation onto the norm ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / flat_norm(delta)).clamp(max=1.0)
    return delta * factor


def clamp(x: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    """``x`` clamped to the data's value range (unchanged when None, e.g. spectrograms)."""
    return x if value_range is None else x.clamp(value_range[0], value_range[1])


def ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest ascent direction of unit norm: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / flat_norm(grad)


@dataclass(frozen=True)
class ThreatModel:
    """Norm ball of radius ``eps`` around each input, ``steps`` steps of length ``step_size`` (from
    a uniform draw in the ball when ``random_init``), inputs kept in ``value_range`` (None:
    unbounded)."""

    norm: Norm
    eps: float
    step_size: float
    value_range: tuple[float, float] | None = (0.0, 1.0)
    steps: int = 1
    random_init: bool = False  # start from a uniform draw in the ball (random_start), else from x

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; use one of {NORMS}")

    @classmethod
    def of(
        cls,
        norm: Norm,
        eps: float,
        steps: int,
        step_size: float | None = None,
        value_range: tuple[float, float] | None = (0.0, 1.0),
        random_init: bool = False,
    ) -> ThreatModel:
        """The threat model of a set of options; ``step_size`` None: the default rule."""
        return cls(norm, eps, resolve_step_size(eps, steps, step_size), value_range, steps, random_init)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A uniform draw from the ball, clamped to the value range."""
        # Clamping towards x only shrinks each coordinate of delta, so it stays inside the ball.
        return clamp(x + uniform_in_ball(x, self.norm, self.eps, generator), self.value_range) - x

    def step(self, x: Tensor, delta: Tensor, grad: Tensor, active: Tensor | None = None) -> Tensor:
        """One ascent step on ``grad`` from ``delta``, projected onto the ball and clamped so
        ``x + delta`` stays in the value range. ``active`` (B,) bool: only those samples move."""
        move = self.step_size * ascent_direction(grad, self.norm)
        if active is not None:
            move = move * active.view(-1, *([1] * (x.dim() - 1))).to(move.dtype)
        delta = project(delta + move, self.norm, self.eps)
        # x in the range and clamping towards x: the clamped delta stays in the ball.
        return delta if self.value_range is None else clamp(x + delta, self.value_range) - x


def projected_ascent(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    threat: ThreatModel,
    steps: int | None = None,
    *,
    maximize: bool = True,
    random_start: bool | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """``threat.steps`` projected gradient steps on ``objective(x + delta)``; returns ``x + delta``.

    ``steps`` and ``random_start``, when given, override the threat model's ``steps`` and ``random_init``.

    ``objective`` maps the perturbed batch to a loss (a scalar, or per-sample values that are
    summed: each sample's step is computed from its own gradient, so the result does not depend
    on the batch). ``maximize=False`` descends. A sample whose gradient is zero (or an objective
    that does not depend on the input) does not move. ``on_step(t, delta)`` sees every iterate
    after its projection: the manipulation attacks keep their best prediction-preserving step
    with it, the visualisations and tests check the budget. Gradients are taken with respect to
    the perturbation only (parameter ``.grad`` is untouched). The caller sets the model's mode
    (:func:`eval_mode`).
    """
    steps = threat.steps if steps is None else steps
    random_start = threat.random_init if random_start is None else random_start
    x = x.detach()
    delta = threat.random_start(x, generator) if random_start else torch.zeros_like(x)
    for t in range(steps):
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(x + d)
            # allow_unused: an objective that does not depend on the input (a linear model's
            # gradient explanation) has no path back to it -- a zero gradient, no step.
            (grad,) = torch.autograd.grad(loss.sum(), d, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(d)
        delta = threat.step(x, delta.detach(), grad if maximize else -grad)
        if on_step is not None:
            on_step(t, delta)
    return (x + delta).detach()


class ThreatOptions:
    """Mixin of the option dataclasses that carry a budget as fields ``norm``, ``eps``, ``steps``
    and ``step_size`` (None: the default rule), and optionally ``random_start``.

    It adds no field, so a config's keys and identity hash are its own. A class whose norm is
    fixed (the visualisations: L2) sets ``norm`` as a plain class attribute instead of a field.
    """

    norm: Any
    eps: Any
    steps: Any
    step_size: Any

    def resolved_step_size(self) -> float:
        return resolve_step_size(self.eps, self.steps, self.step_size)

    def threat_model(self, value_range: tuple[float, float] | None = (0.0, 1.0)) -> ThreatModel:
        """The options as a :class:`ThreatModel` on data in ``value_range``."""
        return ThreatModel.of(self.norm, self.eps, self.steps, self.step_size, value_range,
                              bool(getattr(self, "random_start", False)))

    def check_threat(self, where: str, *, zero_eps: bool = False) -> None:
        """One-line errors for a bad budget, prefixed with the command (``where``); ``zero_eps``
        allows eps 0 (the bottom rung of a robustness ladder: clean training through PGD)."""
        from xairobust.config import require

        require(self.norm in NORMS, f"{where}: --norm must be linf or l2, got '{self.norm}'")
        if zero_eps:
            require(self.eps >= 0, f"{where}: --eps must be >= 0, got {self.eps}")
        else:
            require(self.eps > 0, f"{where}: --eps must be > 0, got {self.eps}")
        require(self.steps >= 1, f"{where}: --steps must be >= 1, got {self.steps}")
        require(self.step_size is None or self.step_size > 0, f"{where}: --step-size must be > 0, got {self.step_size}")


@contextlib.contextmanager
def eval_mode(model: nn.Module, freeze: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (BatchNorm uses its running statistics and never updates them,
    no dropout) and give it back its mode afterwards, even on error.

    ``freeze=True`` also sets ``requires_grad=False`` on every parameter meanwhile (and restores
    the flags): the visualisations, whose objectives are functions of the input alone, so no
    graph through the weights is built. The attacks leave the flags alone (PGD training needs
    them as they are right after the attack).
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()] if freeze else []
    model.eval()
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    try:
        yield model
    finally:
        if freeze:
            for p, f in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(f)
        model.train(was_training)
