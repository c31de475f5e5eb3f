"""The BIM attack for regression models (Kurakin et al. 2017, adapted as in Hoedt et al.).

Untargeted: starting from delta_0 = 0, every iteration moves the perturbation one sign step of
size ``step_size`` up the gradient of the per-sample MSE between prediction and target, then
clips it to the L-inf ball of radius ``eps``::

    delta <- clip_eps(delta + step_size * sign(grad_delta MSE(f(x + delta), y)))

A sample stops early when its own MSE reaches ``mse_threshold`` or the Pearson correlation
between its predicted and true values (over the outputs, here the 8 emotions, as the reference
does per excerpt) falls to ``corr_threshold``. The reference settings are eps 0.001, step 0.002,
1000 iterations, correlation threshold -1 (which in practice means: run all iterations).

Samples are attacked in batches but independently: the model runs in eval mode (BatchNorm uses
running statistics, no dropout), so one sample's gradient does not depend on the others, and
each sample has its own stopping state -- the result equals attacking one excerpt at a time.

``unconstrained_reference=True`` reproduces the reference implementation instead of the
method its paper describes: its clip ``delta.clamp(...)`` is not in place, so it never applies,
and its steps are Adam (lr = step_size) on the sign of the gradient. Perturbations then leave the
eps-ball by orders of magnitude (the reference logs L2 norms of 6-184, where eps = 0.001 allows
at most 0.001 * sqrt(313 * 149) = 0.22). Off by default; only for comparison with that code.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.perturb import ThreatModel, eval_mode
from xairobust.registry import ATTACKS

NAME = "bim-regression"


@dataclass
class BIMRegressionParams:
    """Options of ``xairobust attack --attack bim-regression`` / ``xairobust mer-attack``."""

    eps: float = 0.001  # L-inf radius in the input space (standardised log-spectrogram)
    step_size: float = 0.002  # eta
    max_iter: int = 1000
    corr_threshold: float | None = -1.0  # stop a sample when its correlation is <= this (None: off)
    mse_threshold: float | None = None  # stop a sample when its MSE is >= this (None: off)
    unconstrained_reference: bool = False  # reproduce the reference code's missing clip (see module doc)

    def __post_init__(self) -> None:
        require(self.eps > 0, f"attack: --eps must be > 0, got {self.eps}")
        require(self.step_size > 0, f"attack: --step-size must be > 0, got {self.step_size}")
        require(self.max_iter >= 1, f"attack: --max-iter must be >= 1, got {self.max_iter}")
        require(
            self.corr_threshold is None or -1.0 <= self.corr_threshold <= 1.0,
            f"attack: --corr-threshold must be in [-1, 1], got {self.corr_threshold}",
        )
        require(
            self.mse_threshold is None or self.mse_threshold > 0,
            f"attack: --mse-threshold must be > 0, got {self.mse_threshold}",
        )

    def threat_model(self) -> ThreatModel:
        return bim_threat(self.eps, self.step_size, self.max_iter)

    def tag(self) -> str:
        """File-name tag of a result (distinguishes radii and the reference mode)."""
        return f"{NAME}_eps{self.eps:g}" + ("_unconstrained" if self.unconstrained_reference else "")


def bim_threat(eps: float, step_size: float, max_iter: int) -> ThreatModel:
    """BIM's budget: the L-inf ball, no value range (standardised spectrograms are unbounded), from
    delta 0; the core's step is the clip_eps(delta + step_size * sign(grad)) of the method."""
    return ThreatModel("linf", eps, step_size, value_range=None, steps=max_iter)


@dataclass
class BIMResult:
    x_adv: Tensor  # (B, ...) adversarial inputs
    iterations: Tensor  # (B,) updates applied to each sample
    stopped_early: Tensor  # (B,) bool: a threshold was reached before max_iter


def per_sample_mse(pred: Tensor, y: Tensor) -> Tensor:
    return (pred - y).pow(2).flatten(1).mean(1)


