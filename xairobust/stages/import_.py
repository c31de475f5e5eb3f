"""The import stage: a checkpoint file -> a run directory (model.safetensors + config.yaml + run.json).

The run directory looks like a trained one to every later stage (attack, explain, score,
report, ``init:``): the model is a registered architecture wrapped with its input normalisation
(inputs in the data's natural range), the weights are safetensors, and ``run.json`` has the
fields of a trained run with ``method: {name: imported, ...}``. What is particular to an import
is recorded there too: the source file's sha256 and size, the format (and whether ``auto``
chose it), the nested entry used, every renaming rule, every renamed and dropped key, where the
normalisation came from, and (``--verify N``) the clean accuracy on the first N test images.

Safety: the file is read with safetensors or ``torch.load(weights_only=True)`` only, and the
weights are loaded with strict key matching (missing, unexpected and mis-shaped keys are listed
in one line).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.base import get_dataset, get_source
from xairobust.errors import ConfigError
from xairobust.importers.base import (
    FORMATS,
    Checkpoint,
    Converted,
    KeyReport,
    compare_keys,
    read_checkpoint,
    resolve_preset,
)
from xairobust.models.base import create_model
from xairobust.provenance import git_commit, versions
from xairobust.registry import MODELS
from xairobust.runs import (
    CONFIG_YAML,
    RUN_JSON,
    WEIGHTS,
    run_header,
    save_model,
    write_text_atomic,
)
from xairobust.stages.contract import STAGES, Stage, StageIdentity, Written, config_identity, not_identity

FORMAT = 1
METHOD = "imported"


@dataclass
class ImportConfig:
    """Keys of ``xairobust import --config``."""

    checkpoint: str = not_identity("")  # its contents are the input (sha256), not its path
    model: str = ""
    dataset: str = ""
    dataset_kwargs: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)  # e.g. {depth: 34, widen_factor: 10}
    format: str = "auto"
    key: str | None = None  # nested entry holding the weights ('state_dict', 'last', ...)
    mean: list[float] | None = None
    std: list[float] | None = None
    preset: str | None = None  # named normalisation (imagenet, cifar10, identity, half)
    num_outputs: int | None = None  # default: the dataset's classes
    label: str | None = None  # row name in reports; default: the checkpoint's file stem
    seed: int = 0  # tells several checkpoints of one label apart in reports
    verify: int = 0  # clean accuracy on the first N test images (0: skip)
    batch_size: int = not_identity(256)
    device: str = not_identity("auto")
    data_dir: str | None = not_identity(None)

    def __post_init__(self) -> None:
        require(bool(self.checkpoint), "import: give the checkpoint file (CHECKPOINT)")
        require(bool(self.model), "import: --model is required (a registered architecture, `xairobust list models`)")
        require(bool(self.dataset), "import: --dataset is required (the data the model was trained for)")
        require(self.format == "auto" or self.format in FORMATS,
                f"import: unknown --format '{self.format}'. Known: auto, {', '.join(FORMATS.names())}")
        require(self.verify >= 0, f"import: --verify must be >= 0, got {self.verify}")
        require(self.batch_size >= 1, f"import: --batch-size must be >= 1, got {self.batch_size}")
        require(self.num_outputs is None or self.num_outputs >= 1, f"import: --num-outputs must be >= 1, got {self.num_outputs}")
        require((self.mean is None) == (self.std is None), "import: give --mean and --std together")
        require(self.preset is None or self.mean is None, "import: give --preset or --mean/--std, not both")
        if self.mean is not None:
            self.mean = [float(v) for v in self.mean]
            self.std = [float(v) for v in self.std or []]
        if self.preset is not None:
            resolve_preset(self.preset)  # an unknown preset fails here

    def resolved_label(self) -> str:
        return self.label or Path(self.checkpoint).stem

    def identity(self) -> dict[str, Any]:
        """What determines the run directory (not the checkpoint's path, device or batch size)."""
        return config_identity(self)


# -- conversion --------------------------------------------------------------------------------


@dataclass
class Plan:
    """A conversion that fits: format, converted state, model kwargs and what was inferred."""

    format: str
    detected: bool
    converted: Converted
    kwargs: dict[str, Any]
    inferred: dict[str, Any]


def _base_kwargs(conf: ImportConfig, info) -> dict[str, Any]:
    return {"num_outputs": conf.num_outputs or info.num_outputs, "in_channels": info.input_shape[0]}


def _builder_infer(model: str):
    if model.startswith("timm:") or model not in MODELS:
        return None
    return getattr(MODELS.get(model), "infer_kwargs", None)


def _fit(conf: ImportConfig, info, conv: Converted) -> tuple[dict[str, Any], dict[str, Any], KeyReport]:
    """(model kwargs, the ones inferred from the keys, key report) of ``conv`` for the architecture."""
    infer = _builder_infer(conf.model)
    inferred = {k: v for k, v in (infer(conv.state) if infer else {}).items() if k not in conf.model_kwargs}
    kwargs = {**_base_kwargs(conf, info), **inferred, **conf.model_kwargs}
    with torch.device("meta"):  # key names and shapes only: no memory, no initialisation
        net = create_model(conf.model, **kwargs).net
    return kwargs, inferred, compare_keys(conv.state, net.state_dict())


def _hint(report: KeyReport, conf: ImportConfig, info) -> str:
    """A did-you-mean for the common case: only the classifier's class count differs."""
    if report.missing or report.unexpected or not report.shapes:
        return ""
    n = conf.num_outputs or info.num_outputs
    others = {a[0] for _, a, b in report.shapes if a[1:] == b[1:] and b[0] == n}
    if len(others) == 1 and all(a[1:] == b[1:] and b[0] == n for _, a, b in report.shapes):
        c = others.pop()
        return (f" The checkpoint's classifier has {c} outputs and '{conf.dataset}' {n}: pass --num-outputs {c}"
                " to import it as it is (e.g. as `init:` of a fine-tuning run, which re-initialises the head)")
    return ""


def plan_conversion(conf: ImportConfig, ckpt: Checkpoint, info) -> Plan:
    """Convert with ``conf.format`` (or ``auto``: the first format whose result fits exactly)."""
    names = [conf.format] if conf.format != "auto" else None
    if names is None:
        from xairobust.importers.formats import AUTO_ORDER

        names = [n for n in AUTO_ORDER if FORMATS.get(n)().detect(ckpt)]
    tried: list[tuple[str, KeyReport | None, str]] = []
    for name in names:
        fmt = FORMATS.get(name)()
        fmt.check_model(conf.model)
        try:
            conv = fmt.convert(ckpt, conf.key)
            fmt.adapt(conv, conf.model)
        except ConfigError as exc:
            if conf.format != "auto":
                raise
            tried.append((name, None, str(exc)))
            continue
        kwargs, inferred, report = _fit(conf, info, conv)
        if report.ok:
            return Plan(name, conf.format == "auto", conv, kwargs, inferred)
        tried.append((name, report, ""))
    if not tried:
        raise ConfigError(f"import: no format recognises {ckpt.path}; give --format ({', '.join(FORMATS.names())})")
    fitted = [(n, r) for n, r, _ in tried if r is not None]
    if not fitted:
        raise ConfigError(tried[0][2])
    name, report = min(fitted, key=lambda t: t[1].size)
    where = f"format {name}" + (" (auto)" if conf.format == "auto" else "")
    raise ConfigError(
        f"import: {ckpt.path} does not fit '{conf.model}' ({where}, strict key matching): {report.line()}."
        f"{_hint(report, conf, info)}"
    )


def resolve_normalisation(conf: ImportConfig, conv: Converted, channels: int) -> tuple[list[float], list[float], str]:
    """(mean, std, where from): the checkpoint's when it carries one, else --mean/--std or --preset."""
    given: tuple[list[float], list[float], str] | None = None
    if conf.mean is not None:
        given = (list(conf.mean), list(conf.std or []), "--mean/--std")
    elif conf.preset is not None:
        mean, std = resolve_preset(conf.preset)
        given = (mean, std, f"preset '{conf.preset}'")
    if conv.mean is not None:
        own = (conv.mean, conv.std or [], f"checkpoint ({conv.normalisation_from})")
        if given is not None and not (_close(given[0], own[0]) and _close(given[1], own[1])):
            raise ConfigError(
                f"import: the checkpoint carries its normalisation (mean {own[0]}, std {own[1]}, from"
                f" {conv.normalisation_from}); {given[2]} says otherwise -- leave it out"
            )
        result = own
    elif given is not None:
        result = given
    else:
        from xairobust.importers.base import PRESETS

        raise ConfigError(
            "import: this checkpoint does not carry its input normalisation; give --mean/--std (per channel,"
            f" for inputs in [0, 1]) or --preset ({', '.join(PRESETS)})"
        )
    mean, std, source = result
    if len(mean) == 1 and channels > 1:  # a scalar normalisation applies to every channel
        mean, std = mean * channels, std * channels
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"import: the normalisation has {len(mean)} means and {len(std)} stds; the data has {channels} channels")
    if not all(math.isfinite(v) for v in [*mean, *std]):
        raise ConfigError(f"import: the normalisation ({source}) holds NaN/inf: mean {mean}, std {std}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"import: every std must be > 0, got {std}")
    return mean, std, source


def check_import_values(conv: Converted, target: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse what ``load_state_dict`` would take silently: NaN/inf weights, and an integer (or
    boolean) tensor copied into a floating parameter or the reverse (a cast that changes values:
    int64 -> float32 loses digits above 2**24, float -> int truncates). Named by the checkpoint's key."""
    from xairobust.runs import nonfinite_tensor

    for key, value in conv.state.items():
        bad = nonfinite_tensor({conv.renamed.get(key, key): value})
        if bad is not None:
            raise ConfigError(f"import: {path}: tensor {bad}; the weights are damaged, nothing can be computed from them")
        want = target.get(key)
        if want is None:
            continue
        if value.is_floating_point() != want.is_floating_point() or (value.dtype == torch.bool) != (want.dtype == torch.bool):
            have = str(value.dtype).replace("torch.", "")
            need = str(want.dtype).replace("torch.", "")
            raise ConfigError(
                f"import: {path}: tensor '{conv.renamed.get(key, key)}' is {have} but the model's '{key}' is {need};"
                " a cast between integer and floating weights would change them silently. Convert the checkpoint"
                " explicitly (e.g. state[key] = state[key].float()) if that is what it means"
            )


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


# -- the stage ---------------------------------------------------------------------------------


@STAGES.register("import")
class ImportStage(Stage, name="import", Config=ImportConfig, format=FORMAT, owns_dir=True, per="run", after=None,
                         order=0):
    """checkpoint file -> run directory (see the module docstring)."""

    # Place in a zoo's job graph (read by a stage-driven planner): it makes a run, from no
    # earlier stage; zoos list imported runs with `run:` entries instead (stages/use.py).

    def inputs(self, run_dir: Path, conf: ImportConfig) -> dict[str, Path]:
        path = Path(conf.checkpoint)
        if not path.is_file():
            raise ConfigError(f"import: checkpoint not found: {path}")
        return {"source": path}

    def outputs(self, run_dir: Path, conf: ImportConfig) -> list[Path]:
        run_dir = Path(run_dir)
        return [run_dir / WEIGHTS, run_dir / CONFIG_YAML, run_dir / RUN_JSON]

    def hint(self, run_dir: Path, conf: ImportConfig) -> str:
        return f"xairobust import {conf.checkpoint} --model {conf.model} --dataset {conf.dataset} --out {run_dir}"

    def occupied(self, run_dir: Path, conf: ImportConfig) -> str:
        return f"import: {run_dir} already holds a run (another checkpoint or settings); choose another --out or pass --force"

    def compute(self, run_dir: Path, conf: ImportConfig, resolved: StageIdentity, quiet: bool) -> Written:
        return _import(run_dir, conf, resolved, quiet)


def import_checkpoint(conf: ImportConfig, out: str | Path, quiet: bool = False, force: bool = False) -> Path:
    """Public API: import ``conf.checkpoint`` into run directory ``out``; no-op when current."""
    ImportStage().run(Path(out), conf, quiet, force)
    return Path(out)


def _import(run_dir: Path, conf: ImportConfig, resolved: StageIdentity, quiet: bool) -> Written:
    source = get_source(conf.dataset)
    info = source.info(**conf.dataset_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on pickle protocols; the refusal itself is an error
        ckpt = read_checkpoint(conf.checkpoint)
    if ckpt.sha256 != resolved.inputs["source"]["sha256"]:
        raise ConfigError(f"import: {conf.checkpoint} changed while it was being imported; run the import again")
    plan = plan_conversion(conf, ckpt, info)
    mean, std, norm_source = resolve_normalisation(conf, plan.converted, info.input_shape[0])
    kwargs = {**plan.kwargs, "mean": mean, "std": std}
    if plan.converted.clamp is not None:  # recorded in run.json (model.kwargs), so every load reproduces it
        kwargs["clamp"] = list(plan.converted.clamp)
    torch.manual_seed(conf.seed)
    model = create_model(conf.model, **kwargs)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in plan.converted.state.values()})
    check_import_values(plan.converted, model.net.state_dict(), ckpt.path)
    model.net.load_state_dict(plan.converted.state, strict=True)
    model.eval()

    num_outputs = kwargs["num_outputs"]
    head_matches = num_outputs == info.num_outputs
    if conf.verify and not head_matches:
        raise ConfigError(
            f"import: --verify needs the model's {num_outputs} outputs to be '{conf.dataset}'s {info.num_outputs} classes"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    weights_sha = save_model(run_dir / WEIGHTS, model)
    test = _verify(run_dir, conf, kwargs, quiet) if conf.verify else None

    resolved_conf = cfg.to_dict(conf)
    resolved_conf["out"] = str(run_dir)
    write_text_atomic(run_dir / CONFIG_YAML, yaml.safe_dump(resolved_conf, sort_keys=False))
    meta = {
        **run_header(conf.resolved_label(), conf.dataset, conf.dataset_kwargs, info, conf.model, kwargs),
        "method": {"name": METHOD, "params": {}, "source_format": plan.format},
        "seed": conf.seed,
        "source": {
            "path": str(Path(conf.checkpoint).resolve()),
            "sha256": ckpt.sha256,
            "size_bytes": ckpt.size_bytes,
            "container": ckpt.container,
            "format": plan.format,
            "format_detected": plan.detected,
            "dtypes": dtypes,
        },
        "normalisation": {"mean": mean, "std": std, "from": norm_source,
                          **({"clamp": list(plan.converted.clamp)} if plan.converted.clamp is not None else {})},
        "mapping": plan.converted.mapping(),
        "inferred_model_kwargs": plan.inferred,
        "head": {"num_outputs": num_outputs, "dataset_classes": info.num_outputs, "matches_dataset": head_matches},
        "test": test,
        "clean_accuracy": test["accuracy"] if test else None,
        "config_hash": resolved.hash[:8],
        "weights_sha256": weights_sha,
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Written(meta)  # run.json, written last: its presence marks a finished import


def _verify(run_dir: Path, conf: ImportConfig, kwargs: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Clean accuracy of the saved weights, reloaded from the file as every later stage loads
    them, on the first N test images."""
    from xairobust.devices import pick_device
    from xairobust.evaluation import score_outputs
    from xairobust.progress import make_progress
    from xairobust.runs import load_state_into

    device = pick_device(conf.device)
    split = get_dataset(conf.dataset, "test", conf.data_dir, **conf.dataset_kwargs)
    n = min(conf.verify, len(split))
    model = create_model(conf.model, **kwargs)
    load_state_into(model, run_dir / WEIGHTS)
    model.to(device).eval()
    outs = []
    with make_progress(quiet) as progress, torch.no_grad():
        task = progress.add_task(f"verify on {n} test images", total=n, info="")
        for start in range(0, n, conf.batch_size):
            idx = slice(start, min(start + conf.batch_size, n))
            outs.append(model(split.inputs(idx, device)).float().cpu())
            progress.advance(task, idx.stop - idx.start)
    metrics = score_outputs(torch.cat(outs), split.y[:n], split.info.task)
    return {**metrics, "n": n, "split": "test", "selection": "first"}
