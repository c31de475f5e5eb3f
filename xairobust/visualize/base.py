"""The visualisation contract, the presets and the per-dataset scaling of the PGD settings.

A visualisation is a class registered in ``VISUALISATIONS`` with a ``Params`` dataclass (its
:class:`VisualBudget`, PGD settings ``steps``/``eps``/``step_size`` plus its own options) and ``run(ctx, params)``
returning ``(tensors, summary)``. The stage (``xairobust.stages.visualize``) loads the run and
the data, builds the context and writes the files.

Presets (``--preset``): ``boychev`` is the paper's settings (Boychev, Figs. 3-5):

* inversion   10,000 steps, eps 1000, step 1 (L2);
* generation  60 steps, eps 30 and step 0.5 for CIFAR-size inputs, eps 40 and step 1 above 32 px;
* feature     400 steps, eps 1000, step 1.

``quick`` keeps the radii and step sizes and cuts the steps (inversion 300, generation 60,
feature 100) for CPU runs and tests. The paper's radii and steps are in the pixel space of
3 x 32 x 32 (CIFAR-10) or larger inputs. For a smaller input (8 x 8 digits: 64 values) both are
multiplied by sqrt(d / 3072) -- the same per-pixel RMS size of a step -- otherwise a step of 1 would
be about a third of a whole digit's norm. Values given explicitly (``--eps``, ``--step-size``,
``--steps``) are used as they are. The resolved values are recorded in every output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xairobust import config as cfg
from xairobust.data.base import DatasetInfo, DataSplit
from xairobust.perturb import ThreatOptions
from xairobust.visualize._core import Objective, Representation, batched, pgd_from

CIFAR_DIM = 3 * 32 * 32

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "boychev": {
        "inversion": {"steps": 10_000, "eps": 1000.0, "step_size": 1.0},
        "generation": {"steps": 60, "eps": 30.0, "step_size": 0.5, "large": {"eps": 40.0, "step_size": 1.0}},
        "feature": {"steps": 400, "eps": 1000.0, "step_size": 1.0},
    },
    "quick": {
        "inversion": {"steps": 300, "eps": 1000.0, "step_size": 1.0},
        "generation": {"steps": 60, "eps": 30.0, "step_size": 0.5, "large": {"eps": 40.0, "step_size": 1.0}},
        "feature": {"steps": 100, "eps": 1000.0, "step_size": 1.0},
    },
}


@dataclass
class VisualBudget(ThreatOptions):
    """The L2 budget every visualisation has; None: taken from the preset (``resolve_params``)."""

    norm: ClassVar[str] = "l2"
    steps: int | None = None
    eps: float | None = None
    step_size: float | None = None

    def check(self, where: str) -> None:
        cfg.require(self.steps is not None and self.steps >= 1, f"{where}: --steps must be >= 1")
        cfg.require(self.eps is not None and self.eps > 0, f"{where}: --eps must be > 0")
        cfg.require(self.step_size is not None and self.step_size > 0, f"{where}: --step-size must be > 0")


def preset_values(kind: str, preset: str, info: DatasetInfo) -> dict[str, Any]:
    """steps/eps/step_size of ``preset`` for ``kind`` on inputs of ``info.input_shape``."""
    if preset not in PRESETS:
        from xairobust.errors import ConfigError
        from xairobust.registry import did_you_mean

        raise ConfigError(f"visualize: unknown --preset '{preset}'.{did_you_mean(preset, list(PRESETS))}"
                          f" Known: {', '.join(PRESETS)}")
    entry = dict(PRESETS[preset][kind])
    large = entry.pop("large", None)
    shape = tuple(info.input_shape)
    dim = math.prod(shape)
    if large is not None and len(shape) == 3 and max(shape[1:]) > 32:
        entry.update(large)
    elif dim < CIFAR_DIM:
        scale = math.sqrt(dim / CIFAR_DIM)
        entry["eps"] = entry["eps"] * scale
        entry["step_size"] = entry["step_size"] * scale
    return entry


def resolve_params(cls: type, kind: str, preset: str, info: DatasetInfo, given: dict[str, Any]) -> Any:
    """The kind's Params: preset values for the PGD settings not given, then the given options."""
    params = cfg.build(cls.Params, given, f"visualisation '{kind}'")
    base = preset_values(kind, preset, info)
    for key, value in base.items():
        if getattr(params, key) is None:
            setattr(params, key, type(value)(value))
    params.check(f"visualize --kind {kind}")
    return params


@dataclass
class Context:
    """What a visualisation runs on (built by the stage; tests build it directly)."""

    model: nn.Module  # in eval mode, on ``device``
    test: DataSplit  # the run's test split (the images, their labels, the dataset info)
    rep: Representation
    device: torch.device
    n: int
    seed: int
    batch_size: int = 64
    classes: list[int] = dataclasses.field(default_factory=list)  # generation: [] = all classes
    units: list[int] = dataclasses.field(default_factory=list)  # feature: [] = n units drawn with seed
    advance: Any = None  # progress callback (number of image-steps done)

    @property
    def info(self) -> DatasetInfo:
        return self.test.info

    def tick(self, k: int) -> None:
        if self.advance is not None:
            self.advance(k)


class Visualisation:
    """Base class; subclasses set ``name`` and ``Params`` and implement ``run`` and ``work``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = VisualBudget

    def work(self, ctx: Context, params: Any) -> int:
        """Image-steps the run will take (for the progress bar and the wall time per image)."""
        raise NotImplementedError

    def run(self, ctx: Context, params: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
        raise NotImplementedError


def item_generator(seed: int, key: int) -> torch.Generator:
    """A generator seeded per item (test index, class, unit), so that an item's draw does not
    depend on which other items are in the run: a larger ``--n`` keeps the smaller one's items."""
    return torch.Generator().manual_seed((int(key) * 1_000_003 + int(seed)) % (2**62))


def uniform_noise(shape: tuple[int, ...], value_range: tuple[float, float] | None, gen: torch.Generator) -> Tensor:
    """Uniform noise over the value range (standard normal for unbounded inputs)."""
    if value_range is None:
        return torch.randn(shape, generator=gen)
    lo, hi = value_range
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def descend(
    ctx: Context,
    params: VisualBudget,
    x_src: Tensor,
    objective_for: Callable[[slice], Objective],
    *,
    maximize: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """L2 PGD from every source image, in batches of ``ctx.batch_size``, under ``params``' budget.

    ``objective_for(sl)`` is the per-sample objective of the sources ``x_src[sl]``. Returns the
    results and the objective's values at the start and the end (on the CPU).
    """
    threat = params.threat_model(ctx.info.value_range)
    results, start, end = [], [], []
    for sl in batched(len(x_src), ctx.batch_size):
        x0 = x_src[sl].to(ctx.device)
        objective = objective_for(sl)
        x = pgd_from(objective, x0, threat, maximize=maximize, advance=ctx.tick)
        with torch.no_grad():
            start.append(objective(x0).cpu())
            end.append(objective(x).cpu())
        results.append(x.cpu())
    return torch.cat(results), torch.cat(start), torch.cat(end)
