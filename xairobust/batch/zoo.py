"""The zoo file: a grid of datasets x models x methods (with hyper-parameter grids) x seeds.

A zoo file is YAML; every section is a dataclass built with ``xairobust.config.build``, so an
unknown key anywhere gets a did-you-mean error naming its place in the file. See docs/batch.md for
the full schema and configs/zoo/*.yaml for examples.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.registry import did_you_mean

# Keys of the train stage that the grid sets itself; a zoo must not set them in a `train:` block.
GRID_KEYS = ("dataset", "dataset_kwargs", "model", "model_kwargs", "method", "method_params", "label", "seed", "out")
STAGES = ("train", "use", "attack", "explain", "score", "report")  # the core slots (see batch.kinds)


def _slots() -> list[str]:
    from xairobust.batch.kinds import slots

    return slots()


@dataclass
class DatasetEntry:
    """One dataset of the grid; ``models`` (names) restricts which models it is combined with."""

    name: str
    kwargs: dict = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    train: dict = field(default_factory=dict)  # train-stage overrides for this dataset


@dataclass
class ModelEntry:
    name: str
    kwargs: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # e.g. a smaller lr for a deeper network
    attack: dict = field(default_factory=dict)  # e.g. the attack radius this model was trained at


def _list_typed_params(method: str) -> set[str]:
    """Names of ``method``'s hyper-parameters whose type is itself a list (empty for an unknown method)."""
    from xairobust.registry import METHODS

    if method not in METHODS:
        return set()  # an unknown method is reported by the planner, with its suggestions
    params_cls = METHODS.get(method).Params
    if not dataclasses.is_dataclass(params_cls):
        return set()
    return {f.name for f in dataclasses.fields(params_cls) if str(f.type).startswith(("list", "tuple", "List", "Tuple"))}


@dataclass
class MethodEntry:
    """A training method with fixed ``params`` and an optional ``grid`` of lists to expand.

    ``label`` names the method's row in reports; it may use the hyper-parameters as format fields
    (``"PGD eps={eps}"``). ``init_from`` fine-tunes from the run of another method entry (by its
    label) with the same dataset, model and seed. ``models``/``datasets`` restrict the entry.

    ``run: PATH`` (or a list of paths) lists existing run directories -- e.g. made by
    ``xairobust import`` -- instead of training: they are checked, then attacked, explained,
    scored and reported like trained runs (dataset, model and label from their run.json;
    relative paths from the current directory).
    """

    name: str = ""
    label: str | None = None
    params: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    init_from: str | None = None
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    run: Any = None  # existing run directory (or list of them) used as is, not trained

    def __post_init__(self) -> None:
        if self.run is not None:
            runs = [self.run] if isinstance(self.run, str) else self.run
            require(isinstance(runs, list) and bool(runs) and all(isinstance(r, str) and r for r in runs),
                    f"method '{self.name or 'run'}': run must be a run directory or a list of them, got {self.run!r}")
            require(not (self.params or self.grid or self.train or self.init_from),
                    f"method run {runs[0]}: a run: entry is used as it is; params, grid, train and init_from do not apply")
            require(self.label is None or (isinstance(self.label, str) and self.label.strip() != ""),
                    f"method run {runs[0]}: label must be a non-empty string, got {self.label!r}")
            # label: the runs' row in reports (default: their run.json's label); several runs under
            # one label are its seeds.
            self.run = list(runs)
            self.name = self.name or "imported"
            return
        require(bool(self.name), "a method entry needs a name (a training method) or run: PATH (an existing run)")
        self._ladders_into_grid()
        for key, values in self.grid.items():
            require(
                isinstance(values, list) and len(values) > 0,
                f"method '{self.name}': grid.{key} must be a non-empty list of values, got {values!r}",
            )
            require(key not in self.params, f"method '{self.name}': '{key}' is in both params and grid")
        self.expand()  # a label that names an unknown hyper-parameter fails here, not mid-batch

    def _ladders_into_grid(self) -> None:
        """A list given for a scalar hyper-parameter is a ladder: ``params: {eps: [0, 0.25, 0.5]}``.

        It expands exactly like ``grid`` (one run per value, labelled by the value), so a
        robustness ladder reads as the paper states it. Parameters that are lists by type
        (NsLoss ``layers``) keep their list as one value.
        """
        list_typed = _list_typed_params(self.name)
        for key in [k for k, v in self.params.items() if isinstance(v, list) and k not in list_typed]:
            require(key not in self.grid, f"method '{self.name}': '{key}' is in both params and grid")
            require(len(self.params[key]) > 0, f"method '{self.name}': params.{key} is an empty ladder; give at least one value")
            self.grid[key] = self.params.pop(key)

    def expand(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, params) for every point of the hyper-parameter grid."""
        keys = list(self.grid)
        points = []
        for values in itertools.product(*(self.grid[k] for k in keys)) if keys else [()]:
            varying = dict(zip(keys, values, strict=True))
            params = {**self.params, **varying}
            points.append((self._label(params, varying), params))
        return points

    def _label(self, params: dict[str, Any], varying: dict[str, Any]) -> str:
        if self.label is not None:
            try:
                return self.label.format(**params)
            except (KeyError, IndexError) as exc:
                raise ConfigError(
                    f"method '{self.name}': label '{self.label}' uses {exc}, which is not one of its"
                    f" params ({', '.join(params) or 'none'})"
                ) from None
        if not varying:
            return self.name
        return f"{self.name} " + " ".join(f"{k}={v}" for k, v in varying.items())


@dataclass
class ExplainerEntry:
    """One explainer: an explain job and a score job per run.

    ``params`` are the explainer's own parameters (e.g. ``n_steps``); ``explain``/``score`` override
    keys of the zoo's ``explain``/``score`` blocks for this explainer.
    """

    name: str
    params: dict = field(default_factory=dict)
    explain: dict = field(default_factory=dict)
    score: dict = field(default_factory=dict)


@dataclass
class ReportEntry:
    """A report over the runs that match ``datasets``/``models``/``methods`` (labels); empty = all."""

    name: str
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # ReportConfig keys over the zoo's `report:` block


@dataclass
class Resources:
    """What one job of a stage asks the executor for (Ray: task resources; local: threads)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        require(self.cpus > 0, f"resources: cpus must be > 0, got {self.cpus}")
        require(self.gpus >= 0, f"resources: gpus must be >= 0, got {self.gpus}")


