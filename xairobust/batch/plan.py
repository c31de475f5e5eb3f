"""Grid expansion and the job graph: zoo -> train -> attack -> explain -> score -> report jobs.

Every job has a key: a short hash of its resolved config and the keys of the jobs it depends
on. A run directory is named ``<dataset>_<model>_<label>_s<seed>-<key>``, so a changed config
gets a new directory and an unchanged one is found again. All paths in jobs are relative to the
results root; workers run with the root as their working directory, so hashes (which include
paths such as a fine-tuning ``init`` run) do not depend on where the root is mounted.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xairobust import config as cfg
from xairobust.batch.kinds import resolve_stage, slots
from xairobust.batch.zoo import DatasetEntry, ModelEntry, ReportEntry, Resources, Zoo
from xairobust.errors import ConfigError
from xairobust.provenance import config_hash
from xairobust.registry import DATASETS, EXPLAINERS, MODELS
from xairobust.runs import slug


def stage_order(slot: str) -> float:
    """Scheduling rank of a slot: ``Stage.order`` of the stage registered under that name (or,
    for a slot filled only by other stages, of the first of them)."""
    from xairobust.stages.contract import STAGES

    if slot in STAGES:
        return float(STAGES.get(slot).order)
    for name in STAGES.names():
        cls = STAGES.get(name)
        if cls.slot() == slot:
            return float(cls.order)
    return 3.5
# Config fields that do not change a stage's results (left out of job keys).
NOT_IDENTITY = ("device", "data_dir", "out", "quiet", "channels_last")  # channels_last: speed only (xairobust.runtime)


@dataclass
class Job:
    """One stage call. ``target`` is the run directory (or the report's directory)."""

    id: str
    stage: str
    tag: str  # file stem of the job's marker and log: train, attack, explain-ig, report, ...
    name: str  # the registered stage that runs it (STAGES.get(name)); ``stage`` is its slot
    config: dict[str, Any]  # the mapping the stage's config class is built from
    target: str  # relative to the root
    deps: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    key: str = ""
    key_base: dict[str, Any] = field(default_factory=dict)  # what the key hashes, less the deps
    # A report runs over the runs whose chains finished: ``inputs`` maps each run directory to
    # the ids of its jobs the report needs; a run with a failed chain is left out, not fatal.
    inputs: dict[str, list[str]] = field(default_factory=dict)
    run_name: str = ""
    summary: str = ""  # short description for plans and progress

    module: str = ""  # where that stage class is registered (for spawned workers)

    @property
    def soft(self) -> bool:
        """A job over many runs (``per="report"``): it runs over the runs whose chains finished."""
        return bool(self.inputs)

    def stage_config(self, runs: list[str] | None = None) -> dict[str, Any]:
        """The mapping its stage's config is built from; a many-run job's ``runs`` are ``runs``
        (default: every run it was planned over)."""
        if not self.soft:
            return self.config
        return {**self.config, "runs": list(self.inputs) if runs is None else list(runs)}

    def marker(self, root: Path) -> Path:
        return root / self.target / ".batch" / f"{self.tag}.json"

    def log(self, root: Path) -> Path:
        return root / self.target / "logs" / f"{self.tag}.log"


@dataclass
class Plan:
    zoo: Zoo
    jobs: list[Job]
    runs_dir: str
    results_dir: str

    def by_id(self) -> dict[str, Job]:
        return {j.id: j for j in self.jobs}

    def reports(self) -> list[Job]:
        return [j for j in self.jobs if j.soft]


def identity(conf: Any) -> dict[str, Any]:
    """What determines a stage's results: ``conf.identity()`` if it takes no arguments, else its fields."""
    fn = getattr(conf, "identity", None)
    if callable(fn) and not any(
        p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in inspect.signature(fn).parameters.values()
    ):
        return fn()
    d = cfg.to_dict(conf)
    for k in NOT_IDENTITY:
        d.pop(k, None)
    if d.get("precision") == "fp32":  # the default adds nothing, so job keys of before stay valid (runtime.identity_part)
        d.pop("precision")
    return d


def job_key(job: Job, dep_keys: dict[str, str], inputs: list[str] | None = None) -> str:
    payload = {**job.key_base, "deps": dep_keys}
    if inputs is not None:
        payload["inputs"] = sorted(inputs)
    return config_hash(payload)


def _entry_block(entry: Any, slot: str) -> dict[str, Any]:
    """A model or explainer entry's settings for ``slot`` (e.g. a model's ``attack:``), if it has them."""
    value = getattr(entry, slot, None) if slot in {f.name for f in dataclasses.fields(entry)} else None
    return value if isinstance(value, dict) else {}


def _slot_per(slot: str) -> str:
    """``per`` of the stages filling ``slot`` (the stage of that name, else the first registered)."""
    from xairobust.stages.contract import STAGES

    if slot in STAGES:
        return STAGES.get(slot).per
    return next(STAGES.get(n).per for n in STAGES.names() if STAGES.get(n).slot() == slot)


def _after_first(planned: list[tuple[str, type]]) -> list[tuple[str, type]]:
    """The slots in ``Stage.order``, each after the slot its ``after`` names (if planned)."""
    todo = sorted(planned, key=lambda p: p[1].order)
    done: list[tuple[str, type]] = []
    names = {slot for slot, _ in planned}
    while todo:
        ready = next((p for p in todo if p[1].after not in names or p[1].after in {d for d, _ in done}), todo[0])
        todo.remove(ready)
        done.append(ready)
    return done


class _Builder:
    """Expands one zoo; holds the loaded stage classes and the jobs made so far."""

    def __init__(self, zoo: Zoo, skip_missing: bool) -> None:
        self.zoo = zoo
        self.where = zoo.source or "zoo"
        self.runs_dir = f"runs/{zoo.name}"
        self.results_dir = f"results/{zoo.name}"
        self.run_labels: dict[str, str] = {}  # run: entries given a label: run directory -> label
        # Every run of the grid by (dataset, model, label, seed) -> its train/use job, and each
        # run's (dataset, model, seed): an explainer's run parameter given as a label resolves here.
        self.runs_by_label: dict[tuple[str, str, str, Any], list[Job]] = {}
        self.run_point: dict[str, tuple[str, str, Any]] = {}
        self.found_runs: list[tuple[DatasetEntry, ModelEntry, str, Job]] | None = None  # use runs, scanned first
        self.jobs: list[Job] = []
        self.by_id: dict[str, Job] = {}
        self.skipped_stages: list[str] = []
        self.classes: dict[str, type] = {}
        roots = ["train", *(["use"] if any(m.run is not None for m in zoo.methods) else [])]
        for slot in roots:
            self.classes[slot] = resolve_stage(slot, zoo.stages, self.where)
        # Every other slot a registered stage fills joins the job graph when the zoo configures it
        # (a zoo key of the slot's name); where its jobs go is declared on its class (per, after, order).
        self.planned: list[tuple[str, type]] = []  # (slot, stage) of the per-run slots, in planning order
        for slot in slots():
            if slot in roots or not self.configured(slot):
                continue
            try:
                cls = resolve_stage(slot, zoo.stages, self.where)
            except ConfigError:
                if not skip_missing:
                    raise
                self.skipped_stages.append(slot)
                continue
            if cls.after is None and cls.per != "report":
                continue  # starts from nothing (import): no place in a zoo's graph
            self.classes[slot] = cls
            if cls.per != "report":
                self.planned.append((slot, cls))
        self.planned = _after_first(self.planned)
        if "report" in self.classes and len(roots) == 1 and not self.planned:
            del self.classes["report"]  # nothing to report on beyond training
        self.data_dir = str(Path(zoo.data_dir).expanduser().resolve()) if zoo.data_dir else None

    def has(self, stage: str) -> bool:
        return stage in self.classes

    def block(self, slot: str) -> Any:
        """The zoo's settings for ``slot``: its own key (attack, explain, score, report) or a key of
        the slot's name among the others; None or false: not configured."""
        fields = {f.name for f in dataclasses.fields(Zoo)}
        return getattr(self.zoo, slot) if slot in fields else self.zoo.more.get(slot)

    def configured(self, slot: str) -> bool:
        """Whether the zoo asks for ``slot``'s jobs (one per explainer needs explainers listed)."""
        per = _slot_per(slot)
        if per == "report":
            return self.zoo.reports != []
        value = self.block(slot)
        return value is not None and value is not False and (per != "explainer" or bool(self.zoo.explainers))

    def build_conf(self, stage: str, mapping: dict[str, Any], where: str, cls: type | None = None) -> tuple[Any, dict[str, Any]]:
        cls = (cls or self.classes[stage]).Config
        fields = {f.name for f in dataclasses.fields(cls)}
        mapping = dict(mapping)
        if self.data_dir and "data_dir" in fields and "data_dir" not in mapping:
            mapping["data_dir"] = self.data_dir
        return cfg.build(cls, mapping, where), mapping

    def add(self, job: Job) -> Job:
        by_id = self.by_id
        if job.id in by_id:
            raise ConfigError(f"{self.where}: two grid points give the same job {job.id}; give them distinct labels")
        job.resources = self.zoo.resources_for(job.stage)
        if not job.key:
            job.key = job_key(job, {d: by_id[d].key for d in job.deps})
        self.jobs.append(job)
        by_id[job.id] = job
        return job

    # -- train ---------------------------------------------------------------------------------

    def method_points(self, dataset: DatasetEntry, model: ModelEntry) -> dict[str, tuple[Any, dict[str, Any]]]:
        """label -> (method entry, params) for the methods that apply to this dataset x model."""
        from xairobust.stages.train import build_method

        points: dict[str, tuple[Any, dict[str, Any]]] = {}
        for i, entry in enumerate(self.zoo.methods):
            if entry.run is not None:
                continue  # existing runs: see use_jobs
            if entry.models and model.name not in entry.models:
                continue
            if entry.datasets and dataset.name not in entry.datasets:
                continue
            for label, params in entry.expand():
                if label in points:
                    raise ConfigError(
                        f"{self.where}: methods[{i}]: label '{label}' is used twice for"
                        f" {dataset.name} x {model.name}; give the entries distinct labels"
                    )
                build_method(entry.name, params)  # validates the hyper-parameters now
                points[label] = (entry, params)
        return points

    def train_job(self, dataset: DatasetEntry, model: ModelEntry, label: str, seed: int,
                  points: dict[str, tuple[Any, dict[str, Any]]], made: dict[str, Job], chain: tuple[str, ...]) -> Job:
        if label in made:
            return made[label]
        entry, params = points[label]
        mapping: dict[str, Any] = {**self.zoo.train, **dataset.train, **model.train, **entry.train}
        mapping.update(dataset=dataset.name, dataset_kwargs=dataset.kwargs, model=model.name,
                       model_kwargs=model.kwargs, method=entry.name, method_params=params,
                       label=label, seed=seed)
        deps: list[str] = []
        if entry.init_from is not None:
            if entry.init_from not in points:
                raise ConfigError(
                    f"{self.where}: method '{label}': init_from '{entry.init_from}' is not a method label"
                    f" of {dataset.name} x {model.name} (labels: {', '.join(points)})"
                )
            if entry.init_from in chain:
                raise ConfigError(f"{self.where}: init_from forms a cycle: {' -> '.join([*chain, label])}")
            parent = self.train_job(dataset, model, entry.init_from, seed, points, made, (*chain, label))
            mapping["init"] = parent.target
            deps.append(parent.id)  # its path holds its key, so this run's key depends on it
        where = f"{self.where}: {dataset.name} x {model.name} x {label} x seed {seed}"
        conf, mapping = self.build_conf("train", mapping, where)
        key = config_hash(identity(conf))  # equals the config_hash train() writes into run.json
        run_name = f"{dataset.name}_{model.name}_{slug(label)}_s{seed}-{key}"
        target = f"{self.runs_dir}/{run_name}"
        mapping["out"] = target
        job = Job(id=f"train:{run_name}", stage="train", tag="train", **self.impl("train"), config=mapping,
                  target=target, deps=deps, key=key, run_name=run_name,
                  summary=f"train {run_name}")
        made[label] = self.add(job)
        self.register_run(job, dataset.name, model.name, label, seed)
        return job

    def register_run(self, job: Job, dataset: str, model: str, label: str, seed: Any) -> None:
        self.runs_by_label.setdefault((dataset, model, label, seed), []).append(job)
        self.run_point[job.id] = (dataset, model, seed)

    # -- existing runs (zoo `run:` entries) ------------------------------------------------------

    def use_jobs(self) -> list[tuple[DatasetEntry, ModelEntry, str, Job]]:
        """A `use` job per listed run directory: it checks the run; the run's jobs depend on it."""
        found = self.scan_runs()
        for *_, job in found:
            self.add(job)
        return found

    def scan_runs(self) -> list[tuple[DatasetEntry, ModelEntry, str, Job]]:
        """The `use` jobs of the listed run directories, not yet in the plan (done before the
        grid, so that a label given for an explainer's run parameter finds these runs too)."""
        if self.found_runs is not None:
            return self.found_runs
        from xairobust.errors import RunError
        from xairobust.runs import read_run_meta

        datasets = {d.name: d for d in self.zoo.datasets}
        models = {m.name: m for m in self.zoo.models}
        found: list[tuple[DatasetEntry, ModelEntry, str, Job]] = []
        listed: dict[Path, str] = {}
        for i, entry in enumerate(self.zoo.methods):
            for path in entry.run or []:
                where = f"{self.where}: methods[{i}]: run {path}"
                try:
                    run_dir = Path(path).expanduser().resolve(strict=False)
                except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
                    raise ConfigError(f"{where}: cannot resolve the path ({exc})") from None
                if run_dir in listed:  # one run, one row: a second entry would double its samples
                    raise ConfigError(f"{where}: run {run_dir} is listed twice (also as {listed[run_dir]}); list each run once")
                listed[run_dir] = f"methods[{i}]"
                try:
                    meta = read_run_meta(run_dir)
                    ds_name, model_name = meta["dataset"]["name"], meta["model"]["name"]
                except RunError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                except (KeyError, TypeError):
                    raise ConfigError(f"{where}: its run.json names no dataset/model") from None
                if (entry.datasets and ds_name not in entry.datasets) or (entry.models and model_name not in entry.models):
                    continue
                if ds_name not in datasets:
                    raise ConfigError(f"{where}: it is a '{ds_name}' run, but the zoo lists no dataset '{ds_name}'")
                label = entry.label or str(meta.get("label") or run_dir.name)
                if entry.label:
                    self.run_labels[str(run_dir)] = entry.label
                conf, mapping = self.build_conf("use", {"run": str(run_dir)}, where)
                run_name = f"{slug(label)}-{config_hash({'run': str(run_dir)})}"
                job = Job(id=f"use:{run_name}", stage="use", tag="use", **self.impl("use"), config=mapping,
                          target=str(run_dir), run_name=run_name, key_base=self.key_base("use", conf),
                          summary=f"use {run_dir}")
                self.register_run(job, ds_name, model_name, label, meta.get("seed"))
                found.append((datasets[ds_name], models.get(model_name) or ModelEntry(name=model_name), label, job))
        self.found_runs = found
        return found

    # -- per run -------------------------------------------------------------------------------

    def run_jobs(self, train: Job, model: ModelEntry) -> list[str]:
        """The jobs of one run (train or use job ``train``), from the planned stages' declarations
        alone: ``per`` (one job per run, or per run x explainer), ``after`` (the slot whose job of
        the same run -- and explainer -- it waits for) and the zoo's settings for the slot (the
        zoo's key, the model entry's and the explainer entry's key of the slot's name). Returns
        the ids reports need (``report_input``)."""
        needed: list[str] = []
        name = train.run_name
        per_run: dict[str, Job] = {"train": train, train.stage: train}
        per_explainer: dict[str, dict[str, Job]] = {e.name: {} for e in self.zoo.explainers}
        for slot, cls in self.planned:
            block = self.block(slot)
            mapping = {**(block if isinstance(block, dict) else {}), **_entry_block(model, slot)}
            if cls.per == "explainer":
                points = [(e.name, self.explainer_mapping(cls, slot, mapping, e, train)) for e in self.zoo.explainers]
            else:
                points = [(None, mapping)]
            after = cls.after or "train"
            for explainer, m in points:
                dep = (per_explainer[explainer].get(after) if explainer else None) or per_run.get(after)
                if dep is None:
                    if after in self.skipped_stages:
                        continue  # left out with the stage it runs after (skip_missing_stages)
                    raise ConfigError(f"{self.where}: stage '{cls.name}' runs after '{after}', which this zoo has no job for")
                what = f"{slot}{' of ' + repr(explainer) if explainer else ''}"
                conf, m = self.build_conf(slot, m, f"{self.where}: {what}", cls)
                job = self.add(Job(id=f"{slot}:{name}{':' + explainer if explainer else ''}", stage=slot,
                                   tag=f"{slot}-{explainer}" if explainer else slot, **self.impl(slot, cls), config=m,
                                   target=train.target, deps=[dep.id], run_name=name,
                                   key_base=self.key_base(slot, conf, cls),
                                   summary=f"{slot}{' ' + explainer if explainer else ''} {name}{self.run_params_note(cls, explainer, m)}"))
                (per_explainer[explainer] if explainer else per_run)[slot] = job
                if cls.report_input:
                    needed.append(job.id)
        return needed

    def explainer_mapping(self, cls: type, slot: str, mapping: dict[str, Any], e: Any, run: Job) -> dict[str, Any]:
        """A per-explainer stage's settings for explainer entry ``e`` on ``run``: the entry's block
        of the slot's name over the zoo's, the explainer's name, and (``explainer_params``) its
        params, a run parameter given as a method label replaced by that run (``resolve_run_param``)."""
        m = {**mapping, **_entry_block(e, slot), "explainer": e.name}
        if e.params and cls.explainer_params:
            m[cls.explainer_params] = {**m.get(cls.explainer_params, {}), **e.params}
        params = m.get(cls.explainer_params) if cls.explainer_params else None
        if isinstance(params, dict) and e.name in EXPLAINERS:
            for option in EXPLAINERS.get(e.name).run_params:
                value = params.get(option)
                if isinstance(value, str) and value:
                    params = {**params, option: self.resolve_run_param(e.name, option, value, run)}
            m[cls.explainer_params] = params
        return m

    def resolve_run_param(self, explainer: str, option: str, value: str, run: Job) -> str:
        """``value`` of run parameter ``option`` (e.g. blur's ``match``) for the jobs of ``run``:
        a method label of the zoo -> the target of the one run of that label with ``run``'s
        dataset, model and seed (spelled as the planner spells it: relative to the root for a
        trained run, the resolved path for a ``run:`` entry); anything else with a '/' (or an
        existing directory) is a run directory and stays as given. A label with no run, or with
        several, for this seed, and a value that is neither, are one-line ConfigErrors."""
        import os

        dataset, model, seed = self.run_point[run.id]
        where = f"{self.where}: explainer '{explainer}' of {run.run_name}: {option} '{value}'"
        hits = self.runs_by_label.get((dataset, model, value, seed))
        if hits is None and any(k[:3] == (dataset, model, value) for k in self.runs_by_label):
            raise ConfigError(f"{where} is a method label of {dataset} x {model} with no run for seed {seed}")
        if hits:
            if len(hits) > 1:
                raise ConfigError(f"{where} matches {len(hits)} runs for seed {seed} ({', '.join(j.target for j in hits)});"
                                  " give one of them by its path, or distinct labels")
            return hits[0].target
        if "/" in value or os.sep in value or Path(value).expanduser().is_dir():
            return value
        labels = sorted({k[2] for k in self.runs_by_label if k[:2] == (dataset, model)})
        raise ConfigError(f"{where} is neither a method label of {dataset} x {model} ({', '.join(labels)})"
                          " nor a run directory (a path)")

    def run_params_note(self, cls: type, explainer: str | None, m: dict[str, Any]) -> str:
        """For the plan: the runs an explainer's run parameters name, e.g. `` (match: <run>)``."""
        params = m.get(cls.explainer_params) if explainer and cls.explainer_params else None
        if not isinstance(params, dict) or explainer not in EXPLAINERS:
            return ""
        named = [(o, params[o]) for o in EXPLAINERS.get(explainer).run_params if isinstance(params.get(o), str) and params[o]]
        return "".join(f" ({o}: {v})" for o, v in named)

    def impl(self, stage: str, cls: type | None = None) -> dict[str, str]:
        cls = cls or self.classes[stage]
        return {"name": cls.name, "module": cls.__module__}

    def key_base(self, stage: str, conf: Any, cls: type | None = None) -> dict[str, Any]:
        return {"stage": stage, "impl": (cls or self.classes[stage]).name, "config": identity(conf)}

    # -- reports -------------------------------------------------------------------------------

    def report_jobs(self, runs: list[tuple[DatasetEntry, ModelEntry, str, Job, list[str]]]) -> None:
        """Jobs of the stage over many runs (``per="report"``): one per zoo ``reports:`` entry
        (default one per dataset x model), over the runs it selects."""
        slot = next((s for s, c in self.classes.items() if c.per == "report"), None)
        if slot is None:
            return
        cls = self.classes[slot]
        entries = self.zoo.reports
        if entries is None:
            pairs = list(dict.fromkeys((d.name, m.name) for d, m, *_ in runs))
            entries = [ReportEntry(name=f"{d}_{m}", datasets=[d], models=[m]) for d, m in pairs]
        for i, entry in enumerate(entries):
            chosen = [
                (train, needed) for d, m, label, train, needed in runs
                if (not entry.datasets or d.name in entry.datasets)
                and (not entry.models or m.name in entry.models)
                and (not entry.methods or label in entry.methods)
            ]
            if not chosen:
                raise ConfigError(f"{self.where}: reports[{i}] '{entry.name}' matches no run of the grid")
            where = f"{self.where}: report '{entry.name}'"
            mapping = {**(self.block(slot) or {}), **entry.config}
            fields = {f.name for f in dataclasses.fields(cls.Config)}
            if "baseline" in fields and "baseline" not in mapping:
                # The report's baseline is a row label; the zoo may have renamed 'standard'.
                standard = next((m for m in self.zoo.methods if m.name == "standard" and m.label), None)
                if standard is not None:
                    mapping["baseline"] = standard.expand()[0][0]
            if "explainer" in fields and "explainer" not in mapping and self.zoo.explainers and self.has("score"):
                # Only the explainers this zoo asked for (sorted: the report's order without a
                # selection): its runs may hold another zoo's score files too.
                mapping["explainer"] = sorted(e.name for e in self.zoo.explainers)
            relabel = {train.target: self.run_labels[train.target] for train, _ in chosen if train.target in self.run_labels}
            if relabel:
                mapping["labels"] = relabel
            conf, mapping = self.build_conf(slot, mapping, where, cls)
            target = f"{self.results_dir}/{entry.name}"
            inputs = {train.target: needed for train, needed in chosen}
            job = Job(id=f"{slot}:{entry.name}", stage=slot, tag=slot, **self.impl(slot, cls),
                      config=mapping, target=target, deps=[d for ids in inputs.values() for d in ids],
                      inputs=inputs, key_base=self.key_base(slot, conf, cls),
                      summary=f"{slot} {entry.name} ({len(inputs)} runs)")
            job.key = job_key(job, {d: self.by_id[d].key for d in job.deps}, list(inputs))
            self.add(job)

    # -- edges from declared inputs ------------------------------------------------------------

    def link_planned_inputs(self) -> None:
        """Order each job after the jobs whose outputs it reads (``Stage.planned_inputs``: e.g.
        the blur control's ``match`` maps, another run's explain output), then put the jobs back
        in dependency order. These edges only order the jobs: a job's key stays the hash of its
        config and its ``after`` chain (the input files themselves are in its provenance)."""
        import heapq
        import os

        from xairobust.stages.contract import STAGES

        def norm(path: Any) -> str:
            return os.path.normpath(str(path))

        stages = {job.id: STAGES.get(job.name)() for job in self.jobs}
        confs = {job.id: cfg.build(type(stages[job.id]).Config, job.config, job.id) for job in self.jobs}
        wanted = {job.id: stages[job.id].planned_inputs(Path(job.target), confs[job.id]) for job in self.jobs}
        if not any(wanted.values()):
            return
        made_by: dict[str, str] = {}
        for job in self.jobs:
            for out in stages[job.id].outputs(Path(job.target), confs[job.id]):
                made_by.setdefault(norm(out), job.id)
        for job in self.jobs:
            for path in wanted[job.id].values():
                producer = made_by.get(norm(path))
                if producer is not None and producer != job.id and producer not in job.deps:
                    job.deps.append(producer)
        # Stable topological order: the planned order wherever the new edges allow it.
        index = {job.id: i for i, job in enumerate(self.jobs)}
        waiting = {job.id: len(job.deps) for job in self.jobs}
        users: dict[str, list[str]] = {}
        for job in self.jobs:
            for d in job.deps:
                users.setdefault(d, []).append(job.id)
        ready = [index[j] for j, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        ordered: list[Job] = []
        while ready:
            job = self.jobs[heapq.heappop(ready)]
            ordered.append(job)
            for u in users.get(job.id, []):
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, index[u])
        if len(ordered) != len(self.jobs):
            stuck = ", ".join(j.id for j in self.jobs if waiting[j.id] > 0)
            raise ConfigError(f"{self.where}: the jobs' declared inputs form a cycle: {stuck}")
        self.jobs[:] = ordered


def build_plan(zoo: Zoo, skip_missing_stages: bool = False) -> tuple[Plan, list[str]]:
    """Expand ``zoo`` into its job graph (validating every config on the way).

    Returns the plan and the stages left out because this installation lacks them (only with
    ``skip_missing_stages``; otherwise a missing stage is a ConfigError).
    """
    b = _Builder(zoo, skip_missing_stages)
    for d in zoo.datasets:
        DATASETS.get(d.name)
    for m in zoo.models:
        MODELS.get(m.name)
    if b.has("explain") and b.classes["explain"].name == "explain":
        for e in zoo.explainers:
            EXPLAINERS.get(e.name)
    runs: list[tuple[DatasetEntry, ModelEntry, str, Job, list[str]]] = []
    has_runs = b.has("use")
    if has_runs:
        b.scan_runs()  # registered first: an explainer's run parameter may name them by label
    for dataset in zoo.datasets:
        models = zoo.models_for(dataset)
        if not models and has_runs:
            continue
        if not models:
            raise ConfigError(f"{b.where}: no model for dataset '{dataset.name}'; list one under 'models'")
        for model in models:
            MODELS.get(model.name)
            points = b.method_points(dataset, model)
            if not points:
                continue
            for seed in zoo.seeds:
                made: dict[str, Job] = {}
                for label in points:
                    train = b.train_job(dataset, model, label, seed, points, made, ())
                for label in points:
                    train = made[label]
                    runs.append((dataset, model, label, train, b.run_jobs(train, model)))
    if has_runs:
        seen = {train.target for *_, train, _ in runs}
        for dataset, model, label, job in b.use_jobs():
            if job.target in seen:
                raise ConfigError(f"{b.where}: run {job.target} is listed twice")
            seen.add(job.target)
            runs.append((dataset, model, label, job, b.run_jobs(job, model)))
    if not runs:
        raise ConfigError(f"{b.where}: the grid is empty (check the methods' models/datasets restrictions)")
    b.report_jobs(runs)
    b.link_planned_inputs()
    return Plan(zoo=zoo, jobs=b.jobs, runs_dir=b.runs_dir, results_dir=b.results_dir), b.skipped_stages
