"""Checks at the boundary: what a user hands the tool is refused with one line before any work.

Each function raises :class:`~xairobust.errors.ConfigError` (options), :class:`RunError` (run
directories and their files) or :class:`DataError` naming the option or file and what is wrong.
Stages call them with one line at the point where the input enters; nothing here computes
results. Numeric options are checked centrally in :func:`xairobust.config.build` (finite numbers,
the option's CLI name); this module holds the checks that need more than one value:

* :func:`check_run_meta`       run.json has the keys and types every stage reads, and its
                               dataset still gives the inputs its model was built for;
* :func:`check_attributions`   an attribution file's tensors, shapes, dtypes and indices fit the
                               run, and non-finite attributions are refused (or counted);
* :func:`check_output_dir` / :func:`check_output_file`
                               an output path can be written, checked before long work starts;
* :func:`check_model_input`    a model built for a dataset takes its inputs (one zero batch).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from xairobust.errors import ConfigError, RunError

# --- run.json ----------------------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", dict: "a mapping", list: "a list", int: "an integer", float: "a number"}


def _need(meta: Mapping[str, Any], dotted: str, kind: type | tuple[type, ...], where: Path, optional: bool = False) -> Any:
    """The value at ``dotted`` (a.b.c) of ``meta``, checked to be of ``kind``."""
    node: Any = meta
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, Mapping):
            raise RunError(f"{where}: '{'.'.join(parts[:i])}' must be a mapping, got {type(node).__name__}")
        if part not in node:
            if optional:
                return None
            raise RunError(f"{where}: missing key '{dotted}' (the file is damaged or not written by `xairobust train`)")
        node = node[part]
    if node is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(node, kinds) and not (isinstance(node, bool) and bool not in kinds)
    if float in kinds and isinstance(node, (int, float)) and not isinstance(node, bool):
        ok = True
    if not ok:
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise RunError(f"{where}: '{dotted}' must be {wanted}, got {type(node).__name__} {node!r:.40}")
    return node


def check_run_meta(meta: Mapping[str, Any], where: Path) -> None:
    """The keys and types of run.json that the stages read, and the dataset/model agreement.

    A run whose run.json names a dataset whose inputs differ from the ones its model was built
    for (e.g. a digits model pointed at CIFAR-10) is refused here, before any data is loaded.
    """
    _need(meta, "dataset", dict, where)
    name = _need(meta, "dataset.name", str, where)
    kwargs = _need(meta, "dataset.kwargs", dict, where, optional=True) or {}
    task = _need(meta, "dataset.info.task", str, where)
    if task not in ("classification", "regression"):
        raise RunError(f"{where}: 'dataset.info.task' must be classification or regression, got '{task}'")
    outputs = _need(meta, "dataset.info.num_outputs", int, where)
    if outputs < 1:
        raise RunError(f"{where}: 'dataset.info.num_outputs' must be >= 1, got {outputs}")
    shape = _need(meta, "dataset.info.input_shape", list, where)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise RunError(f"{where}: 'dataset.info.input_shape' must be a list of positive integers, got {shape!r:.60}")
    vr = _need(meta, "dataset.info.value_range", list, where, optional=True)
    if vr is not None and (len(vr) != 2 or not all(_finite_number(v) for v in vr) or not vr[0] < vr[1]):
        raise RunError(f"{where}: 'dataset.info.value_range' must be [low, high] with low < high, got {vr!r:.60}")
    _need(meta, "model.name", str, where)
    model_kwargs = _need(meta, "model.kwargs", dict, where)
    _need(meta, "method.name", str, where, optional=True)
    _need(meta, "label", str, where, optional=True)
    _need(meta, "seed", int, where, optional=True)
    _need(meta, "weights_sha256", str, where, optional=True)
    channels = model_kwargs.get("in_channels")
    if isinstance(channels, int) and channels != shape[0]:
        raise RunError(
            f"{where}: the model takes {channels} input channel(s) but 'dataset.info.input_shape' is {shape};"
            " the file was edited or is damaged"
        )
    _check_dataset_fits(name, kwargs, shape, outputs, where)


def _check_dataset_fits(name: str, kwargs: dict[str, Any], shape: list[int], outputs: int, where: Path) -> None:
    """The registered dataset ``name`` gives inputs of ``shape`` and ``outputs`` targets."""
    from xairobust.data.base import get_source
    from xairobust.errors import XaiRobustError
    from xairobust.registry import DATASETS

    if name not in DATASETS.names():
        DATASETS.get(name)  # the did-you-mean ConfigError
    try:
        info = get_source(name).info(**kwargs)
    except XaiRobustError:
        raise
    except (TypeError, ValueError) as exc:
        raise RunError(f"{where}: 'dataset.kwargs' do not fit dataset '{name}' ({exc})") from None
    if list(info.input_shape) != list(shape) or int(info.num_outputs) != int(outputs):
        raise RunError(
            f"{where}: the run's model was built for inputs {tuple(shape)} with {outputs} outputs, but dataset"
            f" '{name}' gives {tuple(info.input_shape)} with {info.num_outputs}; this run cannot be used on '{name}'"
        )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- model x dataset -------------------------------------------------------------------------------


def check_model_input(build: Callable[[Any], Any], source: Any, dataset_kwargs: Mapping[str, Any], where: str) -> None:
    """A model built by ``build(info)`` takes a batch of the dataset's input shape and gives its outputs.

    Run once on zeros, from the dataset's declared info (no data is read), before training, so
    that an architecture with a fixed input size (digits_cnn is 8x8) paired with another dataset
    (CIFAR-10, 32x32) fails now with one line, not inside the first epoch after loading the data.
    """
    import torch

    try:
        info = source.info(**dataset_kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: dataset_kwargs do not fit the dataset ({exc})") from None
    model = build(info)
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *info.input_shape))
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: the model does not take this dataset's inputs {tuple(info.input_shape)} ({first})") from None
    if tuple(out.shape) != (2, int(info.num_outputs)):
        raise ConfigError(
            f"{where}: the model gives {tuple(out.shape[1:])} outputs per input but the dataset has {info.num_outputs}"
            " targets; remove num_outputs from model_kwargs"
        )


# --- attribution files -------------------------------------------------------------------------

_ATTRIBUTION_DTYPES = {
    "inputs": ("float32", "float64"),
    "attributions": ("float32", "float64"),
    "targets": ("int32", "int64"),
    "indices": ("int32", "int64"),
}


def check_attribution_doc(attr_meta: Mapping[str, Any], doc: Path) -> None:
    """The keys of attributions/<explainer>.json that score reads (one line naming the file)."""
    if not isinstance(attr_meta.get("params"), dict):
        raise RunError(f"{doc}: 'params' must be a mapping of the explainer's parameters")
    seed = attr_meta.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RunError(f"{doc}: 'seed' must be an integer, got {seed!r:.40}")


def check_attributions(
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any],
    attr_meta: Mapping[str, Any],
    path: Path,
    allow_nonfinite: bool = False,
    allow_degenerate: bool = False,
    allow_constant: bool = False,
) -> list[int]:
    """Check an attribution file against its run; returns the rows with non-finite attributions.

    Refused with one line naming ``path``: a missing tensor, a wrong dtype, shapes that disagree
    with each other or with the run's input shape, target indices outside the model's outputs,
    sample indices that are negative, repeated or beyond the test split, and -- unless
    ``allow_nonfinite`` -- any NaN/inf attribution (the message counts the samples affected).
    With ``allow_nonfinite`` the rows affected are returned so that the caller scores the others.
    Degenerate maps (all zero; constant unless ``allow_constant``, e.g. the 'constant' control) are
    refused unless ``allow_degenerate``: they rank no feature and give inf/NaN sensitivities.
    """
    import torch

    check_attribution_doc(attr_meta, path.with_suffix(".json"))
    for key, dtypes in _ATTRIBUTION_DTYPES.items():
        if key not in tensors:
            raise RunError(f"{path}: no '{key}' tensor; not an attribution file of `xairobust explain`")
        dtype = str(tensors[key].dtype).replace("torch.", "")
        if dtype not in dtypes:
            raise RunError(f"{path}: '{key}' has dtype {dtype}; expected {' or '.join(dtypes)}")
    x, a, t, idx = (tensors[k] for k in ("inputs", "attributions", "targets", "indices"))
    n = x.shape[0] if x.dim() else 0
    shape = list(meta["dataset"]["info"]["input_shape"])
    if x.dim() != len(shape) + 1 or list(x.shape[1:]) != shape:
        raise RunError(f"{path}: 'inputs' has shape {tuple(x.shape)}; this run's inputs are (N, {', '.join(map(str, shape))})")
    if tuple(a.shape) != tuple(x.shape):
        raise RunError(f"{path}: 'attributions' has shape {tuple(a.shape)} but 'inputs' {tuple(x.shape)}; they must match")
    for key, v in (("targets", t), ("indices", idx)):
        if tuple(v.shape) != (n,):
            raise RunError(f"{path}: '{key}' has shape {tuple(v.shape)}; expected ({n},), one per sample")
    if n == 0:
        raise RunError(f"{path}: holds no samples")
    outputs = int(meta["dataset"]["info"]["num_outputs"])
    if int(t.min()) < 0 or int(t.max()) >= outputs:
        raise RunError(f"{path}: target indices must be in 0..{outputs - 1} (the model's outputs), found {int(t.min())}..{int(t.max())}")
    split_size = attr_meta.get("split_size")
    limit = f" (the test split has {split_size})" if isinstance(split_size, int) else ""
    if int(idx.min()) < 0 or (isinstance(split_size, int) and int(idx.max()) >= split_size):
        raise RunError(f"{path}: sample indices {int(idx.min())}..{int(idx.max())} are outside the test split{limit}")
    if len(torch.unique(idx)) != n:
        raise RunError(f"{path}: 'indices' lists a sample twice")
    if not bool(torch.isfinite(x).all()):
        raise RunError(f"{path}: 'inputs' holds NaN or inf values; recompute with `xairobust explain`")
    bad_rows = (~torch.isfinite(a.reshape(n, -1))).any(1)
    bad = [int(i) for i in torch.nonzero(bad_rows).flatten()]
    if bad and not allow_nonfinite:
        raise RunError(
            f"{path}: {len(bad)} of {n} samples have NaN/inf attributions (first: sample index {int(idx[bad[0]])});"
            " recompute them with `xairobust explain`, or pass --allow-nonfinite to score the others and count these"
        )
    if len(bad) == n:
        raise RunError(f"{path}: every sample has NaN/inf attributions; nothing to score")
    zero, constant = degenerate_rows(a, skip=bad)
    if allow_constant:
        constant = []
    if (zero or constant) and not allow_degenerate:
        first = int(idx[(zero or constant)[0]])
        raise RunError(
            f"{path}: {len(zero) + len(constant)} of {n} samples have degenerate attributions ({len(zero)} all zero,"
            f" {len(constant)} constant; first: sample index {first}), which metrics cannot rank or normalise (they"
            " would score inf/NaN); recompute them with another explainer or settings, or pass --allow-degenerate"
            " to score them anyway (counted in the score JSON)"
        )
    return bad


def degenerate_rows(a: Any, skip: Collection[int] = ()) -> tuple[list[int], list[int]]:
    """(rows whose attribution is all zero, rows that are constant but not zero), ``skip`` left out.

    Either carries no ranking of features: normalising by max|a| divides by zero, rank metrics
    see ties only, and sensitivity ratios become inf.
    """
    import torch

    flat = a.reshape(a.shape[0], -1).double()
    skipped = set(skip)
    zero_rows = (flat == 0).all(1)
    const_rows = (flat.amax(1) == flat.amin(1)) & ~zero_rows
    zero = [int(i) for i in torch.nonzero(zero_rows).flatten() if int(i) not in skipped]
    constant = [int(i) for i in torch.nonzero(const_rows).flatten() if int(i) not in skipped]
    return zero, constant


def score_finite_rows(run_metrics, metrics, inp, quiet: bool, skip: list[int], **kwargs: Any):
    """``run_metrics(metrics, inp, quiet)`` on the rows not in ``skip``; skipped rows get NaN.

    Used by ``score --allow-nonfinite``: the metrics never see a NaN attribution, every sample
    keeps its row in the output (NaN = not scored), and the JSON report counts the skipped rows.
    """
    import dataclasses

    import numpy as np

    if not skip:
        return run_metrics(metrics, inp, quiet, **kwargs)
    keep = np.setdiff1d(np.arange(len(inp.x)), np.asarray(skip))
    sub = dataclasses.replace(inp, x=inp.x[keep], y=inp.y[keep], a=inp.a[keep], indices=inp.indices[keep])
    results, report = run_metrics(metrics, sub, quiet, **kwargs)
    full = {}
    for name, values in results.items():
        out = np.full(len(inp.x), np.nan, dtype=np.float64)
        out[keep] = values
        full[name] = out
    for entry in report.values():
        entry["nonfinite_attributions"] = {"count": len(skip), "indices": [int(inp.indices[i]) for i in skip]}
    return full, report


# --- output paths ------------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    """Create and remove a temporary file in ``folder`` (permissions alone miss read-only mounts)."""
    if not folder.is_dir():
        raise ConfigError(f"{option} {target}: {folder} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".xairobust-probe-", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{option} {target}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """``path`` is (or can become) a writable folder; refuses a file, a read-only place, ``-``."""
    target = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{option}: an empty path")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {target}: is a file, not a folder; choose another {option}")
    _probe_writable(target if target.is_dir() else _nearest_existing(target), option, target)


def check_output_file(path: str | Path, option: str = "--out") -> None:
    """``path`` can be written as a file: not a folder, and its (nearest existing) parent is writable."""
    target = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{option}: an empty path")
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{option} {target}: is a folder; give a file name, e.g. {target / 'out.json'}")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{option} {target}: the file is read-only")
    _probe_writable(_nearest_existing(target.parent), option, target)


# --- output folders that hold someone else's files ---------------------------------------------

# Written into a folder before the tool's files, so that a folder it wrote (even one whose run
# was killed half-way) is told apart from a user's folder that happens to hold a table.csv.
OWNER_MARKER = ".xairobust"
_TMP = re.compile(r"^\..+\.tmp$")  # atomic_path()'s temporary files, left by a killed process


def foreign_entries(folder: str | Path, known: Collection[str] = (), markers: Collection[str] = ()) -> list[str]:
    """Names in ``folder`` that xairobust did not write, sorted ([] when it is ours or absent).

    A folder is ours when it holds one of ``markers`` (e.g. report.json, :data:`OWNER_MARKER`);
    otherwise every entry must be one of ``known`` (the artefact names a run directory holds) or
    a temporary file of an interrupted atomic write.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir()]
    if any(m in names for m in (*markers, OWNER_MARKER)):
        return []
    return sorted(n for n in names if n not in known and not _TMP.match(n))


def check_not_foreign(folder: str | Path, option: str, force: bool, known: Collection[str] = (),
                      markers: Collection[str] = ()) -> None:
    """Refuse (one line) to write into a folder holding files the tool did not write, unless ``force``."""
    if force:
        return
    foreign = foreign_entries(folder, known, markers)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise ConfigError(
            f"{option} {folder}: the folder holds files xairobust did not write ({shown}); choose a new or empty"
            f" folder, or pass --force to write into it anyway"
        )


def mark_folder(folder: str | Path, what: str) -> None:
    """Write :data:`OWNER_MARKER` into ``folder`` (created), naming the command that owns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OWNER_MARKER
    if not marker.exists():
        marker.write_text(f"written by {what}\n")
