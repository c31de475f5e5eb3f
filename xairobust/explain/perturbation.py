"""Surrogate-model explainers from Captum: LIME and KernelSHAP on image segments.

Both switch groups of input features ("segments") on and off, evaluate the model on each
perturbed input and fit a linear surrogate: LIME (Ribeiro et al. 2016) a Lasso weighted by an
exponential kernel on the cosine distance, KernelSHAP (Lundberg & Lee 2017) a linear regression
weighted by the Shapley kernel. Every pixel gets its segment's coefficient, so attributions have
the input's shape (Captum's ``return_input_shape``).

Segments (``--segmentation``): ``patches``, a square grid of ``--patch-size`` pixels (0 = auto:
an 8 x 8 grid, i.e. 1 px patches on 8 x 8 digits, 4 px on 32 x 32 CIFAR), the same for every
channel; or ``slic``, SLIC superpixels of each image (scikit-image, ``--n-segments``,
``--compactness``). Removed segments take the ``--baseline`` value: black (0) or the image's
per-channel mean.

Randomness: Captum draws the on/off patterns from torch's (and, for KernelSHAP, torch's
Categorical) global CPU RNG. Each sample is explained in its own Captum call inside
``seeded_global_rng(sample seed)``, so the draws depend on (sample, seed) only: attributions
are independent of the batch and the device. The surrogate fits are deterministic and run with
one BLAS thread (``threadpool_limits(1)``): a multi-threaded least-squares solve of a 200 x 64
problem is all overhead (measured: KernelSHAP 2.1 -> 0.75 s per digit on a loaded 2-core
machine), and a fixed thread count keeps the sums' order, hence the results, the same on any
machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import KernelShap, Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.explain._common import seeded_global_rng
from xairobust.explain.base import Explainer
from xairobust.explain.captum_explainers import _check_shapes
from xairobust.registry import EXPLAINERS

# Perturbed inputs per forward pass inside Captum (memory only; fixed, so results never depend on it).
PER_EVAL = 64


@dataclass
class SurrogateParams:
    # Model evaluations per sample. 200 for ~64 segments (our choice: about 3 per segment; the
    # LIME package's image default is 1000, Captum's own defaults are 50 / 25).
    n_samples: int = 200
    segmentation: Literal["patches", "slic"] = "patches"
    patch_size: int = 0  # pixels; 0 = auto, an 8 x 8 grid (ceil(H / 8) x ceil(W / 8) px patches)
    n_segments: int = 64  # slic: approximate number of superpixels (the same count as the auto grid)
    compactness: float = 10.0  # slic: scikit-image's default (colour vs space trade-off)
    baseline: Literal["black", "mean"] = "black"  # value of removed segments (mean: the image's per-channel mean)

    def __post_init__(self) -> None:
        require(self.n_samples >= 2, f"lime/kernel_shap: --n-samples must be >= 2, got {self.n_samples}")
        require(self.patch_size >= 0, f"lime/kernel_shap: --patch-size must be >= 0 (0 = auto), got {self.patch_size}")
        require(self.n_segments >= 2, f"lime/kernel_shap: --n-segments must be >= 2, got {self.n_segments}")
        require(self.compactness > 0, f"lime/kernel_shap: --compactness must be > 0, got {self.compactness}")


def patch_mask(shape: tuple[int, ...], patch_size: int) -> Tensor:
    """(1, 1, H, W) segment ids of a grid of ``patch_size`` px squares (0 = auto: 8 x 8 grid), row-major."""
    h, w = shape[-2:]
    ph = patch_size or -(-h // 8)
    pw = patch_size or -(-w // 8)
    rows = torch.arange(h) // ph
    cols = torch.arange(w) // pw
    ids = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
    return ids.view(1, 1, h, w)


def slic_mask(x: Tensor, n_segments: int, compactness: float) -> Tensor:
    """(1, 1, H, W) SLIC superpixel ids (0..k-1, contiguous) of one image x of shape (1, C, H, W)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise ConfigError("--segmentation slic needs scikit-image (pip install scikit-image); or use --segmentation patches") from None
    img = x[0].detach().cpu().double().numpy()
    c = img.shape[0]
    img = img[0] if c == 1 else np.moveaxis(img, 0, -1)
    labels = slic(img, n_segments=n_segments, compactness=compactness, start_label=0,
                  channel_axis=None if c == 1 else -1, convert2lab=(c == 3))
    _, ids = np.unique(labels, return_inverse=True)
    return torch.as_tensor(ids.reshape(labels.shape), dtype=torch.int64).view(1, 1, *labels.shape)


