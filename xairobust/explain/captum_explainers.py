"""Integrated Gradients, Gradient SHAP and Expected Gradients, built on Captum.

All three compute gradients of the model output ``targets`` (a logit for classifiers, an output
for regressors) with respect to inputs in the model's input space ([0, 1] pixels). Each runs
Captum's computation (IG: its quadrature; SHAP: its draws) in one batched backward pass per
chunk instead of Captum's per-point / per-sample calls, and tests/test_explain.py checks the
results equal ``captum.attr.IntegratedGradients`` / ``captum.attr.GradientShap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from xairobust.config import require
from xairobust.explain._common import DEFAULT_CHUNK, blur, chunks, target_grad, uniform_like
from xairobust.explain.base import Explainer
from xairobust.registry import EXPLAINERS


def _check_shapes(inputs: Tensor, targets: Tensor, seeds: Tensor) -> None:
    if not (len(inputs) == len(targets) == len(seeds)):
        raise ValueError(f"{len(inputs)} inputs, {len(targets)} targets, {len(seeds)} seeds")


@dataclass
class IGParams:
    n_steps: int = 50
    # Captum's names; the issue asks for the trapezoid rule by default (Captum's own default is
    # Gauss-Legendre, which needs fewer steps but is less familiar to readers of IG papers).
    method: Literal["riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre"] = (
        "riemann_trapezoid"
    )
    baseline: Literal["black", "blurred", "uniform"] = "black"
    blur_sigma: float = 2.0  # pixels, for baseline=blurred
    uniform_low: float = 0.0  # range of the uniform-noise baseline ([0, 1] pixels)
    uniform_high: float = 1.0

    def __post_init__(self) -> None:
        require(self.n_steps >= 2, f"ig: --n-steps must be >= 2, got {self.n_steps}")
        require(self.blur_sigma > 0, f"ig: --blur-sigma must be > 0, got {self.blur_sigma}")
        require(self.uniform_low < self.uniform_high, "ig: --uniform-low must be below --uniform-high")


def integrate(model: nn.Module, x: Tensor, base: Tensor, targets: Tensor, n_steps: int, method: str,
              create_graph: bool = False) -> Tensor:
    """Captum's IG sum with Captum's quadrature, one backward of the summed target outputs.

    ``captum.attr.IntegratedGradients`` back-propagates ``torch.unbind(outputs)`` (one grad
    output per point) and builds the path with a Python loop over steps; on small models
    that costs a third of the time. The result is the same (tests/test_explain.py). With
    ``create_graph`` it keeps the graph back to ``x`` (the manipulation attacks).
    """
    n = n_steps
    step_sizes, alphas = (f(n) for f in approximation_parameters(method))
    shape = (n,) + (1,) * x.dim()
    a = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(shape)
    w = torch.tensor(step_sizes, dtype=torch.float32, device=x.device).view(shape)
    if not create_graph:
        x = x.detach()
    diff = x - base
    points = (base.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(n * len(x), *x.shape[1:])
    rows = targets.to(x.device).repeat(n)  # step-major, like Captum
    grad = target_grad(model, points, rows, create_graph)
    total = (grad.view(n, *x.shape) * w).sum(0)
    out = total * diff
    return out if create_graph else out.detach()


@EXPLAINERS.register("ig", label="IG", library="captum.attr.IntegratedGradients (same sum, one backward)")
class IntegratedGradientsExplainer(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017); records Captum's convergence delta per sample.

    delta = sum(attributions) - (f(x) - f(baseline)): the completeness error of the path integral.
    """

    Params = IGParams
    stochastic = False  # only the uniform baseline is random, and it is fixed by the sample seed
    differentiable = True
    chunk_size = DEFAULT_CHUNK

    def __init__(self, params: IGParams, background: Tensor | None = None) -> None:
        super().__init__(params, background)
        self._delta: Tensor | None = None
        # The convergence delta costs one extra forward of 2B inputs; the score stage turns it
        # off where nothing reads it (re-explanations inside metrics).
        self.want_delta = True

    def baselines(self, inputs: Tensor, seeds: Tensor) -> Tensor:
        p = self.params
        if p.baseline == "black":
            return torch.zeros_like(inputs)
        if p.baseline == "blurred":
            return blur(inputs, p.blur_sigma)
        return uniform_like(inputs, seeds, p.uniform_low, p.uniform_high)

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor,
                  create_graph: bool = False) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        outs, deltas = [], []
        for sl in chunks(len(inputs), self.chunk_size):
            x, t = inputs[sl], targets[sl]
            # The baseline is a constant of the graph (also when it is the blurred input).
            base = self.baselines(x.detach(), seeds[sl])
            attr = self.integrate(model, x, base, t, create_graph)
            outs.append(attr)
            if self.want_delta and not create_graph:
                deltas.append(self.delta(model, x, base, t, attr).cpu())
        self._delta = torch.cat(deltas) if deltas else None
        return torch.cat(outs) if outs else torch.empty_like(inputs)

    def integrate(self, model: nn.Module, x: Tensor, base: Tensor, targets: Tensor, create_graph: bool = False) -> Tensor:
        """Captum's IG sum with Captum's quadrature (see :func:`integrate`)."""
        return integrate(model, x, base, targets, self.params.n_steps, self.params.method, create_graph)

    @staticmethod
    @torch.no_grad()
    def delta(model: nn.Module, x: Tensor, base: Tensor, targets: Tensor, attr: Tensor) -> Tensor:
        """Captum's convergence delta, sum(attr) - (f(x) - f(baseline)), from one forward pass
        of 2B inputs (Captum's own runs two passes plus checks: ~8 % of IG's time on small models)."""
        out = model(torch.cat([x, base])).double()
        rows = torch.arange(len(x), device=x.device)
        targets = targets.to(x.device)
        gap = out[rows, targets] - out[rows + len(x), targets]
        return (attr.double().flatten(1).sum(1) - gap).float()

    def extras(self) -> dict[str, Tensor]:
        return {} if self._delta is None else {"convergence_delta": self._delta}


