"""The one place a ``--device`` value becomes a torch device (every stage takes the same values)."""

from __future__ import annotations

import torch

from xairobust.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; an unknown or unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device '{name}' (use auto, cpu, cuda, cuda:0, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA device is available")
    return device
