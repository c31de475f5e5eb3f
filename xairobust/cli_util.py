"""Helpers shared by CLI commands: config + override merging, extra ``--key value`` options."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from xairobust.config import load_yaml
from xairobust.errors import ConfigError, XaiRobustError
from xairobust.errors import RunError as XaiRobustRunError
from xairobust.registry import did_you_mean


def parse_extra_options(args: list[str], where: str) -> dict[str, Any]:
    """``['--eps', '0.5', '--random-start', '--no-adv-mix']`` -> ``{'eps': '0.5', 'random_start': 'true', ...}``.

    Used for method/explainer hyper-parameters, which differ per registered entry; the values
    are validated afterwards against that entry's Params dataclass (with did-you-mean errors).
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"{where}: unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or (nxt.startswith("--") and not _is_number(nxt)):
                if key.startswith("no_"):
                    key, value = key[3:], "false"
                else:
                    value = "true"
            else:
                value = nxt
                i += 1
        out[key] = value
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def merged_config(config_path: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """YAML file values, then every CLI option the user actually gave (not None) on top."""
    data = load_yaml(config_path) if config_path else {}
    for key, value in overrides.items():
        if value is None or value == ():
            continue
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return data


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars (for batch jobs and logs).")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="YAML file with the same keys as the options; options given on the command line win.",
)


def check_extra_keys(extra: Mapping[str, Any], entry: object, command: click.Command, label: str) -> None:
    """Refuse extra ``--key`` options that are neither the command's nor the entry's parameters.

    A typo of a command option (``--modle``) would otherwise be read as a hyper-parameter.
    """
    params = getattr(entry, "Params", None)
    allowed = [f.name for f in dataclasses.fields(params)] if params is not None else []
    own = [p.name for p in command.params if p.name]
    for key in extra:
        if key not in allowed:
            hint = did_you_mean(key, allowed + own).replace("'", "'--", 1).replace("_", "-")
            takes = ", ".join(f"--{a.replace('_', '-')}" for a in allowed) or "no options of its own"
            raise ConfigError(
                f"{command.name}: unknown option '--{key.replace('_', '-')}'.{hint} ({label} takes {takes})"
            )


# -- the trained model a command consumes: --model (= --run) ------------------------------------