class _ShapBase(Explainer):
    """Gradient SHAP / Expected Gradients, batched across samples with Captum's per-sample draws.

    phi(x) = mean_k (x~_k - b_k) * dF(b_k + a_k (x~_k - b_k))/dx~, with x~_k = x + noise_k,
    b_k drawn from the baseline distribution and a_k ~ U(0, 1). Captum's GradientShap computes
    this but draws from the global RNGs (no seed argument), so an attribution would depend on
    the batch it came in. Here each sample draws from its own seed exactly what Captum draws
    after ``torch.manual_seed(seed); np.random.seed(seed)`` (noise, then baseline indices, then
    alphas), on the CPU, and the gradients of all samples x draws run in one batch.
    ``tests/test_explain.py`` checks the result equals ``captum.attr.GradientShap`` called per
    sample under that seed, and a direct Monte-Carlo loop.
    """

    stochastic = True
    chunk_size = DEFAULT_CHUNK

    def baseline_set(self, x: Tensor, seed: int) -> Tensor:
        raise NotImplementedError

    def stdevs(self) -> float:
        raise NotImplementedError

    def draws(self, x: Tensor, seed: int) -> tuple[Tensor | None, Tensor, Tensor]:
        """One sample's (input noise or None, baselines b_k, alphas a_k), ``n_samples`` each,
        drawn in Captum's order from that sample's seed (x of shape (1, ...))."""
        n = self.params.n_samples
        noise = None
        if self.stdevs() > 0:
            std = torch.full((n, *x.shape[1:]), self.stdevs(), dtype=x.dtype)
            noise = torch.normal(0.0, std, generator=torch.Generator().manual_seed(seed))
        rs = np.random.RandomState(seed % (2**32))
        base = self.baseline_set(x, seed)
        picks = torch.as_tensor(rs.choice(len(base), n), device=base.device)
        alphas = torch.tensor(rs.uniform(0.0, 1.0, n), dtype=x.dtype)
        return noise, base[picks], alphas

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        n = self.params.n_samples
        dev = inputs.device
        outs = []
        for sl in chunks(len(inputs), self.chunk_size):
            drawn = [self.draws(inputs[i : i + 1], int(seeds[i])) for i in range(sl.start, sl.stop)]
            xs = inputs[sl].repeat_interleave(n, 0)
            if drawn[0][0] is not None:
                xs = xs + torch.cat([d[0] for d in drawn]).to(dev)
            b = torch.cat([d[1] for d in drawn]).to(dev, inputs.dtype)
            alphas = torch.cat([d[2] for d in drawn]).to(dev).view(-1, *([1] * (inputs.dim() - 1)))
            diffs = xs - b
            points = (b + alphas * diffs).detach().requires_grad_()
            rows = targets[sl].to(dev).repeat_interleave(n)
            with torch.enable_grad():
                out = model(points)
                (grad,) = torch.autograd.grad(out.gather(1, rows[:, None]).sum(), points)
            attr = (diffs * grad).view(len(drawn), n, *inputs.shape[1:]).mean(1)
            outs.append(attr.detach())
        return torch.cat(outs) if outs else torch.empty_like(inputs)


