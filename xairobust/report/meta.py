"""Metric metadata for reports: label, criterion (category) and direction, from the METRICS registry.

The registry entry's ``register(name, category=..., direction=..., label=...)`` keywords win; a
metric class's ``category``/``direction`` attributes fill gaps. A metric name that is not
registered (scores written by another version, or a custom metric) still gets a column: its
label is its name, its category ``other`` and its direction unknown, so the table shows no
arrow and marks no best/second value for it and the statistics report no "better" side.
"""

from __future__ import annotations

from dataclasses import dataclass

from xairobust.errors import ConfigError
from xairobust.registry import METRICS, Registry

# Column groups in the order the NsLoss paper prints them; unknown categories follow, then "other".
CATEGORY_ORDER = ("sensitivity", "faithfulness", "complexity")
DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class MetricMeta:
    name: str
    label: str
    category: str  # sensitivity | faithfulness | complexity | ... | other
    direction: str | None  # "higher" | "lower" | None (unknown: no arrow, no best/second marks)

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.direction or "", "")


def metric_meta(name: str, registry: Registry | None = None) -> MetricMeta:
    """Metadata of metric ``name``; an unregistered name falls back to (name, 'other', None)."""
    registry = METRICS if registry is None else registry
    try:
        obj = registry.get(name)
        meta = registry.meta(name)
    except ConfigError:
        return MetricMeta(name=name, label=name, category="other", direction=None)
    category = str(meta.get("category") or getattr(obj, "category", "") or "other").lower()
    direction = meta.get("direction") or getattr(obj, "direction", "") or None
    if direction not in DIRECTIONS:
        direction = None
    label = str(meta.get("label") or name)
    return MetricMeta(name=name, label=label, category=category, direction=direction)


def order_metrics(metas: list[MetricMeta]) -> list[MetricMeta]:
    """Group by criterion (paper order, then other categories, then 'other'); stable within a group."""

    def key(m: MetricMeta) -> tuple[int, str]:
        if m.category in CATEGORY_ORDER:
            return (CATEGORY_ORDER.index(m.category), "")
        if m.category == "other":
            return (len(CATEGORY_ORDER) + 1, "")
        return (len(CATEGORY_ORDER), m.category)

    return sorted(metas, key=key)  # sorted() is stable: first-appearance order within a group
