"""Explanations that are differentiable with respect to the input (``create_graph=True``).

Manipulation attacks (``xairobust.manipulate``) need d explanation / d input. The explainers in
``EXPLAINERS`` return detached tensors, so the gradient-based ones have a second, graph-keeping
implementation here, registered in :data:`DIFFERENTIABLE` under the same name. With
``create_graph=False`` each returns the same values as Captum (tests/test_manipulate.py checks
``captum.attr.IntegratedGradients``, ``Saliency``, ``InputXGradient`` and ``NoiseTunnel``);
with ``create_graph=True`` the result carries the graph back to ``inputs``.

An explainer without an entry here (LIME, KernelSHAP, Grad-CAM, LRP, ...) cannot be attacked
directly; it is evaluated by transfer (``xairobust manipulate --transfer-to``).

Every entry: ``fn(model, inputs, targets, params, seeds, create_graph) -> attributions`` shaped
like ``inputs``; ``params`` is the entry's ``Params`` dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from xairobust.config import require
from xairobust.explain._common import sample_generator


@dataclass(frozen=True)
class Differentiable:
    name: str
    fn: Callable[..., Tensor]
    Params: type


DIFFERENTIABLE: dict[str, Differentiable] = {}


def register(name: str, params: type) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        DIFFERENTIABLE[name] = Differentiable(name, fn, params)
        return fn

    return deco


def _target_grad(model: nn.Module, points: Tensor, rows: Tensor, create_graph: bool) -> Tensor:
    """d model(points)[i, rows[i]] / d points (one backward of the summed target outputs)."""
    if not points.requires_grad:
        points = points.detach().requires_grad_()
    with torch.enable_grad():
        out = model(points)
        (grad,) = torch.autograd.grad(out.gather(1, rows[:, None]).sum(), points, create_graph=create_graph)
    return grad


@dataclass
class DiffIGParams:
    n_steps: int = 16  # fewer than `explain`'s 50: every attack step computes it twice
    method: Literal["riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre"] = (
        "riemann_trapezoid"
    )
    baseline: Literal["black", "blurred", "uniform"] = "black"
    blur_sigma: float = 2.0
    uniform_low: float = 0.0
    uniform_high: float = 1.0

    def __post_init__(self) -> None:
        require(self.n_steps >= 2, f"ig: --n-steps must be >= 2, got {self.n_steps}")


@register("ig", DiffIGParams)
def integrated_gradients(
    model: nn.Module, inputs: Tensor, targets: Tensor, params: DiffIGParams, seeds: Tensor, create_graph: bool = False
) -> Tensor:
    """IG with Captum's quadrature (same sum as ``xairobust.explain.captum_explainers``)."""
    from xairobust.explain.captum_explainers import IGParams, IntegratedGradientsExplainer

    ig = IntegratedGradientsExplainer(IGParams(**{k: getattr(params, k) for k in IGParams.__dataclass_fields__}))
    base = ig.baselines(inputs.detach(), seeds).detach()
    n = params.n_steps
    step_sizes, alphas = (f(n) for f in approximation_parameters(params.method))
    shape = (n,) + (1,) * inputs.dim()
    a = torch.tensor(alphas, dtype=inputs.dtype, device=inputs.device).view(shape)
    w = torch.tensor(step_sizes, dtype=inputs.dtype, device=inputs.device).view(shape)
    x = inputs if create_graph else inputs.detach()
    diff = x - base
    points = (base.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(n * len(x), *x.shape[1:])
    rows = targets.to(x.device).repeat(n)
    grad = _target_grad(model, points, rows, create_graph)
    total = (grad.view(n, *x.shape) * w).sum(0)
    out = total * diff
    return out if create_graph else out.detach()


@dataclass
class SaliencyParams:
    abs: bool = True  # Captum's Saliency default: |gradient|


@register("saliency", SaliencyParams)
def saliency(
    model: nn.Module, inputs: Tensor, targets: Tensor, params: SaliencyParams, seeds: Tensor, create_graph: bool = False
) -> Tensor:
    """Simple gradient (Simonyan et al. 2014) = ``captum.attr.Saliency``."""
    x = inputs if create_graph else inputs.detach()
    g = _target_grad(model, x, targets.to(x.device), create_graph)
    g = g.abs() if params.abs else g
    return g if create_graph else g.detach()


@dataclass
class NoParams:
    pass


@register("input_x_gradient", NoParams)
def input_x_gradient(
    model: nn.Module, inputs: Tensor, targets: Tensor, params: Any, seeds: Tensor, create_graph: bool = False
) -> Tensor:
    """Gradient x Input = ``captum.attr.InputXGradient``."""
    x = inputs if create_graph else inputs.detach()
    g = _target_grad(model, x, targets.to(x.device), create_graph)
    out = x * g
    return out if create_graph else out.detach()


@dataclass
class SmoothGradParams:
    nt_samples: int = 8
    stdevs: float = 0.1  # absolute noise std in [0, 1] pixel units, as Captum's ``stdevs``
    abs: bool = True

    def __post_init__(self) -> None:
        require(self.nt_samples >= 1, f"smoothgrad: --nt-samples must be >= 1, got {self.nt_samples}")
        require(self.stdevs >= 0, f"smoothgrad: --stdevs must be >= 0, got {self.stdevs}")


def smoothgrad_noise(inputs: Tensor, seeds: Tensor, params: SmoothGradParams) -> Tensor:
    """(B * nt_samples, ...) Gaussian noise, sample-major, each sample's from its own seed."""
    n = params.nt_samples
    noise = [
        torch.randn((n, *inputs.shape[1:]), generator=sample_generator(int(s))) * params.stdevs for s in seeds
    ]
    return torch.cat(noise).to(inputs.device, inputs.dtype)


@register("smoothgrad", SmoothGradParams)
def smoothgrad(
    model: nn.Module, inputs: Tensor, targets: Tensor, params: SmoothGradParams, seeds: Tensor, create_graph: bool = False
) -> Tensor:
    """SmoothGrad (``NoiseTunnel(Saliency)``, nt_type smoothgrad): mean saliency over noisy copies.

    The noise is drawn per sample from its seed (Captum draws from the global RNG), and stays
    fixed while attacking (the attack differentiates the expectation's Monte-Carlo estimate).
    """
    n = params.nt_samples
    x = inputs if create_graph else inputs.detach()
    noisy = x.repeat_interleave(n, 0) + smoothgrad_noise(x, seeds, params)
    g = _target_grad(model, noisy, targets.to(x.device).repeat_interleave(n), create_graph)
    g = g.abs() if params.abs else g
    out = g.view(len(x), n, *x.shape[1:]).mean(1)
    return out if create_graph else out.detach()


@dataclass
class SmoothGradIGParams:
    nt_samples: int = 4
    stdevs: float = 0.1
    n_steps: int = 8
    method: Literal["riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre"] = (
        "riemann_trapezoid"
    )

    def __post_init__(self) -> None:
        require(self.nt_samples >= 1, f"smoothgrad_ig: --nt-samples must be >= 1, got {self.nt_samples}")
        require(self.stdevs >= 0, f"smoothgrad_ig: --stdevs must be >= 0, got {self.stdevs}")
        require(self.n_steps >= 2, f"smoothgrad_ig: --n-steps must be >= 2, got {self.n_steps}")


@register("smoothgrad_ig", SmoothGradIGParams)
def smoothgrad_ig(
    model: nn.Module, inputs: Tensor, targets: Tensor, params: SmoothGradIGParams, seeds: Tensor, create_graph: bool = False
) -> Tensor:
    """``NoiseTunnel(IntegratedGradients)``, nt_type smoothgrad, black baseline: the mean IG of
    noisy copies (noise per sample from its seed, as in :func:`smoothgrad`)."""
    n = params.nt_samples
    x = inputs if create_graph else inputs.detach()
    noise = smoothgrad_noise(x, seeds, SmoothGradParams(nt_samples=n, stdevs=params.stdevs))
    noisy = x.repeat_interleave(n, 0) + noise
    ig = DiffIGParams(n_steps=params.n_steps, method=params.method, baseline="black")
    attr = integrated_gradients(model, noisy, targets.repeat_interleave(n), ig, seeds.repeat_interleave(n), create_graph)
    return attr.view(len(x), n, *x.shape[1:]).mean(1)


def get(name: str) -> Differentiable:
    """The differentiable version of explainer ``name``, or a ConfigError saying which exist."""
    from xairobust.errors import ConfigError
    from xairobust.registry import did_you_mean

    if name not in DIFFERENTIABLE:
        raise ConfigError(
            f"explainer '{name}' has no differentiable version, so it cannot be attacked directly;"
            f" attack one of {', '.join(sorted(DIFFERENTIABLE))} and score it with --transfer-to {name}."
            f"{did_you_mean(name, list(DIFFERENTIABLE))}"
        )
    return DIFFERENTIABLE[name]
