"""The explainer contract: ``(model, inputs, targets) -> attributions shaped like inputs``.

Randomness (noise baselines, background draws) comes from per-sample seeds, so an attribution
depends only on (sample, seed) and never on which batch the sample was in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
