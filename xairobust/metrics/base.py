"""The metric contract: per-sample scores for a set of (input, target, attribution) triples.

Each registered metric declares ``category`` (sensitivity / faithfulness / complexity),
``direction`` ("higher" or "lower" is better) and a short ``label`` for table headers; the
reports derive arrows and best/second-best marks from this metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


@dataclass
class MetricInput:
    """Everything a metric may use. Arrays are numpy, as Quantus expects."""

    model: nn.Module  # eval mode
    x: np.ndarray  # (N, C, H, W) inputs in the model's input space
    y: np.ndarray  # (N,) explained output index
    a: np.ndarray  # (N, C, H, W) attributions of x for y
    indices: np.ndarray  # (N,) index of each sample in the test split (for per-sample seeds)
    # explain(model, inputs, targets, indices) -> attributions: the same explainer and params
    # as ``a`` (sensitivity metrics re-explain perturbed inputs with it).
    explain: Callable[..., np.ndarray]
    seed: int
    device: torch.device
    value_range: tuple[float, float] | None


@dataclass
class NoParams:
    pass


class Metric:
    """Base class. Subclasses set ``Params`` and implement ``score``; register with METRICS."""

    Params: ClassVar[type] = NoParams
    category: ClassVar[str] = ""
    direction: ClassVar[str] = ""  # "higher" or "lower"

    def __init__(self, params: Any) -> None:
        self.params = params

    def score(self, inp: MetricInput) -> np.ndarray:
        """(N,) float scores, one per sample, independent of how samples are batched."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any]:
        """Counts to report beside the scores (e.g. samples dropped, explainer noise floor)."""
        return {}
