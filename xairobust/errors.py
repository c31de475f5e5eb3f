"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations


class XaiRobustError(Exception):
    """Base class: an error whose message is meant for the user, not a bug."""


class ConfigError(XaiRobustError, ValueError):
    """Bad configuration or CLI input; the message says which option and how to fix it."""


class RunError(XaiRobustError):
    """A run directory is missing, incomplete or tampered with."""


class DataError(XaiRobustError):
    """A dataset is missing or malformed; the message names the path and how to get the data."""