class _SurrogateBase(Explainer):
    """One seeded Captum call per sample (see the module docstring)."""

    Params = SurrogateParams
    stochastic = True
    reexplain_cost = "expensive"

    def captum(self, forward) -> object:
        raise NotImplementedError

    def feature_mask(self, x: Tensor) -> Tensor:
        p = self.params
        if p.segmentation == "slic":
            return slic_mask(x, p.n_segments, p.compactness)
        return patch_mask(tuple(x.shape), p.patch_size)

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if inputs.dim() != 4:
            raise ConfigError(f"{self.name}: segments need image-shaped inputs (B, C, H, W), got shape {tuple(inputs.shape)}")
        p = self.params
        method = self.captum(model)
        outs = []
        for i in range(len(inputs)):
            x = inputs[i : i + 1].detach()
            mask = self.feature_mask(x).to(x.device).expand_as(x)
            base = torch.zeros_like(x) if p.baseline == "black" else x.mean((2, 3), keepdim=True).expand_as(x)
            with seeded_global_rng(int(seeds[i]), x.device), threadpool_limits(limits=1), warnings.catch_warnings():
                # sklearn's Lasso may stop before its tolerance on near-constant outputs: still a fit.
                warnings.filterwarnings("ignore", message="Objective did not converge")
                a = method.attribute(x, baselines=base, target=int(targets[i]), feature_mask=mask,
                                     n_samples=p.n_samples, perturbations_per_eval=min(PER_EVAL, p.n_samples))
            outs.append(a.detach())
        return torch.cat(outs) if outs else torch.empty_like(inputs)


@dataclass
class LimeParams(SurrogateParams):
    alpha: float = 0.01  # Lasso penalty of the surrogate (Captum's Lime default)
    # Exponential kernel on the cosine distance between the on/off pattern and all-on (Captum's
    # default similarity; the LIME package uses 0.25 on images: lower = more local).
    kernel_width: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.alpha >= 0, f"lime: --alpha must be >= 0, got {self.alpha}")
        require(self.kernel_width > 0, f"lime: --kernel-width must be > 0, got {self.kernel_width}")


@EXPLAINERS.register("lime", label="LIME", library="captum.attr.Lime (Lasso surrogate; patch or SLIC segments; per-sample seeds)")
class LimeExplainer(_SurrogateBase):
    """LIME: a weighted Lasso on random segment on/off patterns (Captum's Lime, pinned settings)."""

    Params = LimeParams
    name = "lime"
    zero_hint = "the Lasso removed every segment: lower --alpha (e.g. 0.001) or raise --n-samples"

    def captum(self, forward) -> object:
        p = self.params
        return Lime(forward, interpretable_model=SkLearnLasso(alpha=p.alpha),
                    similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=p.kernel_width))


@EXPLAINERS.register("kernel_shap", label="KSHAP", library="captum.attr.KernelShap (patch or SLIC segments; per-sample seeds)")
class KernelShapExplainer(_SurrogateBase):
    """KernelSHAP: Shapley-kernel-weighted linear regression on segment coalitions (Captum's KernelShap)."""

    name = "kernel_shap"

    def captum(self, forward) -> object:
        return KernelShap(forward)
