"""The dataset contract: every dataset yields tensors in the model's input space.

Images are in [0, 1] (stored as uint8 and scaled on access so that CIFAR-10/ImageNette fit in
memory); audio is a standardised log-spectrogram. Normalisation happens inside the model, so
attack radii and attributions all live in this one space (DESIGN.md, "One input space").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from xairobust.errors import ConfigError
from xairobust.registry import DATASETS

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the report need to know about a dataset."""

    name: str
    task: Task
    num_outputs: int  # classes, or regression targets
    input_shape: tuple[int, ...]  # (C, H, W) of one input
    mean: tuple[float, ...]  # per-channel, for the Normalize layer inside the model
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    input_space: str = "pixels in [0, 1]"
    # Valid range of inputs (attacks clamp to it); None for unbounded inputs (spectrograms).
    value_range: tuple[float, float] | None = (0.0, 1.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "num_outputs": self.num_outputs,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "input_space": self.input_space,
            "value_range": list(self.value_range) if self.value_range else None,
        }


# An augmentation works on a float batch already in the input space, on its device.
Augment = Callable[[Tensor, torch.Generator | None], Tensor]


@dataclass
class DataSplit:
    """One split held in memory. ``x`` is uint8 (scaled by 1/255 on access) or float32."""

    x: Tensor
    y: Tensor
    info: DatasetInfo
    augment: Augment | None = None  # applied to training batches only
    # Extra per-sample targets some methods need (e.g. mid-level features for A2M2E).
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.info.name}: {len(self.x)} inputs but {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.x)

    def inputs(self, index: Tensor | slice | None = None, device: torch.device | str = "cpu") -> Tensor:
        """Float inputs in the model's input space for ``index`` (all when None)."""
        x = self.x if index is None else self.x[index]
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        return x.float()

    def targets(self, index: Tensor | slice | None = None, device: torch.device | str = "cpu") -> Tensor:
        y = self.y if index is None else self.y[index]
        return y.to(device, non_blocking=True)

    def subset(self, index: Tensor) -> DataSplit:
        """A split restricted to ``index`` (keeps augmentation and extras)."""
        return DataSplit(
            self.x[index],
            self.y[index],
            self.info,
            self.augment,
            {k: v[index] for k, v in self.extras.items()},
        )


@dataclass
class CheckResult:
    """What ``xairobust data check`` prints for one dataset."""

    name: str
    path: str
    ok: bool
    detail: str  # counts when ok, the fix when not


class DatasetSource:
    """Base class of a registered dataset. Subclasses set ``name`` and implement two methods."""

    name: str = ""
    splits: tuple[str, ...] = ("train", "test")

    def info(self, **kwargs: Any) -> DatasetInfo:
        raise NotImplementedError

    def load(self, split: str, root: Path, **kwargs: Any) -> DataSplit:
        """Load ``split`` from ``root`` (the resolved data dir). Raise DataError with the fix."""
        raise NotImplementedError

    def check(self, root: Path) -> CheckResult:
        """Whether the data is present and valid under ``root`` (default: try loading it)."""
        try:
            sizes = {s: len(self.load(s, root)) for s in self.splits}
        except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a diagnosis
            return CheckResult(self.name, str(root), False, str(exc))
        return CheckResult(self.name, str(root), True, ", ".join(f"{k}: {v}" for k, v in sizes.items()))


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``--data-dir``, else $XAIROBUST_DATA, else ~/.cache/xairobust/data."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("XAIROBUST_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "xairobust" / "data"


def get_source(name: str) -> DatasetSource:
    return DATASETS.get(name)()


def get_dataset(name: str, split: str, data_dir: str | Path | None = None, **kwargs: Any) -> DataSplit:
    """Public API: the ``split`` of dataset ``name`` as tensors in the model's input space."""
    source = get_source(name)
    if split not in source.splits:
        raise ConfigError(f"dataset '{name}' has no split '{split}' (splits: {', '.join(source.splits)})")
    return source.load(split, resolve_data_dir(data_dir), **kwargs)
