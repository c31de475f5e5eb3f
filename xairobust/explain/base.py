"""The explainer contract: ``(model, inputs, targets) -> attributions shaped like inputs``.

Randomness (noise baselines, background draws) comes from per-sample seeds, so an attribution
depends only on (sample, seed) and never on which batch the sample was in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclass
class NoParams:
    pass


class Explainer:
    """Base class. Subclasses set ``Params`` and implement ``attribute``; register with EXPLAINERS.

    ``background`` is a float tensor of training inputs for explainers that draw baselines
    from the data (Expected Gradients, Gradient SHAP with data baselines).
    """

    Params: ClassVar[type] = NoParams
    stochastic: ClassVar[bool] = False
    needs_background: ClassVar[bool] = False
    # True when the attribution is a differentiable function of the input that the manipulation
    # attacks can back-propagate through (a create_graph=True version in explain/differentiable.py).
    # LIME/KernelSHAP/LRP/Grad-CAM: False (attacks evaluate them by transfer only).
    differentiable: ClassVar[bool] = False
    # Cost of re-explaining one perturbed input inside sensitivity metrics (which re-explain every
    # sample nr_samples times): "cheap" = a few batched forward/backward passes (gradients, IG,
    # SHAP with gradients); "expensive" = one surrogate fit on hundreds of forward passes per input
    # (LIME, KernelSHAP). The score stage prints a one-line note for "expensive" explainers.
    reexplain_cost: ClassVar[Literal["cheap", "expensive"]] = "cheap"
    # What to try when a sample's attribution is all zero (printed by the explain stage).
    zero_hint: ClassVar[str] = ""

    def __init__(self, params: Any, background: Tensor | None = None) -> None:
        self.params = params
        self.background = background

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        """Attributions for ``inputs`` (B, ...) w.r.t. output ``targets`` (B,), one seed per sample."""
        raise NotImplementedError

    def extras(self) -> dict[str, Tensor]:
        """Per-sample diagnostics of the last ``attribute`` call (e.g. IG convergence delta)."""
        return {}


def sample_seeds(base_seed: int, indices: Tensor) -> Tensor:
    """Per-sample seeds derived from the run's seed and each sample's index in the test split."""
    return (torch.as_tensor(indices, dtype=torch.int64) * 1_000_003 + int(base_seed)) % (2**62)


def reexplain_note(explainer: str, sensitivity_metrics: list[str]) -> str | None:
    """One line for the score stage when ``explainer`` is expensive to re-explain and sensitivity
    metrics (which re-explain every sample once per perturbation) are among those scored."""
    from xairobust.registry import EXPLAINERS

    cls = EXPLAINERS.get(explainer)
    if cls.reexplain_cost != "expensive" or not sensitivity_metrics:
        return None
    return (
        f"warning: {explainer} fits a surrogate on many forward passes per input; the sensitivity metrics"
        f" ({', '.join(sensitivity_metrics)}) re-explain every sample once per perturbation and will be slow"
        " (leave them out of --metrics to skip them)"
    )
