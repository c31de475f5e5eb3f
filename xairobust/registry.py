"""One small registry used for every kind of choice (datasets, models, methods, explainers, metrics, ...).

A registry maps a name to an object (usually a function or class) plus free-form metadata.
Lookups of unknown names raise a ConfigError with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from xairobust.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """A ' Did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name -> object with metadata. ``kind`` is used in error messages ("unknown model 'x'")."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loader = loader
        self._loaded = loader is None

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("small_cnn", task="classification")``."""

        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return decorator

    def _ensure_loaded(self) -> None:
        # Lazy: importing the package that registers the entries only when a lookup happens
        # keeps `import xairobust` cheap and avoids import cycles.
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._ensure_loaded()
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, list(self._items))}"
                f" Known: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])


def import_submodules(package: str) -> None:
    """Import every module of ``package`` so that their ``@register`` decorators run.

    New entries are added by dropping a module into the package: no list to edit.
    """
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


DATASETS: Registry = Registry("dataset", lambda: import_submodules("xairobust.data"))
MODELS: Registry = Registry("model", lambda: import_submodules("xairobust.models"))
METHODS: Registry = Registry("training method", lambda: import_submodules("xairobust.training"))
EXPLAINERS: Registry = Registry("explainer", lambda: import_submodules("xairobust.explain"))
METRICS: Registry = Registry("metric", lambda: import_submodules("xairobust.metrics"))
ATTACKS: Registry = Registry("attack", lambda: import_submodules("xairobust.attacks"))
EXECUTORS: Registry = Registry("executor", lambda: import_submodules("xairobust.batch"))
VISUALISATIONS: Registry = Registry("visualisation", lambda: import_submodules("xairobust.visualize"))
FEATURE_EXTRACTORS: Registry = Registry("feature extractor", lambda: import_submodules("xairobust.visualize"))
