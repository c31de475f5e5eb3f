"""`xairobust list KIND`: what is registered, with each entry's options and defaults."""

from __future__ import annotations

import dataclasses

import click

from xairobust.registry import (
    ATTACKS,
    DATASETS,
    EXECUTORS,
    EXPLAINERS,
    FEATURE_EXTRACTORS,
    METHODS,
    METRICS,
    MODELS,
    VISUALISATIONS,
    Registry,
)

KINDS: dict[str, Registry] = {
    "datasets": DATASETS,
    "models": MODELS,
    "methods": METHODS,
    "explainers": EXPLAINERS,
    "metrics": METRICS,
    "attacks": ATTACKS,
    "executors": EXECUTORS,
    "visualisations": VISUALISATIONS,
    "extractors": FEATURE_EXTRACTORS,
}


def _formats() -> Registry:
    from xairobust.importers.base import FORMATS

    return FORMATS


KINDS["formats"] = _formats()


def _manipulation_registries() -> tuple[Registry, Registry]:
    from xairobust.manipulate import MANIPULATIONS, MEASURES

    return MANIPULATIONS, MEASURES


def _stages() -> Registry:
    from xairobust.stages.contract import STAGES

    return STAGES


KINDS["manipulations"], KINDS["measures"] = _manipulation_registries()
KINDS["stages"] = _stages()


def describe_params(obj: object) -> str:
    """'--eps 0.5, --steps 10' from an entry's ``Params`` dataclass (empty when it has none)."""
    params = getattr(obj, "Params", None)
    if params is None or not dataclasses.is_dataclass(params):
        return ""
    parts = []
    for f in dataclasses.fields(params):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"  # type: ignore[misc]
        )
        parts.append(f"--{f.name.replace('_', '-')} {default}")
    return ", ".join(parts)


@click.command("list")
@click.argument("kind", type=click.Choice(sorted(KINDS)), default="methods")
def list_command(kind: str) -> None:
    """List registered datasets, models, methods, explainers, metrics, attacks, executors or checkpoint formats."""
    registry = KINDS[kind]
    for name in registry.names():
        meta = registry.meta(name)
        extra = ", ".join(f"{k}={v}" for k, v in meta.items())
        if registry is EXPLAINERS:
            cls = registry.get(name)
            flags = {"stochastic": cls.stochastic, "differentiable": cls.differentiable, "reexplain": cls.reexplain_cost}
            extra = ", ".join([extra, *(f"{k}={v}" for k, v in flags.items())]) if extra else extra
        click.echo(f"{name}" + (f"  [{extra}]" if extra else ""))
        params = describe_params(registry.get(name))
        if params:
            click.echo(f"    {params}")


def register(group: click.Group) -> None:
    group.add_command(list_command)
