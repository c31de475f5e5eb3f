"""Relative stability (Agarwal et al. 2022, "Rethinking stability for attribution-based
explanations", arXiv 2203.06877): Relative Input / Output / Representation Stability.

For perturbations x' of x (here: the same uniform L-inf noise of radius 8/255 as Max/Avg-
Sensitivity, clipped to the value range), with e = the explanation and eps = 1e-6 (Quantus'
``eps_min``; every division by a zero entry uses eps instead of the zero):

    RIS = max_x' || (e_x - e_x') / e_x || / max(|| (x - x') / x ||, eps)
    ROS = max_x' || (e_x - e_x') / e_x || / max(|| h(x) - h(x') ||, eps)       h = logits
    RRS = max_x' || (e_x - e_x') / e_x || / max(|| (L(x) - L(x')) / L(x) ||, eps)

(element-wise divisions; the norm is over all features). L is every internal representation
Quantus 0.6 collects by default: the outputs of every module of the model except the model
itself and ``nn.Sequential`` containers, concatenated. Lower is better (a stable explanation
changes little relative to how much the input / output / representation changed).

Shared work: with the same ``nr_samples``, ``radius``, ``clip`` and ``drop_changed`` as
Max/Avg-Sensitivity, the native engine reads the *same* perturbed explanations (one pass, stream
``sensitivity``; ``declare_shared`` asks that pass for these ratios too). Quantus' default
``return_nan_when_prediction_changes=True`` (the paper restricts x' to the same predicted label)
is ours ``drop_changed``; it defaults to False like the other sensitivity metrics (``score
--drop-changed`` sets it for all of them), and as in Quantus one changed prediction makes the
sample NaN. Quantus' own default noise (uniform up to 0.2) is replaced by the 8/255 radius
(xairobust.metrics.quantus_metrics, module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.metrics import native
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import DEFAULT_RADIUS, _Sensitivity, register

EPS_MIN = 1e-6  # Quantus' eps_min for every relative-stability division


@dataclass
class RelativeStabilityParams:
    nr_samples: int = 200  # Quantus default
    radius: float = DEFAULT_RADIUS  # as Max/Avg-Sensitivity: the same draws, shared
    drop_changed: bool = False  # Quantus: True (see module doc)
    clip: bool = True

    def __post_init__(self) -> None:
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.radius > 0, f"--radius must be > 0, got {self.radius}")


def _relative(a: Tensor, b: Tensor) -> Tensor:
    """(a - b) / (a + (a == 0) * eps), in float64 (Quantus' numerator)."""
    return (a - b) / (a + (a == 0).to(a.dtype) * EPS_MIN)


def hidden_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs Quantus' get_hidden_representations collects by default."""
    return [m for _, m in model.named_modules() if not isinstance(m, (type(model), nn.Sequential))]


def representations(model: nn.Module, x: Tensor, points_per_pass: int) -> Tensor:
    """(N, R): every hidden module's output, flattened per sample and concatenated."""
    rows: list[Tensor] = []
    for s in range(0, len(x), max(1, points_per_pass)):
        part = x[s : s + points_per_pass]
        found: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any, found: list[Tensor] = found, k: int = len(part)) -> None:
            if isinstance(out, Tensor):
                found.append(out.detach().reshape(k, -1).clone())

        handles = [m.register_forward_hook(hook) for m in hidden_modules(model)]
        try:
            with torch.no_grad():
                model(part)
        finally:
            for h in handles:
                h.remove()
        rows.append(torch.cat(found, 1))
    return torch.cat(rows)


def logits(model: nn.Module, x: Tensor, points_per_pass: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + points_per_pass]).float() for s in range(0, len(x), max(1, points_per_pass))])


