"""Normalisation inside the model and the public ``create_model``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xairobust.errors import ConfigError
from xairobust.registry import MODELS


class Normalize(nn.Module):
    """(x - mean) / std per channel, so the model takes inputs in the data's natural range.

    ``clamp`` (low, high): clamp the input first, as MadryLab's ``InputNormalize`` does
    (``robustness.tools.helpers``: ``clamp(x, 0, 1)`` before normalising), so an imported model
    computes the same function also for inputs outside the range (SmoothGrad's noisy copies)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], clamp: Sequence[float] | None = None) -> None:
        super().__init__()
        if clamp is not None and (len(clamp) != 2 or not clamp[0] < clamp[1]):
            raise ConfigError(f"model: clamp must be [low, high] with low < high, got {clamp!r}")
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        if len(mean) != len(std):
            raise ConfigError(f"model: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ConfigError("model: every std must be > 0")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return (x - self.mean) / self.std


class NormalizedModel(nn.Module):
    """``net(normalize(x))``; ``net`` is the registered architecture (hooks/layer names live there)."""

    # forward calls the children once each, in registration order, with no residual adds:
    # layer-by-layer explainers (LRP, xairobust/explain/lrp.py) rely on it.
    sequential_forward = True

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 clamp: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std, clamp)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


def create_model(
    name: str,
    *,
    num_outputs: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    clamp: Sequence[float] | None = None,
    **kwargs: Any,
) -> NormalizedModel:
    """Public API: build registered model ``name`` wrapped with a Normalize layer.

    ``mean``/``std`` default to 0/1 per channel (identity normalisation). ``kwargs`` go to the
    builder. Everything here is recorded in ``run.json`` so ``load_run`` rebuilds the same net.
    """
    if name.startswith("timm:"):  # any timm architecture: `timm:<arch>` (models/timm_models.py)
        builder = MODELS.get("timm")
        kwargs = {**kwargs, "arch": name[len("timm:") :]}
    else:
        builder = MODELS.get(name)
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    try:
        net = builder(num_outputs=num_outputs, in_channels=in_channels, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown keyword, or a size such as width: -1
        raise ConfigError(f"model '{name}': bad model option ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return NormalizedModel(net, mean, std, clamp)