@dataclass
class GradientShapParams:
    n_samples: int = 50
    # Std of the Gaussian noise Captum adds to the input for each sample ("smoothgrad" part of
    # Gradient SHAP). 0.1 in [0, 1] pixel units (about 25/255) is our choice, close to the 0.09
    # of Captum's tutorial; the NsLoss paper uses only IG.
    stdevs: float = 0.1
    baseline: Literal["black", "uniform", "train"] = "black"
    n_baselines: int = 20  # size of the uniform/train baseline distribution

    def __post_init__(self) -> None:
        require(self.n_samples >= 1, f"gradient_shap: --n-samples must be >= 1, got {self.n_samples}")
        require(self.stdevs >= 0, f"gradient_shap: --stdevs must be >= 0, got {self.stdevs}")
        require(self.n_baselines >= 1, f"gradient_shap: --n-baselines must be >= 1, got {self.n_baselines}")


@EXPLAINERS.register("gradient_shap", label="GradSHAP", library="captum.attr.GradientShap (batched, same draws)")
class GradientShapExplainer(_ShapBase):
    """Gradient SHAP: input noise + random baselines from a distribution (default: the black image)."""

    Params = GradientShapParams

    @classmethod
    def wants_background(cls, params: GradientShapParams) -> bool:
        return params.baseline == "train"

    def stdevs(self) -> float:
        return self.params.stdevs

    def baseline_set(self, x: Tensor, seed: int) -> Tensor:
        p = self.params
        if p.baseline == "black":
            return torch.zeros_like(x)
        if p.baseline == "uniform":
            many = x.expand(p.n_baselines, *x.shape[1:])
            return uniform_like(many, torch.arange(p.n_baselines) + seed * 7919, 0.0, 1.0)
        if self.background is None:
            raise ValueError("gradient_shap with baseline=train needs background (training inputs)")
        return _draw_background(self.background, p.n_baselines, seed).to(x.device, x.dtype)


def _draw_background(background: Tensor, k: int, seed: int) -> Tensor:
    """``k`` training inputs drawn for one sample from its seed (without replacement)."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    idx = torch.randperm(len(background), generator=g)[: min(k, len(background))]
    return background[idx]


@dataclass
class ExpectedGradientsParams:
    # Erion et al. use one baseline per sample and many samples; 100 gives a Monte-Carlo error
    # a few times smaller than the between-model differences we measure on digits (our choice).
    n_samples: int = 100

    def __post_init__(self) -> None:
        require(self.n_samples >= 1, f"expected_gradients: --n-samples must be >= 1, got {self.n_samples}")


@EXPLAINERS.register("expected_gradients", label="EG", library="captum.attr.GradientShap (data baselines, no noise; batched, same draws)")
class ExpectedGradientsExplainer(_ShapBase):
    """Expected Gradients (Erion et al. 2021): phi = E[(x - x') * dF(x' + a(x - x'))/dx].

    x' is drawn uniformly from the training background and a ~ U(0, 1); this is Captum's
    GradientShap with the background as baseline distribution and zero input noise.
    """

    Params = ExpectedGradientsParams
    needs_background = True

    @classmethod
    def wants_background(cls, params: ExpectedGradientsParams) -> bool:
        return True

    def stdevs(self) -> float:
        return 0.0

    def baseline_set(self, x: Tensor, seed: int) -> Tensor:
        if self.background is None:
            raise ValueError("expected_gradients needs background (training inputs)")
        return self.background.to(x.device, x.dtype)