@dataclass
class Zoo:
    """A whole zoo file. Stage blocks (``train``, ``attack``, ...) hold that stage's config keys."""

    name: str
    datasets: list[Any]
    models: list[Any]
    methods: list[Any]
    seeds: Any = field(default_factory=lambda: [0])
    root: str | None = None  # results root (runs/ and results/ go below it); --root wins
    data_dir: str | None = None
    train: dict = field(default_factory=dict)
    attack: Any = None  # mapping of AttackConfig keys, or null/false: no attack jobs
    explain: dict = field(default_factory=dict)  # ExplainConfig keys shared by all explainers
    score: dict = field(default_factory=dict)  # ScoreConfig keys shared by all explainers
    explainers: list[Any] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # ReportConfig keys shared by all reports
    reports: Any = None  # list of ReportEntry; default: one report per dataset x model
    resources: dict = field(default_factory=dict)  # stage (or 'default') -> {cpus, gpus}
    stages: dict = field(default_factory=dict)  # slot -> registered stage name, e.g. {attack: bim-regression}
    more: dict = field(default_factory=dict)  # registered extra stage -> its config (zoo keys of their name)
    description: str = ""
    source: str = ""  # the file it was read from (set by load_zoo)

    def __post_init__(self) -> None:
        where = self.source or "zoo"
        require(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.name)),
                f"{where}: name '{self.name}' may only use letters, digits, '_', '.', '-'")
        self.datasets = [_entry(DatasetEntry, d, f"{where}: datasets[{i}]") for i, d in enumerate(self.datasets)]
        self.models = [_entry(ModelEntry, m, f"{where}: models[{i}]") for i, m in enumerate(self.models)]
        self.methods = [_entry(MethodEntry, m, f"{where}: methods[{i}]") for i, m in enumerate(self.methods)]
        self.explainers = [
            _entry(ExplainerEntry, e, f"{where}: explainers[{i}]") for i, e in enumerate(self.explainers)
        ]
        require(bool(self.datasets), f"{where}: 'datasets' must list at least one dataset")
        require(bool(self.methods), f"{where}: 'methods' must list at least one training method")
        self.seeds = _seeds(self.seeds, where)
        if self.attack is False:
            self.attack = None
        elif self.attack is True:
            self.attack = {}
        require(self.attack is None or isinstance(self.attack, dict),
                f"{where}: 'attack' must be a mapping of attack settings, or false")
        if self.reports is not None:
            require(isinstance(self.reports, list), f"{where}: 'reports' must be a list")
            self.reports = [_entry(ReportEntry, r, f"{where}: reports[{i}]") for i, r in enumerate(self.reports)]
        for key in GRID_KEYS:
            require(key not in self.train,
                    f"{where}: train.{key} is set by the grid; use datasets/models/methods/seeds instead")
        self.resources = {k: self._resources(k, v) for k, v in self.resources.items()}
        slots = _slots()
        for key, value in self.stages.items():
            require(key in slots, f"{where}: stages.{key}: unknown stage.{did_you_mean(key, slots)} Use one of {', '.join(slots)}")
            # Only the name of a registered stage; checked (never imported) when the plan is built.
            require(isinstance(value, str), f"{where}: stages.{key} must be the name of a registered stage, got {value!r}")

    def _resources(self, stage: str, value: Any) -> Resources:
        where = self.source or "zoo"
        slots = _slots()
        require(stage in slots or stage == "default",
                f"{where}: resources.{stage}: unknown stage.{did_you_mean(stage, [*slots, 'default'])}"
                f" Use one of {', '.join(slots)} or default")
        if isinstance(value, Resources):
            return value
        return cfg.build(Resources, value, f"{where}: resources.{stage}")

    def resources_for(self, stage: str) -> Resources:
        return self.resources.get(stage) or self.resources.get("default") or Resources()

    def models_for(self, dataset: DatasetEntry) -> list[ModelEntry]:
        if not dataset.models:
            return list(self.models)
        by_name = {m.name: m for m in self.models}
        out = []
        for name in dataset.models:
            out.append(by_name.get(name) or ModelEntry(name=name))
        return out