MODEL_HELP = (
    "The trained model: a run directory, its model.safetensors, or a checkpoint file in any format"
    " `xairobust import` reads (imported once into <file>.run/ beside it, and reused while the file is unchanged)."
)
IMPORT_KEYS = ("arch", "dataset", "input_norm")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """What the user gave for the trained model: ``--model``/``--run`` values and the options that
    describe a checkpoint file (``--arch``, ``--dataset``, ``--input-norm``). Resolved to run
    directories by :meth:`resolve` / :meth:`resolve_all`, the one place every command goes through."""

    models: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    arch: str | None = None
    dataset: str | None = None
    input_norm: str | None = None
    quiet: bool = False

    def given(self, data: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """(option, value) pairs from the command line, else from the config file's ``model``/``run``."""
        pairs = [("--model", v) for v in self.models] + [("--run", v) for v in self.runs]
        from_file: list[Any] = []
        if data is not None:
            for key in ("model", "run"):
                value = data.pop(key, None)
                if value not in (None, "", []):
                    from_file += value if isinstance(value, list) else [value]
        if not pairs:
            pairs = [("model", str(v)) for v in from_file]
        return pairs

    def _import_options(self, data: dict[str, Any] | None) -> dict[str, Any]:
        opts = {k: getattr(self, k) for k in IMPORT_KEYS}
        if data is not None:  # the config file may name them too; the command line wins
            for k in IMPORT_KEYS:
                value = data.pop(k, None)
                opts[k] = opts[k] if opts[k] is not None else value
        return opts

    def resolve_all(self, command: str, data: dict[str, Any] | None = None) -> list[str]:
        """Every run directory given (at least one), in the order given; one given twice is refused."""
        pairs, opts = self.given(data), self._import_options(data)
        if not pairs:
            raise ConfigError(
                f"{command}: --model is required: a run directory (from `xairobust train`), its model.safetensors,"
                " or a checkpoint file"
            )
        out: list[str] = []
        for option, value in pairs:
            run = str(resolve_model_path(command, option, str(value), quiet=self.quiet, **opts))
            if run in out:
                raise ConfigError(f"{command}: {option} {value}: the run {run} is given twice")
            out.append(run)
        return out

    def resolve(self, command: str, data: dict[str, Any] | None = None) -> str:
        """The run directory of a command that takes one model (``--model X --run X`` is one)."""
        pairs, opts = self.given(data), self._import_options(data)
        values = list(dict.fromkeys(v for _, v in pairs))
        if len(values) > 1:
            raise ConfigError(f"{command}: give one model (--model, or its synonym --run), got {', '.join(values)}")
        if not values:
            raise ConfigError(
                f"{command}: --model is required: a run directory (from `xairobust train`), its model.safetensors,"
                " or a checkpoint file"
            )
        option = pairs[0][0]
        return str(resolve_model_path(command, option, str(values[0]), quiet=self.quiet, **opts))


def model_options(help_text: str = MODEL_HELP, multiple: bool = False) -> Callable[[Callable], Callable]:
    """``--model PATH`` (synonym ``--run``) and the options describing a checkpoint file.

    The decorated command receives one ``model_ref: ModelRef`` keyword instead of the raw options,
    so that every command resolves its model the same way (:func:`resolve_model_path`).
    """
    import functools

    many = " (repeat for several)" if multiple else ""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ref = ModelRef(
                models=_tuple(kwargs.pop("model_paths")), runs=_tuple(kwargs.pop("run_paths")),
                arch=kwargs.pop("arch"), dataset=kwargs.pop("import_dataset"), input_norm=kwargs.pop("input_norm"),
                quiet=bool(kwargs.get("quiet")),
            )
            return func(*args, model_ref=ref, **kwargs)

        options = [
            click.option("--model", "model_paths", metavar="MODEL", multiple=multiple, help=help_text + many),
            click.option("--run", "run_paths", metavar="MODEL", multiple=multiple, help="Same as --model."),
            click.option("--arch", help="With a checkpoint file: its registered architecture (`xairobust list models`),"
                                        " unless the file names it."),
            click.option("--dataset", "import_dataset", metavar="DATASET",
                         help="With a checkpoint file: the dataset the model classifies (`xairobust list datasets`)."),
            click.option("--input-norm", metavar="PRESET|MEAN/STD",
                         help="With a checkpoint file that does not carry its input normalisation: a preset (imagenet,"
                              " cifar10, identity, half) or per-channel lists, e.g. 0.5,0.5,0.5/0.25,0.25,0.25."),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def threat_options(steps_help: str, norm_choice: bool = False) -> Callable[[Callable], Callable]:
    """``--norm --eps --steps --step-size``: the budget options of the commands that perturb inputs
    (``attack``, ``manipulate``), one set of names and meanings (``xairobust.perturb.ThreatOptions``).
    ``norm_choice``: click checks --norm (else the command's config does, with its own message)."""
    options = [
        click.option("--norm", type=click.Choice(["linf", "l2"]) if norm_choice else None,
                     help="Threat model: linf (default) or l2."),
        click.option("--eps", help="Radius in the model's input space, e.g. 0.1 or 8/255 (default 8/255)."),
        click.option("--steps", type=int, help=steps_help),
        click.option("--step-size", help="Step length (default 2.5 * eps / steps)."),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def imported_run_dir(checkpoint: str | Path) -> Path:
    """Where ``--model FILE`` imports a checkpoint: ``<file>.run/`` beside it."""
    p = Path(checkpoint)
    return p.with_name(p.name + ".run")


def resolve_model_path(
    command: str,
    option: str,
    value: str,
    arch: str | None = None,
    dataset: str | None = None,
    input_norm: str | None = None,
    quiet: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> Path:
    """The run directory meant by ``option value``: a run directory, a run's model.safetensors,
    or a checkpoint file, imported once (through the import stage) into ``<file>.run/``.
    ``defaults`` (model, dataset) describe a checkpoint file that names neither and has no import
    yet (``train --init FILE``: the architecture and data of the run being trained).

    Every problem is a one-line ConfigError naming ``option`` and the file.
    """
    from xairobust.runs import RUN_JSON, WEIGHTS

    where = f"{command}: {option} {value}"
    if str(value).strip() == "":
        raise ConfigError(f"{command}: {option}: an empty path")
    p = Path(value)
    describes = [f"--{k.replace('_', '-')}" for k, v in (("arch", arch), ("dataset", dataset), ("input_norm", input_norm)) if v]
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as exc:  # a symlink loop, a name too long
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not exists:
        raise ConfigError(f"{where}: no such file or directory")
    run_of_weights = p.name == WEIGHTS and (p.parent / RUN_JSON).is_file()
    if is_dir or run_of_weights:
        run = p if is_dir else p.parent
        if not (run / RUN_JSON).is_file():
            raise ConfigError(
                f"{where}: not a run directory (no {RUN_JSON}); give a run made by `xairobust train` or `xairobust import`,"
                " or a checkpoint file"
            )
        if describes:
            raise ConfigError(
                f"{where} is a run, which records its own architecture and data; {', '.join(describes)} apply to a"
                " checkpoint file only"
            )
        return run
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{where}: the file is not readable")
    return _import_checkpoint_once(command, option, p, arch, dataset, input_norm, quiet, dict(defaults or {}))


def parse_input_norm(text: str, where: str) -> dict[str, Any]:
    """``imagenet`` -> {preset}; ``0.5,0.5/0.2,0.2`` (or ``0.5/0.2``) -> {mean, std}."""
    text = str(text).strip()
    if "/" not in text:
        return {"preset": text, "mean": None, "std": None}
    mean_text, _, std_text = text.partition("/")
    try:
        mean = [float(v) for v in mean_text.split(",")]
        std = [float(v) for v in std_text.split(",")]
    except ValueError:
        raise ConfigError(f"{where}: --input-norm expects a preset or MEAN/STD lists such as 0.5,0.5,0.5/0.25,0.25,0.25,"
                          f" got '{text}'") from None
    if len(mean) != len(std) or not all(map(math.isfinite, mean + std)):
        raise ConfigError(f"{where}: --input-norm needs as many finite stds as means, got '{text}'")
    return {"preset": None, "mean": mean, "std": std}


def _file_says(path: Path) -> dict[str, str]:
    """Architecture / dataset a checkpoint names itself (top-level strings of a torch checkpoint,
    the metadata of a safetensors file), read without unpickling."""
    from xairobust.importers.base import _is_safetensors, read_checkpoint

    found: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors" or _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                found = dict(fh.metadata() or {})
        else:
            obj = read_checkpoint(path).obj
            found = dict(obj) if isinstance(obj, Mapping) else {}
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the import itself, with its reason
        return {}
    out: dict[str, str] = {}
    for key in ("arch", "architecture", "model_name"):
        if isinstance(found.get(key), str) and found[key]:
            out.setdefault("model", found[key])
    if isinstance(found.get("model"), str) and found["model"]:
        out.setdefault("model", found["model"])
    for key in ("dataset", "dataset_name"):
        if isinstance(found.get(key), str) and found[key]:
            out.setdefault("dataset", found[key])
    return out


def _previous_import(where: str, checkpoint: Path, run_dir: Path) -> dict[str, Any] | None:
    """The import settings recorded in ``run_dir`` when it is this tool's import of ``checkpoint``;
    None when there is none yet; a ConfigError when the folder holds something else."""
    from xairobust.runs import CONFIG_YAML, RUN_JSON, WEIGHTS, read_json
    from xairobust.stages.contract import REPLACED_DIR

    if not run_dir.exists():
        return None
    redo = f"import it elsewhere with `xairobust import {checkpoint} --out DIR` and pass --model DIR"
    if not run_dir.is_dir():
        raise ConfigError(f"{where}: {run_dir}, where its import goes, is a file; move it, or {redo}")
    if not (run_dir / RUN_JSON).is_file():
        others = [e.name for e in run_dir.iterdir() if e.name not in (WEIGHTS, CONFIG_YAML, REPLACED_DIR)]
        if others:  # not a half-finished import of ours: user files we must not move
            raise ConfigError(f"{where}: {run_dir}, where its import goes, holds other files ({', '.join(sorted(others)[:3])});"
                              f" move them, or {redo}")
        return None
    try:
        meta = read_json(run_dir / RUN_JSON)
        method = meta["method"]["name"]
        identity = meta["provenance"]["identity"]
        source = meta["source"]
    except (KeyError, TypeError, XaiRobustRunError) as exc:
        raise ConfigError(f"{where}: {run_dir / RUN_JSON} is not an import record ({exc}); {redo}") from None
    if method != "imported" or not isinstance(identity, dict) or not isinstance(source, dict):
        raise ConfigError(f"{where}: {run_dir} holds a run that is not an import of this checkpoint; {redo}")
    if str(source.get("path")) != str(checkpoint.resolve()):
        from xairobust.runs import file_sha256

        if source.get("sha256") != file_sha256(checkpoint):  # moved together with its .run/: still ours
            raise ConfigError(f"{where}: {run_dir} holds the import of another file ({source.get('path')}); {redo}")
    return {**identity, "_sha256": source.get("sha256")}


def _import_checkpoint_once(
    command: str, option: str, path: Path, arch: str | None, dataset: str | None, input_norm: str | None, quiet: bool,
    defaults: dict[str, Any],
) -> Path:
    """Import ``path`` into ``<path>.run/`` unless that import is current (same bytes, same settings).

    A changed file (or other settings) is imported again, after the import stage moves everything
    computed from the old weights to ``.replaced/``, and a note says so: a stale result is never reused.
    """
    from xairobust import config as cfg
    from xairobust.runs import read_run_meta
    from xairobust.stages.import_ import ImportConfig, ImportStage
    from xairobust.validate import check_output_dir

    where = f"{command}: {option} {path}"
    run_dir = imported_run_dir(path)
    previous = _previous_import(where, path, run_dir)
    old_sha = previous.pop("_sha256", None) if previous else None
    settings: dict[str, Any] = dict(previous or {})
    if arch:
        settings["model"] = arch
    if dataset:
        settings["dataset"] = dataset
    if input_norm:
        settings.update(parse_input_norm(input_norm, where))
    if not settings.get("model") or not settings.get("dataset"):
        says = _file_says(path)
        for key in ("model", "dataset"):
            if not settings.get(key) and says.get(key):
                settings[key] = says[key]
            if not settings.get(key) and defaults.get(key):
                settings[key] = defaults[key]
    missing = [flag for key, flag in (("model", "--arch ARCH"), ("dataset", "--dataset DATASET")) if not settings.get(key)]
    if missing:
        raise ConfigError(
            f"{where} is a checkpoint file, not a run; give {' and '.join(missing)} to import it"
            f" (once, into {run_dir}/), e.g. `xairobust {command} --model {path} --arch resnet18_cifar --dataset cifar10`"
        )
    from xairobust.registry import MODELS

    name = str(settings["model"])
    if not name.startswith("timm:") and name not in MODELS:
        from xairobust.registry import did_you_mean

        raise ConfigError(f"{where}: architecture '{name}' is not a registered model.{did_you_mean(name, MODELS.names())}"
                          " Give --arch (`xairobust list models`)")
    try:
        conf = cfg.build(ImportConfig, {**settings, "checkpoint": str(path)}, command)
    except XaiRobustError as exc:
        raise ConfigError(f"{where}: {_unprefixed(exc)}") from None
    stage = ImportStage()
    check_output_dir(run_dir, option)  # the import goes beside the file: that folder must be writable
    try:
        resolved = stage.resolve(run_dir, conf)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if stage.is_current(run_dir, conf, resolved):
        return run_dir
    new_sha = resolved.inputs["source"]["sha256"]
    if previous is not None:
        try:  # a re-import moves the old one aside first: make sure the new one will succeed
            _preflight(conf)
        except XaiRobustError as exc:
            raise ConfigError(f"{where}: {_unprefixed(exc)} ({run_dir} is left as it was)") from None
        why = (f"changed since it was imported (sha256 {str(old_sha)[:12]} -> {new_sha[:12]})" if old_sha != new_sha
               else "was imported with other settings")
        click.echo(f"note: {path} {why}; importing it again into {run_dir} (files computed from the old"
                   f" weights move to {run_dir}/.replaced/)", err=True)
    try:
        stage.run(run_dir, conf, quiet=quiet, force=True)
    except XaiRobustError as exc:  # the import's own reason, said of the option the user gave
        raise ConfigError(f"{where}: {_unprefixed(exc)}") from None
    meta = read_run_meta(run_dir)
    click.echo(f"imported {path} ({meta['source']['format']}, {conf.model} on {conf.dataset}) into {run_dir}", err=True)
    return run_dir


def _unprefixed(exc: BaseException) -> str:
    """The import stage's message, in the options of ``--model FILE`` (--input-norm for --mean/--std, --preset)."""
    text = str(exc)
    text = text[len("import: "):] if text.startswith("import: ") else text
    return (text.replace("give --mean/--std (per channel, for inputs in [0, 1]) or --preset",
                         "give --input-norm MEAN/STD (per channel, for inputs in [0, 1]) or --input-norm PRESET")
            .replace("; --mean/--std says otherwise", "; --input-norm says otherwise")
            .replace("; preset '", "; --input-norm '").replace("unknown --preset '", "unknown --input-norm '"))


def _preflight(conf: Any) -> None:
    """The import stage's own checks (read, key matching, normalisation) without writing anything."""
    import warnings

    from xairobust.data.base import get_source
    from xairobust.importers.base import read_checkpoint
    from xairobust.stages.import_ import plan_conversion, resolve_normalisation

    info = get_source(conf.dataset).info(**conf.dataset_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = read_checkpoint(conf.checkpoint)
    plan = plan_conversion(conf, ckpt, info)
    resolve_normalisation(conf, plan.converted, info.input_shape[0])
