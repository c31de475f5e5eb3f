"""CIFAR-10 loader on generated batches in the official layout, and on ../shared/data."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data

from xairobust.data.base import get_dataset
from xairobust.data.cifar10 import FOLDER, MEAN, STD, URL
from xairobust.errors import ConfigError, DataError


def write_fake_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Six pickles shaped like the official ones: dict with 'data' (N, 3072) uint8, 'labels' list."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        arrays[name] = data
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return arrays


def test_fixture_loads_with_official_pixel_layout(tmp_path):
    arrays = write_fake_cifar(tmp_path)
    train = get_dataset("cifar10", "train", tmp_path)
    test = get_dataset("cifar10", "test", tmp_path)
    assert train.x.shape == (100, 3, 32, 32) and train.x.dtype == torch.uint8
    assert test.x.shape == (20, 3, 32, 32)
    # A row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    row = arrays["data_batch_2"][3]
    img = train.x[20 + 3]
    for c, i, j in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert int(img[c, i, j]) == int(row[c * 1024 + i * 32 + j])
    x = train.inputs(torch.tensor([0, 1]))
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert train.augment is not None and test.augment is None
    assert get_dataset("cifar10", "train", tmp_path, augment=False).augment is None


def test_missing_folder_names_path_and_url(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", "train", tmp_path)
    assert str(tmp_path / FOLDER) in str(err.value) and URL in str(err.value)


def test_corrupt_batch_is_a_data_error(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / FOLDER / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        get_dataset("cifar10", "test", tmp_path)


def test_unknown_option_is_a_config_error(tmp_path):
    write_fake_cifar(tmp_path)
    with pytest.raises(ConfigError, match="augmnet"):
        get_dataset("cifar10", "train", tmp_path, augmnet=False)


@pytest.fixture(scope="module")
def real_cifar(tmp_path_factory) -> Path:
    script = shared_data("cifar10") / "build_batches.py"
    out = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.data
def test_real_cifar10_counts_and_statistics(real_cifar):
    train = get_dataset("cifar10", "train", real_cifar)
    test = get_dataset("cifar10", "test", real_cifar)
    assert len(train) == 50_000 and len(test) == 10_000
    assert torch.bincount(train.y).tolist() == [5000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    # Pixels here were re-encoded as JPEG (mean abs. error ~6/255): the official statistics
    # hold to within 0.005 for the mean (all images) and 0.01 for the std (first 5,000 images).
    mean = train.x.sum((0, 2, 3), dtype=torch.int64).double() / (50_000 * 32 * 32 * 255)
    assert torch.allclose(mean, torch.tensor(MEAN, dtype=torch.float64), atol=0.005)
    std = train.x[:5000].float().div_(255).std((0, 2, 3))
    assert torch.allclose(std, torch.tensor(STD), atol=0.01)
