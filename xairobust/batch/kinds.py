"""Which registered stage fills each slot of a zoo's job graph.

Every stage is a :class:`~xairobust.stages.contract.Stage` registered in ``STAGES``; the batch
runner calls it as ``STAGES.get(name)().run(target, conf, quiet=True)`` and never switches on
stage names. A zoo's ``stages:`` block may swap in another *registered* stage for a slot
(``stages: {attack: bim-regression}``); nothing is ever imported from a string in a zoo file.
Tests register stub stages the same way (tests/batch_stages.py).
"""

from __future__ import annotations

from typing import Any

from xairobust.errors import ConfigError
from xairobust.registry import did_you_mean
from xairobust.stages.contract import STAGES, Stage

# The fixed slots of the job graph, in order; a registered stage may add its own slot (its name),
# placed by its ``per`` and ``after`` (see Stage).
CORE_SLOTS = ("train", "use", "attack", "explain", "score", "report")  # use: a zoo's `run:` entries


def extra_stage_names() -> list[str]:
    """Registered stages that fill no core slot and follow one (``after`` set; e.g. manipulate,
    visualize): a zoo key of their name runs them. Stages that start from nothing (``import``)
    have no place in a zoo's job graph."""
    return [n for n in STAGES.names()
            if STAGES.get(n).slot() not in CORE_SLOTS and STAGES.get(n).after is not None]


def slots() -> list[str]:
    """Every slot a registered stage fills (the core ones first)."""
    extra = [STAGES.get(n).slot() for n in STAGES.names()]
    return list(dict.fromkeys([*CORE_SLOTS, *extra]))


def resolve_stage(slot: str, chosen: dict[str, Any], where: str = "zoo") -> type[Stage]:
    """The registered Stage class for ``slot``: ``chosen[slot]`` (a zoo's ``stages:``) or the stage named ``slot``.

    A name that is not registered is a ConfigError, and so is a stage registered for another slot.
    """
    name = chosen.get(slot, slot)
    if not isinstance(name, str) or name not in STAGES:
        known = [n for n in STAGES.names() if STAGES.get(n).slot() == slot]
        shown = name if isinstance(name, str) else repr(name)
        raise ConfigError(
            f"{where}: stages.{slot}: '{shown}' is not a registered stage (no code is imported from a zoo file)."
            f"{did_you_mean(shown, known)} Registered for {slot}: {', '.join(known) or 'none'}"
        )
    cls = STAGES.get(name)
    if cls.slot() != slot:
        raise ConfigError(f"{where}: stages.{slot}: '{name}' is a {cls.slot()} stage, not a {slot} stage")
    return cls
