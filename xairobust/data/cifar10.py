"""CIFAR-10 from the official ``cifar-10-batches-py/`` folder (python pickles).

The pickles are read with a restricted unpickler (only dicts, lists, strings, numbers and numeric
numpy arrays; anything else is refused, so a crafted batch file runs nothing) and converted once
into a safetensors cache ``<data dir>/cache/cifar-10-batches-py_<split>.safetensors`` (as
ImageNette is; dataset option ``cache_dir``, ``none`` disables it). The uint8 tensors
(50,000 x 3 x 32 x 32 = 150 MB) are kept in memory per process; batches are scaled to [0, 1]
on access by ``DataSplit``. A local folder is
read without md5 checks (copies re-encoded from JPEG, like ``../shared/data``, have other md5s).
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from xairobust.data._options import flag
from xairobust.data.base import CheckResult, DatasetInfo, DatasetSource, DataSplit
from xairobust.data.transforms import cifar_augment
from xairobust.errors import ConfigError, DataError
from xairobust.registry import DATASETS

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official archive (checked on download only)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# Per-channel mean/std of the official training pixels in [0, 1] (the values used throughout
# the CIFAR literature; tests check them against the loaded data).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CACHE_FORMAT = "1"


def missing_message(folder: Path) -> str:
    return (
        f"CIFAR-10 not found: {folder} does not exist. Run `xairobust data download cifar10"
        f" --data-dir {folder.parent}`, or download {URL} and extract it into {folder.parent}"
        f" (or point --data-dir / $XAIROBUST_DATA at the folder that holds {FOLDER}/)"
    )


# --- reading the official pickles without running code from them -----------------------------
#
# The official batches are Python-2 pickles of {"batch_label": str, "labels": [int], "data":
# uint8 ndarray, "filenames": [str]}. Their only globals are numpy's array reconstruction
# (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype; numpy >= 2 spells the module
# numpy._core) and, in files re-written by Python 3, _codecs.encode for byte strings. Every other
# global -- os.system, builtins.eval, any class with a __reduce__ -- is refused before it is
# looked up, so a crafted batch file cannot run anything (issue 12).

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_DTYPE_KINDS = "biufSU"  # bool, ints, floats, byte and unicode strings: never Python objects


class UnsafeBatchError(DataError):
    """A CIFAR-10 batch file asks the unpickler for something it is never allowed to build."""


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; becomes an UnsafeBatchError naming the file."""


