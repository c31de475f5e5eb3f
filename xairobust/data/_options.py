"""Parsing of dataset_kwargs values that may arrive as strings (from YAML or the CLI)."""

from __future__ import annotations

from typing import Any

from xairobust.errors import ConfigError


def flag(value: Any, where: str) -> bool:
    """true/false from a bool or a string such as 'yes', '0', 'off'."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false, got {value!r}")
