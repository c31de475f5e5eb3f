"""Run directories: safetensors weights + JSON metadata, atomic writes, loading without pickle.

A run directory holds ``model.safetensors``, ``run.json``, ``config.yaml``, ``history.csv`` and
every later artefact of that model (robustness.json, attributions/, scores/).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from xairobust.errors import RunError
from xairobust.layout import RunLayout

# The run-directory names, owned by RunLayout (kept here for the modules that import them).
WEIGHTS = RunLayout.WEIGHTS
RUN_JSON = RunLayout.RUN_JSON
CONFIG_YAML = RunLayout.CONFIG_YAML
HISTORY_CSV = RunLayout.HISTORY_CSV
FORMAT_VERSION = 1
RUN_ENTRIES = RunLayout.ENTRIES


def run_header(label: str, dataset: str, dataset_kwargs: dict, info: Any, model: str, model_kwargs: dict) -> dict[str, Any]:
    """The first keys of every run.json (train and import write the same ones, in this order)."""
    return {
        "format": FORMAT_VERSION,
        "label": label,
        "dataset": {"name": dataset, "kwargs": dataset_kwargs, "info": info.as_json()},
        "input_space": info.input_space,
        "model": {"name": model, "kwargs": model_kwargs},
    }


def slug(text: str) -> str:
    """A file-name-safe version of a label ('PGD eps=0.1' -> 'PGD_eps=0.1', '../../x' -> 'x').

    Used for every directory named after a user's label (zoo runs, ``train --label``), so that a
    label can never name a path outside the runs folder.
    """
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_.") or "run"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path`` (atomic).

    A killed process leaves either the old file or the new one, never half of one; the
    temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the mode a plain open() would (other users of a
    # shared results folder, e.g. Ray workers under another account, must read it).
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by None (JSON null), deliberately.

    JSON has no NaN or Infinity; Python's default writes them as bare words that other readers
    reject. A metric value that is not a number (e.g. a dropped sample's mean) is recorded as
    null; inputs that are non-finite are refused earlier (xairobust.config, xairobust.validate).
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """JSON written atomically; NaN/inf become null (:func:`json_safe`), never ``NaN``/``Infinity``."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # e.g. 100 000 nested '[': Python's parser gives up, not the file's fault alone
        raise RunError(f"{path}: not valid JSON here (nested too deeply to read)") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def save_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_bytes_atomic(path, st_save(contiguous, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file; a truncated or tampered file is a RunError (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"missing file: {path}")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise RunError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(path: str | Path, model: nn.Module) -> str:
    """Save the state dict as safetensors; returns its sha256 (recorded in run.json)."""
    save_tensors(path, dict(model.state_dict()))
    return file_sha256(path)


def nonfinite_tensor(state: dict[str, Tensor]) -> str | None:
    """'name' (k of n values NaN/inf) of the first floating tensor with non-finite values, else None."""
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"'{name}' ({bad} of {t.numel()} values are NaN/inf)"
    return None


def check_finite_weights(state: dict[str, Tensor], where: str) -> None:
    """Refuse weights with NaN/inf: every result computed from them (accuracy 0, NaN maps) would be wrong."""
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise RunError(f"{where}: tensor {bad}; the weights are damaged, nothing can be computed from them")


def load_state_into(model: nn.Module, path: str | Path) -> None:
    """Load weights into ``model``; shapes and names must match exactly, values must be finite."""
    state = load_tensors(path)
    check_finite_weights(state, str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "state dict mismatch"
        detail = str(exc).replace("\n", " ").replace("\t", "")
        raise RunError(f"{path}: weights do not fit the model ({first}: {detail[:300]})") from None


def require_run(path: str | Path) -> Path:
    """The run directory ``path`` with its run.json, or a RunError saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory not found: {path}")
    if not (path / RUN_JSON).is_file():
        raise RunError(f"{path} is not a run directory (no {RUN_JSON}); create one with `xairobust train`")
    return path


def read_run_meta(path: str | Path) -> dict[str, Any]:
    return read_json(require_run(path) / RUN_JSON)


def check_run(path: str | Path) -> dict[str, Any]:
    """run.json of run directory ``path``, checked with ``validate.check_run_meta`` (for the CLI boundary)."""
    from xairobust.validate import check_run_meta

    meta = read_run_meta(path)
    check_run_meta(meta, Path(path) / RUN_JSON)
    return meta


def load_run(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Public API: (model in eval mode, run.json metadata) of run directory ``path``.

    The weights' sha256 is checked against run.json, so a swapped or tampered file is refused.
    """
    from xairobust.models.base import create_model
    from xairobust.validate import check_run_meta

    path = require_run(path)
    meta = read_run_meta(path)
    check_run_meta(meta, path / RUN_JSON)  # the keys and types used below and by every stage
    weights = path / WEIGHTS
    if not weights.is_file():
        raise RunError(f"{path}: no {WEIGHTS} (the run did not finish training)")
    expected = meta.get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise RunError(f"{weights}: checksum does not match run.json (file changed or corrupted)")
    try:
        model_meta = meta["model"]
        model = create_model(model_meta["name"], **model_meta["kwargs"])
    except KeyError as exc:
        raise RunError(f"{path / RUN_JSON}: missing field {exc}") from None
    load_state_into(model, weights)
    model.to(device).eval()
    return model, meta


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories among ``paths`` and below them (for ``report runs/*`` and ``report runs``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / RUN_JSON).is_file():
            found.append(p)
        elif p.is_dir():
            # Hidden folders (.replaced/ of runs moved aside by `train --force`, .batch/, staging
            # folders) never hold runs to report.
            found.extend(sorted(q.parent for q in p.rglob(RUN_JSON)
                                if not any(part.startswith(".") for part in q.relative_to(p).parts)))
    unique = list(dict.fromkeys(found))
    return unique


def tensor_bytes(t: Tensor) -> bytes:
    """Raw bytes of a tensor, for exact comparisons in tests."""
    buf = io.BytesIO()
    buf.write(t.detach().cpu().contiguous().numpy().tobytes())
    return buf.getvalue()