def _reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise _Refused(f"numpy _reconstruct of {cls!r}, not of numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _dtype(code: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(code, str):
        raise _Refused(f"a numpy dtype from a {type(code).__name__}, not from a type string")
    dtype = np.dtype(code, align=bool(align), copy=bool(copy))  # parsing a type string runs nothing
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject:
        raise _Refused(f"numpy dtype {code!r}, which is not a plain numeric dtype")
    return dtype


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode with other arguments than (str, 'latin1')")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_MODULES},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, tuples, strings, bytes, numbers and numeric arrays."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def restricted_load(path: Path) -> Any:
    """Unpickle a CIFAR-10 batch with :class:`_BatchUnpickler`; a forbidden global is an UnsafeBatchError."""
    try:
        with open(path, "rb") as fh:
            # The official pickles hold numpy arrays and byte strings from Python 2: latin1
            # maps every byte to one character, so the arrays come back unchanged.
            return _BatchUnpickler(fh, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafeBatchError(
            f"CIFAR-10: {path} is not a plain CIFAR-10 batch: it asks to build {exc} (refused; nothing"
            f" was run). Delete it and re-extract {URL}"
        ) from None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10: {path} is missing; the folder {path.parent} is incomplete (re-extract {URL})")
    try:
        batch = restricted_load(path)
        if not isinstance(batch, dict):
            raise TypeError(f"a {type(batch).__name__}, not a dict")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except UnsafeBatchError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError,
            MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        raise DataError(f"CIFAR-10: {path} is not a CIFAR-10 batch ({type(exc).__name__}: {exc}); re-extract {URL}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.ndim != 1 or len(data) != len(labels):
        raise DataError(f"CIFAR-10: {path} has data of shape {data.shape} and {len(labels)} labels; expected (N, 3072)")
    return data, labels


def _fingerprint(folder: Path, split: str) -> str:
    """Name, size and mtime of every batch file of ``split``: a changed file invalidates the cache."""
    h = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
    for name in FILES[split]:
        st = (folder / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_path(root: Path, split: str) -> Path:
    return Path(root) / "cache" / f"{FOLDER}_{split}.safetensors"


def _read_cache(cache: Path, key: str) -> tuple[Tensor, Tensor] | None:
    if not cache.is_file():
        return None
    try:
        with safe_open(str(cache), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("fingerprint") != key or meta.get("format") != CACHE_FORMAT:
                return None
            x, y = fh.get_tensor("images"), fh.get_tensor("labels")
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
        return None
    if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32) or y.shape != (len(x),):
        return None
    return x, y.to(torch.int64)


@lru_cache(maxsize=4)
def _decode(folder: str, split: str, key: str, cache: str | None) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels; cached per folder, split and file stamps.

    The pickles are read once (restricted unpickler) and converted to a safetensors file under
    ``<data dir>/cache/``; later processes read only that file while the batches are unchanged.
    """
    if cache is not None:
        hit = _read_cache(Path(cache), key)
        if hit is not None:
            return hit
    parts = [_read_batch(Path(folder) / name) for name in FILES[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise DataError(f"CIFAR-10: labels in {folder} outside 0..9; re-extract {URL}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    y = torch.from_numpy(labels)
    if cache is not None:
        try:
            from xairobust.runs import save_tensors

            save_tensors(Path(cache), {"images": x, "labels": y}, {"fingerprint": key, "format": CACHE_FORMAT})
        except OSError as exc:  # read-only data dir: work without a cache
            print(f"warning: could not write the CIFAR-10 cache {cache} ({exc.strerror or exc})", file=sys.stderr)
    return x, y


@DATASETS.register("cifar10", task="classification", download=True, url=URL)
class Cifar10(DatasetSource):
    """CIFAR-10: 50,000 train / 10,000 test RGB images 32x32, 10 classes, pixels in [0, 1].

    dataset_kwargs: ``augment`` (default true: random crop with 4-pixel zero padding and
    horizontal flip on training batches), ``padding`` (crop padding, default 4).
    """

    name = "cifar10"
    splits = ("train", "test")
    url = URL

    def info(self, **kwargs: Any) -> DatasetInfo:
        return DatasetInfo(
            name="cifar10",
            task="classification",
            num_outputs=10,
            input_shape=(3, 32, 32),
            mean=MEAN,
            std=STD,
            class_names=CLASSES,
        )

    def folder(self, root: Path) -> Path:
        return Path(root) / FOLDER

    def load(self, split: str, root: Path, augment: bool | str = True, padding: int = 4, cache_dir: str | None = None,
             **kwargs: Any) -> DataSplit:
        if kwargs:
            raise ConfigError(f"dataset 'cifar10': unknown option(s) {', '.join(kwargs)} (known: augment, padding, cache_dir)")
        if split not in FILES:
            raise ConfigError(f"dataset 'cifar10' has no split '{split}' (splits: train, test)")
        folder = self.folder(root)
        if not folder.is_dir():
            raise DataError(missing_message(folder))
        missing = [n for n in FILES[split] if not (folder / n).is_file()]
        if missing:
            raise DataError(f"CIFAR-10: {folder / missing[0]} is missing; the folder {folder} is incomplete (re-extract {URL})")
        if cache_dir is None:
            cache: Path | None = _cache_path(root, split)
        elif str(cache_dir).lower() == "none":
            cache = None
        else:
            cache = Path(cache_dir) / _cache_path(root, split).name
        if isinstance(padding, bool) or not isinstance(padding, (int, str)) or not str(padding).isdigit() or int(padding) > 16:
            raise ConfigError(f"dataset 'cifar10': padding must be an integer in 0..16, got {padding!r}")
        x, y = _decode(str(folder.resolve()), split, _fingerprint(folder, split), None if cache is None else str(cache))
        aug = cifar_augment(int(padding)) if split == "train" and flag(augment, "dataset 'cifar10': augment") else None
        return DataSplit(x, y, self.info(), aug)

    def check(self, root: Path) -> CheckResult:
        """Found/valid (reads the batches with the restricted unpickler; a crafted one is an error)."""
        try:
            # cache_dir none: a diagnosis writes nothing into the folder it inspects
            sizes = {s: len(self.load(s, root, cache_dir="none")) for s in self.splits}
        except UnsafeBatchError:
            raise  # not a diagnosis: a file that tried to run code is an error of its own
        except DataError as exc:
            return CheckResult(self.name, str(self.folder(root)), False, str(exc))
        return CheckResult(self.name, str(self.folder(root)), True, ", ".join(f"{k}: {v}" for k, v in sizes.items()))

    def download(self, root: Path) -> Path:
        from xairobust.data._download import download_and_extract

        folder = self.folder(root)
        if not folder.is_dir():
            download_and_extract(URL, Path(root), MD5)
        return folder