def per_sample_corr(pred: Tensor, y: Tensor) -> Tensor:
    """Pearson r between each row of ``pred`` and of ``y``; NaN where a row is constant."""
    p = pred.flatten(1).double()
    t = y.flatten(1).double()
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    denom = p.norm(dim=1) * t.norm(dim=1)
    r = (p * t).sum(1) / denom
    return torch.where(denom > 0, r, torch.full_like(r, float("nan")))


def _reached(pred: Tensor, y: Tensor, corr_threshold: float | None, mse_threshold: float | None) -> Tensor:
    done = torch.zeros(len(pred), dtype=torch.bool, device=pred.device)
    if corr_threshold is not None:
        r = per_sample_corr(pred, y)
        done |= torch.nan_to_num(r, nan=math.inf) <= corr_threshold
    if mse_threshold is not None:
        done |= per_sample_mse(pred, y) >= mse_threshold
    return done


def bim_regression_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 0.001,
    step_size: float = 0.002,
    max_iter: int = 1000,
    corr_threshold: float | None = -1.0,
    mse_threshold: float | None = None,
    unconstrained_reference: bool = False,
) -> BIMResult:
    """BIM on a batch, each sample with its own stopping; parameter gradients are untouched."""
    x = x.detach()
    y = y.detach().to(x.dtype)
    threat = bim_threat(eps, step_size, max_iter)
    delta = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    iterations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    stopped = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    adam = None
    if unconstrained_reference:
        delta.requires_grad_(True)
        adam = torch.optim.Adam([delta], lr=step_size)
    with eval_mode(model):
        for _ in range(threat.steps):
            with torch.enable_grad():
                d = delta if adam is not None else delta.clone().requires_grad_(True)
                pred = model(x + d)
                # Sum of per-sample MSEs: sample i's gradient is that of its own MSE.
                loss = per_sample_mse(pred, y).sum()
                (grad,) = torch.autograd.grad(loss, d)
            reached = _reached(pred.detach(), y, corr_threshold, mse_threshold) & active
            stopped |= reached
            active &= ~reached
            if not bool(active.any()):
                break
            if adam is None:
                delta = threat.step(x, delta, grad, active=active)
            else:
                _reference_adam_step(adam, delta, grad, active)
            iterations += active.to(torch.int64)
    return BIMResult((x + delta).detach(), iterations, stopped)


def _reference_adam_step(adam: torch.optim.Optimizer, delta: Tensor, grad: Tensor, active: Tensor) -> None:
    """The reference code's update: Adam on the sign of the gradient, and no clip (see module doc)."""
    frozen = delta.detach().clone()
    delta.grad = -grad.sign()  # Adam minimises; the attack ascends
    adam.step()
    mask = active.view(-1, *([1] * (delta.dim() - 1)))
    with torch.no_grad():  # samples that stopped keep their perturbation
        delta.copy_(torch.where(mask.expand_as(delta), delta, frozen))


def bim_regression(model: nn.Module, x: Tensor, y: Tensor, **kwargs: object) -> Tensor:
    """Registered entry point: adversarial inputs only (see ``bim_regression_attack``, whose
    keywords it takes; others are ignored)."""
    wanted = inspect.signature(bim_regression_attack).parameters
    return bim_regression_attack(model, x, y, **{k: v for k, v in kwargs.items() if k in wanted}).x_adv  # type: ignore[arg-type]


# Callers that pass the keywords a registered attack's signature names see BIM's own.
bim_regression.__signature__ = inspect.signature(bim_regression_attack).replace(  # type: ignore[attr-defined]
    return_annotation=Tensor)


ATTACKS.register(NAME, label="BIM (regression)", norms=("linf",), task="regression")(bim_regression)


def snr_db(signal: Tensor, perturbed: Tensor) -> np.ndarray:
    """Per-sample 10*log10(||s||^2 / ||s_adv - s||^2) in dB (inf where nothing changed)."""
    s = signal.flatten(1).double()
    noise = (perturbed.flatten(1).double() - s).pow(2).sum(1)
    power = s.pow(2).sum(1)
    with np.errstate(divide="ignore"):
        return (10.0 * torch.log10(power / noise)).numpy()
