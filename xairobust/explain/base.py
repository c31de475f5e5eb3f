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
    # True when ``attribute(..., create_graph=True)`` returns the same attributions (same maths,
    # same parameters) with their graph back to the inputs, so the manipulation attacks and
    # fool training can back-propagate through them. LIME/KernelSHAP/LRP/Grad-CAM: False
    # (attacks evaluate them by transfer only).
    differentiable: ClassVar[bool] = False
    # Cost of re-explaining one perturbed input inside sensitivity metrics (which re-explain every
    # sample nr_samples times): "cheap" = a few batched forward/backward passes (gradients, IG,
    # SHAP with gradients); "expensive" = one surrogate fit on hundreds of forward passes per input
    # (LIME, KernelSHAP). The score stage prints a one-line note for "expensive" explainers.
    reexplain_cost: ClassVar[Literal["cheap", "expensive"]] = "cheap"
    # What to try when a sample's attribution is all zero (printed by the explain stage).
    zero_hint: ClassVar[str] = ""
    # Parameters that name another run (e.g. the blur control's ``match``). In a zoo such a value
    # may be a method label: the batch planner replaces it by the run of that label with the same
    # dataset, model and seed as the run being explained (xairobust.batch.plan, docs/batch.md).
    run_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, background: Tensor | None = None) -> None:
        self.params = params
        self.background = background

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        """Attributions for ``inputs`` (B, ...) w.r.t. output ``targets`` (B,), one seed per sample.

        A ``differentiable`` explainer also takes ``create_graph=False``; with True the result
        equals the plain one and keeps its graph to ``inputs`` (tests/test_manipulate.py loops
        over the registry to check both).
        """
        raise NotImplementedError

    def extras(self) -> dict[str, Tensor]:
        """Per-sample diagnostics of the last ``attribute`` call (e.g. IG convergence delta)."""
        return {}


def wants_background(name: str, params: Any) -> bool:
    """Whether the registered explainer ``name`` draws baselines from the training data."""
    from xairobust.registry import EXPLAINERS

    cls = EXPLAINERS.get(name)
    hook = getattr(cls, "wants_background", None)
    return bool(hook(params)) if hook else bool(cls.needs_background)


def differentiable_explainer(name: str, params: dict[str, Any] | None = None, what: str = "manipulate") -> Explainer:
    """The registered explainer ``name`` with ``params`` (its registered defaults otherwise), after
    checking it can be back-propagated through; a ConfigError naming the alternatives if not."""
    from xairobust import config as cfg
    from xairobust.errors import ConfigError
    from xairobust.registry import EXPLAINERS

    cls = EXPLAINERS.get(name)
    if not cls.differentiable:
        able = sorted(n for n in EXPLAINERS.names() if EXPLAINERS.get(n).differentiable)
        raise ConfigError(
            f"{what}: explainer '{name}' has no differentiable version, so it cannot be attacked directly;"
            f" attack one of {', '.join(able)} and score it with --transfer-to {name}."
        )
    return cls(cfg.build(cls.Params, dict(params or {}), f"explainer '{name}'"), None)


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
