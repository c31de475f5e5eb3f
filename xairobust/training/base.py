"""The training-method contract.

A method turns a batch into a loss. The training loop (``xairobust.stages.train.train_epoch``) owns the
optimiser, the schedule, data order and logging; a method only decides what is minimised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xairobust.data.base import Task


@dataclass
class TrainContext:
    """What a method may use besides the batch. The loop updates ``epoch`` and ``extras``."""

    task: Task
    criterion: Callable[[Tensor, Tensor], Tensor]  # CE (classification) or MSE (regression), batch mean
    num_outputs: int
    value_range: tuple[float, float] | None  # clamp range of inputs; None = unbounded
    generator: torch.Generator  # seeded; every random draw of a method comes from it
    device: torch.device
    epoch: int = 0  # 0-based
    total_epochs: int = 1
    extras: dict[str, Tensor] = field(default_factory=dict)  # per-batch extra targets


@dataclass
class NoParams:
    """For methods without hyper-parameters."""


class TrainingMethod:
    """Base class. Subclasses set ``Params`` and implement ``loss``; register with METHODS."""

    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any) -> None:
        self.params = params

    def prepare(self, model: nn.Module, ctx: TrainContext) -> None:
        """Called once before training (e.g. to validate layer patterns against the model)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """The loss to minimise on batch (x, y) and scalars to log. ``model`` is in train mode."""
        raise NotImplementedError

    def extra_steps(
        self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext
    ) -> Iterator[tuple[Tensor, dict[str, float]]]:
        """Further optimiser steps on the same batch, taken after the step on ``loss``.

        Each yielded loss gets its own zero_grad/backward/step, in order; the generator is
        resumed only after the previous step, so it sees the updated weights (e.g. adversarial
        training that attacks the model *after* the clean step). Default: none.
        """
        return iter(())

    def describe(self) -> dict[str, Any]:
        """What goes into run.json beside the params (resolved choices, e.g. hooked layers)."""
        return {}
