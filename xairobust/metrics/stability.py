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

from xairobust.config import require
from xairobust.metrics import native
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import DEFAULT_RADIUS, _Sensitivity, register
from xairobust.metrics.relative import EPS_MIN, hidden_modules  # noqa: F401 - hidden_modules: kept importable here, beside the metrics


@dataclass
class RelativeStabilityParams:
    nr_samples: int = 200  # Quantus default
    radius: float = DEFAULT_RADIUS  # as Max/Avg-Sensitivity: the same draws, shared
    drop_changed: bool = False  # Quantus: True (see module doc)
    clip: bool = True

    def __post_init__(self) -> None:
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.radius > 0, f"--radius must be > 0, got {self.radius}")


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
