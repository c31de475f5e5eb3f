"""Typed configs: dataclasses built from YAML/CLI mappings with validation that says how to fix.

Every stage (train, attack, explain, score, report) has a dataclass here or next to its code.
``build(cls, mapping, where)`` is the single way a mapping becomes a config: unknown keys get a
did-you-mean error, values are coerced to the field's type, and ``__post_init__`` checks ranges.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from xairobust.errors import ConfigError
from xairobust.registry import did_you_mean

C = TypeVar("C")


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Coerce a YAML/CLI value (often a string) to the declared field type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value for '{key}'")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: '{key}' must be one of {', '.join(map(str, args))}, got '{value}'."
                f"{did_you_mean(str(value), [str(a) for a in args])}"
            )
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        try:
            if annotation is int:
                if isinstance(value, int):
                    return value
                as_float = float(value)
                if as_float != int(as_float):
                    raise ValueError
                return int(as_float)
            number = float(_eval_fraction(value))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            raise ConfigError(
                f"{where}: {cli_name(key)} must be {'an integer' if annotation is int else 'a number'},"
                f" got {value!r}"
            ) from None
        # NaN passes every `x > 0` check by failing none of them silently in the other
        # direction, and inf passes them all: neither is ever a valid setting (issue 12).
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {cli_name(key)} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(str(value))
    return value


def cli_name(key: str) -> str:
    """The command-line spelling of a config key: ``eps_ns`` -> ``--eps-ns``."""
    return "--" + str(key).replace("_", "-")


def _eval_fraction(value: Any) -> float:
    """Accept '8/255' as well as 0.0314: papers state attack radii as fractions of 255."""
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        return float(num) / float(den)
    return float(value)


def build(cls: type[C], mapping: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and bad values raise ConfigError."""
    mapping = dict(mapping or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(
                f"{where}: unknown key '{key}'.{did_you_mean(name, list(fields))}"
                f" Allowed: {', '.join(fields)}"
            )
        kwargs[name] = _coerce(value, hints[name], name, where)
        if name == "seed" and isinstance(kwargs[name], int) and not 0 <= kwargs[name] < 2**63:
            # torch and numpy generators take seeds in [0, 2**63); larger ones overflow mid-run
            raise ConfigError(f"{where}: --seed must be in 0..2**63-1, got {kwargs[name]}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(missing)}")
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain JSON/YAML-serialisable dict (Paths become strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}


# Limits of every YAML file the tool reads (configs, zoo files, presets): real ones are a few
# kB. A larger file, a binary one, or one that uses aliases is refused before it is parsed
# further -- a 1 kB "billion laughs" alias bomb otherwise expands to gigabytes downstream.
YAML_MAX_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python tags) that refuses anchors/aliases (``&a`` / ``*a``) outright.

    Bounding the number of aliases would not bound the expansion (n aliases nest to 2**n
    nodes), and no config of the tool needs them; the refusal happens at the first alias
    event, before any node is built.
    """

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(_AliasRefused(event.start_mark))
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    def __init__(self, mark) -> None:
        super().__init__(mark)
        self.mark = mark


def read_yaml_text(path: Path) -> str:
    """The text of YAML file ``path``, or a one-line ConfigError for a file too large, binary or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > YAML_MAX_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a YAML config (limit {YAML_MAX_BYTES} bytes)")
        with open(path, "rb") as fh:
            raw = fh.read(YAML_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if len(raw) > YAML_MAX_BYTES:  # grew while being read, or a special file
        raise ConfigError(f"{path}: too large for a YAML config (limit {YAML_MAX_BYTES} bytes)")
    if b"\0" in raw:
        raise ConfigError(f"{path}: a binary file, not a YAML config (it holds NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the config as UTF-8"
        ) from None


def parse_yaml(text: str, path: str | Path) -> Any:
    """Parse YAML text with the tool's one loader (safe tags only, no aliases)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, _AliasRefused):
            raise ConfigError(
                f"{path}: YAML aliases (*name) are not allowed (line {inner.mark.line + 1}); write the values out"
            ) from None
        mark = getattr(exc, "problem_mark", None)
        loc = f" (line {mark.line + 1})" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or exc).replace("\n", " ")
        raise ConfigError(f"{path}: invalid YAML{loc}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, oversized, binary or malformed file is a one-line ConfigError.

    The one YAML loader of the tool (configs, zoo files, presets): see :func:`parse_yaml`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(read_yaml_text(path), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds: for range checks in __post_init__."""
    if not condition:
        raise ConfigError(message)