def relative_ratios(model: nn.Module, x: Tensor, xp: Tensor, a: Tensor, ap: Tensor, which: frozenset[str], points_per_pass: int) -> dict[str, np.ndarray]:
    """(c, K) RIS / ROS / RRS objectives of one chunk: x (c, ...), xp and ap (c*K, ...)."""
    c = len(x)
    k = len(xp) // max(1, c)
    a64 = a.double().reshape(c, 1, -1)
    num = torch.linalg.vector_norm(_relative(a64, ap.double().reshape(c, k, -1)), dim=2)
    out: dict[str, np.ndarray] = {}

    def finish(name: str, den: Tensor) -> None:
        den = den + (den == 0).to(den.dtype) * EPS_MIN
        out[name] = (num / den).cpu().numpy()

    if "ris" in which:
        diff = (x.unsqueeze(1) - xp.view(c, k, *x.shape[1:])).reshape(c, k, -1).double()  # float32 difference, as Quantus
        x64 = x.double().reshape(c, 1, -1)
        finish("ris", torch.linalg.vector_norm(diff / (x64 + (x64 == 0).double() * EPS_MIN), dim=2))
    if "ros" in which:
        h, hp = logits(model, x, points_per_pass), logits(model, xp, points_per_pass)
        diff = (h.unsqueeze(1) - hp.view(c, k, -1)).double()
        finish("ros", torch.linalg.vector_norm(diff, dim=2))
    if "rrs" in which:
        r, rp = representations(model, x, points_per_pass), representations(model, xp, points_per_pass)
        diff = (r.unsqueeze(1) - rp.view(c, k, -1)).double()
        r64 = r.double().unsqueeze(1)
        finish("rrs", torch.linalg.vector_norm(diff / (r64 + (r64 == 0).double() * EPS_MIN), dim=2))
    return out


class _RelativeStability(_Sensitivity):
    Params = RelativeStabilityParams
    ratio: ClassVar[str] = ""

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {**super().quantus_kwargs(inp, idx), "eps_min": EPS_MIN}

    def wants_floor(self, inp: MetricInput) -> bool:
        return False  # no zero-perturbation floor: the denominators vanish at x' = x

    def declare_shared(self, shared: dict[Any, Any]) -> None:
        """Ask the run's perturbation pass with these draws for this ratio too."""
        shared.setdefault(("relative", self.perturb_spec()), set()).add(self.ratio)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        chunking = self.chunking(inp)
        rex = self.reexplainer(inp, chunking)
        spec = self.perturb_spec()
        key = ("perturbed", spec, id(inp), None if self.noise_override is None else id(self.noise_override))
        if key not in self.shared or self.ratio not in self.shared[key]:
            self.declare_shared(self.shared)
            relative = frozenset(self.shared[("relative", spec)])
            self.shared[key] = native.perturbed_ratios(inp, spec, rex, chunking, self.noise_override, self.progress, relative)
        else:
            self.progress(len(inp.x))
        found = self.shared[key]
        return np.where(found["changed"], np.nan, found[self.ratio]).max(1)  # Quantus: np.max (NaN propagates)


@register("relative_input_stability", category="sensitivity", direction="lower", label="RIS",
          source="Agarwal et al. 2022 (arXiv 2203.06877), quantus.RelativeInputStability")
class RelativeInputStability(_RelativeStability):
    """max over perturbations of the relative explanation change over the relative input change."""

    quantus_name = "RelativeInputStability"
    ratio = "ris"


@register("relative_output_stability", category="sensitivity", direction="lower", label="ROS",
          source="Agarwal et al. 2022 (arXiv 2203.06877), quantus.RelativeOutputStability")
class RelativeOutputStability(_RelativeStability):
    """max over perturbations of the relative explanation change over the change of the logits."""

    quantus_name = "RelativeOutputStability"
    ratio = "ros"


@register("relative_representation_stability", category="sensitivity", direction="lower", label="RRS",
          source="Agarwal et al. 2022 (arXiv 2203.06877), quantus.RelativeRepresentationStability")
class RelativeRepresentationStability(_RelativeStability):
    """max over perturbations of the relative explanation change over the relative change of the
    internal representations (every module's output, as Quantus' default)."""

    quantus_name = "RelativeRepresentationStability"
    ratio = "rrs"
