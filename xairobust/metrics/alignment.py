"""Alignment (Etmann et al. 2019, "On the connection between adversarial robustness and saliency
map interpretability", ICML) and Effective Complexity (Nguyen & Martinez 2020).

``alignment`` is |<x, a>| / (||x|| ||a||) over all features of a sample: how much the
attribution map looks like the input itself. Etmann et al. show that robust models' gradients
are more aligned with the image; the same property lets an edge detector or the image itself
score well on other metrics, so xairobust reports it beside them (issue 18). It is a diagnostic
more than a quality: "higher" is the direction Etmann et al. associate with interpretable-looking
maps. Its bias: for non-negative images x has a large constant component, so even a constant map
is aligned (|sum x| / (sqrt(d) ||x||), often > 0.8). ``alignment_centered`` removes that: both x
and a have their per-sample, per-channel mean subtracted first, so a constant map has no
alignment (0 / 0: NaN) and for one channel the value is |Pearson r(x, a)|.

No Quantus metric computes alignment; the reference path (``--engine quantus``) is a direct
numpy computation, the native engine a batched torch one; tests/test_alignment.py checks both
against closed forms.

``effective_complexity`` is ``quantus.EffectiveComplexity``: the number of features with
|n(a)| > eps (n = per-sample max-normalisation; Quantus' ``abs=True, normalise=True``,
``eps=1e-5``). Lower is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from xairobust.config import require
from xairobust.metrics import native
from xairobust.metrics._quantus import QuantusMetric
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import register


def alignment_numpy(x: np.ndarray, a: np.ndarray, centered: bool) -> np.ndarray:
    """The reference: float64 numpy, one sample at a time."""
    out = np.empty(len(x))
    for i in range(len(x)):
        xi, ai = x[i].astype(np.float64), a[i].astype(np.float64)
        if centered:
            axes = tuple(range(1, xi.ndim))  # per channel
            xi = xi - xi.mean(axis=axes, keepdims=True)
            ai = ai - ai.mean(axis=axes, keepdims=True)
        den = np.linalg.norm(xi.ravel()) * np.linalg.norm(ai.ravel())
        out[i] = abs(float(xi.ravel() @ ai.ravel())) / den if den > 0 else np.nan
    return out


def alignment_torch(x: torch.Tensor, a: torch.Tensor, centered: bool) -> np.ndarray:
    x, a = x.double(), a.double()
    if centered:
        dims = tuple(range(2, x.dim()))
        x = x - x.mean(dim=dims, keepdim=True)
        a = a - a.mean(dim=dims, keepdim=True)
    x, a = x.reshape(len(x), -1), a.reshape(len(a), -1)
    den = torch.linalg.vector_norm(x, dim=1) * torch.linalg.vector_norm(a, dim=1)
    val = (x * a).sum(1).abs() / den
    return torch.where(den > 0, val, torch.full_like(val, float("nan"))).cpu().numpy()


class _Alignment(QuantusMetric):
    centered: ClassVar[bool] = False

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        return alignment_numpy(inp.x[idx], inp.a[idx], self.centered)  # no Quantus metric: numpy reference

    def score_native(self, inp: MetricInput) -> np.ndarray:
        out = np.empty(len(inp.x))
        for idx in self.chunking(inp).sample_chunks(len(inp.x)):
            x = torch.as_tensor(inp.x[idx], device=inp.device)
            a = torch.as_tensor(inp.a[idx], device=inp.device)
            out[idx] = alignment_torch(x, a, self.centered)
            self.progress(len(idx))
        return out


@register("alignment", category="alignment", direction="higher", label="Align",
          source="Etmann et al. 2019 (ICML): |<x, a>| / (||x|| ||a||)")
class Alignment(_Alignment):
    """Cosine (absolute) between the input and its attribution."""


@register("alignment_centered", category="alignment", direction="higher", label="AlignC",
          source="Etmann et al. 2019 (ICML), per-channel means of x and a subtracted (xairobust)")
class AlignmentCentered(_Alignment):
    """Alignment after subtracting each channel's mean from x and a (module doc)."""

    centered = True


@dataclass
class EffectiveComplexityParams:
    eps: float = 1e-5  # Quantus default

    def __post_init__(self) -> None:
        require(self.eps >= 0, f"--eps must be >= 0, got {self.eps}")


@register("effective_complexity", category="complexity", direction="lower", label="EffC",
          source="Nguyen & Martinez 2020 (arXiv 2007.07584), quantus.EffectiveComplexity")
class EffectiveComplexity(QuantusMetric):
    """Number of features whose max-normalised |attribution| exceeds eps."""

    Params = EffectiveComplexityParams
    quantus_name = "EffectiveComplexity"

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {"eps": self.params.eps}

    def score_native(self, inp: MetricInput) -> np.ndarray:
        self.progress(len(inp.x))
        a = native.normalise(torch.as_tensor(inp.a, device=inp.device)).abs().reshape(len(inp.a), -1)
        return (a > self.params.eps).sum(1).double().cpu().numpy()