def _entry(cls: type, value: Any, where: str) -> Any:
    """A list entry given as a bare name or as a mapping."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        return cls(name=value)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a name or a mapping, got {value!r}")
    return cfg.build(cls, value, where)


def _seeds(value: Any, where: str) -> list[int]:
    """``seeds: 3`` means 0, 1, 2; ``seeds: [0, 5]`` lists them."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: 'seeds' must be a count or a list of integers")
    if isinstance(value, int):
        require(value >= 1, f"{where}: 'seeds' must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        require(len(set(value)) == len(value), f"{where}: 'seeds' lists a seed twice: {value}")
        return list(value)
    raise ConfigError(f"{where}: 'seeds' must be a count or a non-empty list of integers, got {value!r}")


def load_zoo(path: str | Path) -> Zoo:
    """Read and validate a zoo file (a path, or the name of a shipped zoo such as 'quickstart')."""
    path = find_zoo(path)
    data = cfg.load_yaml(path)
    data.setdefault("name", path.stem)
    # A top-level key that names a registered extra stage (e.g. `visualize: {...}`) configures it.
    from xairobust.batch.kinds import extra_stage_names

    fields = {f.name for f in dataclasses.fields(Zoo)}
    more = {k: data.pop(k) for k in list(data) if k not in fields and k in extra_stage_names()}
    if more:
        data["more"] = {**(data.get("more") or {}), **more}
    return cfg.build(Zoo, {**data, "source": str(path)}, str(path))


def shipped_zoo_dirs() -> list[Path]:
    """Where shipped zoo files live: configs/zoo in a source checkout (editable installs), and
    xairobust/configs/zoo inside an installed package (package data), in that order."""
    dirs = [Path(__file__).resolve().parents[2] / "configs" / "zoo"]
    try:
        packaged = resources.files("xairobust") / "configs" / "zoo"
        dirs.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):
        pass
    return [d for d in dirs if d.is_dir()]


def shipped_zoos() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in shipped_zoo_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def find_zoo(name: str | Path) -> Path:
    """A zoo file path as given, else a shipped zoo by name ('quickstart' or 'quickstart.yaml')."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_zoos()
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if len(path.parts) == 1 and stem in shipped:
        return shipped[stem]
    hint = did_you_mean(stem, list(shipped))
    raise ConfigError(
        f"zoo file not found: {name}.{hint} Shipped zoos: {', '.join(shipped) or 'none'}"
    )
