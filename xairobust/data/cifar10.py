"""CIFAR-10 from the official ``cifar-10-batches-py/`` folder (python pickles).

The pickles are decoded once per process into uint8 tensors (50,000 x 3 x 32 x 32 = 150 MB)
and kept in memory; batches are scaled to [0, 1] on access by ``DataSplit``. A local folder is
read without md5 checks (copies re-encoded from JPEG, like ``../shared/data``, have other md5s).
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
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


def missing_message(folder: Path) -> str:
    return (
        f"CIFAR-10 not found: {folder} does not exist. Run `xairobust data download cifar10"
        f" --data-dir {folder.parent}`, or download {URL} and extract it into {folder.parent}"
        f" (or point --data-dir / $XAIROBUST_DATA at the folder that holds {FOLDER}/)"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10: {path} is missing; the folder {path.parent} is incomplete (re-extract {URL})")
    try:
        with open(path, "rb") as fh:
            # The official pickles hold numpy arrays and byte strings from Python 2: latin1
            # maps every byte to one character, so the arrays come back unchanged.
            batch = pickle.load(fh, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"CIFAR-10: {path} is not a CIFAR-10 batch ({type(exc).__name__}: {exc}); re-extract {URL}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"CIFAR-10: {path} has data of shape {data.shape} and {len(labels)} labels; expected (N, 3072)")
    return data, labels


@lru_cache(maxsize=4)
def _decode(folder: str, split: str, stamp: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels; cached per folder, split and file mtimes."""
    parts = [_read_batch(Path(folder) / name) for name in FILES[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise DataError(f"CIFAR-10: labels in {folder} outside 0..9; re-extract {URL}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels)


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

    def load(self, split: str, root: Path, augment: bool | str = True, padding: int = 4, **kwargs: Any) -> DataSplit:
        if kwargs:
            raise ConfigError(f"dataset 'cifar10': unknown option(s) {', '.join(kwargs)} (known: augment, padding)")
        if split not in FILES:
            raise ConfigError(f"dataset 'cifar10' has no split '{split}' (splits: train, test)")
        folder = self.folder(root)
        if not folder.is_dir():
            raise DataError(missing_message(folder))
        stamp = tuple((folder / n).stat().st_mtime if (folder / n).exists() else -1.0 for n in FILES[split])
        x, y = _decode(str(folder.resolve()), split, stamp)
        aug = cifar_augment(int(padding)) if split == "train" and flag(augment, "dataset 'cifar10': augment") else None
        return DataSplit(x, y, self.info(), aug)

    def check(self, root: Path) -> CheckResult:
        result = super().check(root)
        result.path = str(self.folder(root))
        return result

    def download(self, root: Path) -> Path:
        from xairobust.data._download import download_and_extract

        folder = self.folder(root)
        if not folder.is_dir():
            download_and_extract(URL, Path(root), MD5)
        return folder
