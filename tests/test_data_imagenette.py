"""ImageNette loader on a generated folder in the fastai layout, and on ../shared/data."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data
from PIL import Image

import xairobust.data.imagenette as inet
from xairobust.data.base import get_dataset
from xairobust.errors import ConfigError, DataError

WNIDS = inet.CLASS_WNIDS[:3]  # the fixture uses three of the ten classes


def write_png(img: torch.Tensor, path: str) -> None:
    """PNG bytes under a .JPEG name (lossless, so tests can compare pixels; PIL sniffs the format)."""
    arr = img.permute(1, 2, 0).numpy()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path, format="PNG")


def make_imagenette(root: Path, per_class: int = 2) -> Path:
    """imagenette2-160/{train,val}/<wnid>/*.JPEG (PNG bytes: the decoder sniffs the format)
    with noisy_imagenette.csv, one greyscale and one non-square image."""
    folder = root / "imagenette2-160"
    gen = torch.Generator().manual_seed(0)
    rows = []
    for split in ("train", "val"):
        for k, wnid in enumerate(WNIDS):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                shape = (1, 24, 24) if (k, i) == (0, 0) else (3, 24, 36) if (k, i) == (1, 0) else (3, 24, 24)
                img = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
                rel = f"{split}/{wnid}/{wnid}_{i}.JPEG"
                write_png(img, str(folder / rel))
                noisy = WNIDS[(k + 1) % len(WNIDS)] if i == 0 else wnid  # column 50 relabels image 0
                rows.append([rel, wnid, wnid, wnid, wnid, noisy, str(split == "val")])
    with open(folder / "noisy_imagenette.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", *inet.LABEL_COLUMNS, "is_valid"])
        w.writerows(rows)
    return folder


def test_fixture_layout_labels_and_sizes(tmp_path):
    make_imagenette(tmp_path)
    test = get_dataset("imagenette", "test", tmp_path, image_size=16, cache_dir=str(tmp_path / "c"))
    assert test.x.shape == (6, 3, 16, 16) and test.x.dtype == torch.uint8
    index = {w: i for i, w in enumerate(inet.CLASS_WNIDS)}
    assert test.y.tolist() == [index[w] for w in WNIDS for _ in range(2)]
    # The greyscale image comes back as three equal channels.
    grey = test.x[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert test.augment is None and test.info.input_shape == (3, 16, 16)
    noisy = get_dataset("imagenette", "test", tmp_path, image_size=16, label_column="noisy_labels_50",
                        cache_dir=str(tmp_path / "c"))
    assert noisy.y.tolist() == [index[WNIDS[1]], index[WNIDS[0]], index[WNIDS[2]], index[WNIDS[1]],
                                index[WNIDS[0]], index[WNIDS[2]]]
    train = get_dataset("imagenette", "train", tmp_path, image_size=16, cache_dir=str(tmp_path / "c"))
    out = train.augment(train.inputs(), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 16, 16) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    folder = make_imagenette(tmp_path)
    cache = tmp_path / "cache"
    first = get_dataset("imagenette", "test", tmp_path, image_size=16, cache_dir=str(cache))
    assert len(list(cache.glob("*.safetensors"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(inet, "decode_images", refuse)
    again = get_dataset("imagenette", "test", tmp_path, image_size=16, cache_dir=str(cache))
    assert torch.equal(first.x, again.x)
    # A changed folder invalidates the cache: the loader decodes again.
    extra = folder / "val" / WNIDS[0] / "extra.JPEG"
    write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(extra))
    with open(folder / "noisy_imagenette.csv", "a", newline="") as fh:
        csv.writer(fh).writerow([f"val/{WNIDS[0]}/extra.JPEG", *[WNIDS[0]] * 5, "True"])
    with pytest.raises(AssertionError, match="decoded again"):
        get_dataset("imagenette", "test", tmp_path, image_size=16, cache_dir=str(cache))


def test_default_cache_lives_under_the_data_dir(tmp_path):
    make_imagenette(tmp_path)
    get_dataset("imagenette", "test", tmp_path, image_size=16)
    assert (tmp_path / "cache" / "imagenette2-160_test_16px.safetensors").is_file()


def test_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("imagenette", "test", tmp_path)
    assert str(tmp_path / "imagenette2-160") in str(err.value) and "imagenette2-160.tgz" in str(err.value)
    folder = make_imagenette(tmp_path)
    with pytest.raises(ConfigError, match="label_column"):
        get_dataset("imagenette", "test", tmp_path, label_column="labels", cache_dir="none")
    with pytest.raises(ConfigError, match="image_szie"):
        get_dataset("imagenette", "test", tmp_path, image_szie=16)
    (folder / "noisy_imagenette.csv").write_text("path,noisy_labels_0\n")
    with pytest.raises(DataError, match="not in"):
        get_dataset("imagenette", "test", tmp_path, cache_dir="none")


@pytest.mark.data
def test_real_imagenette_val_counts_match_the_csv(tmp_path):
    root = shared_data("imagenette2-160").parent
    with open(root / "imagenette2-160" / "noisy_imagenette.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_valid"] == "True"]
    want = Counter(r["noisy_labels_0"] for r in rows)
    test = get_dataset("imagenette", "test", root, image_size=32, cache_dir=str(tmp_path))
    assert len(test) == len(rows) == 3925
    got = Counter(inet.CLASS_WNIDS[i] for i in test.y.tolist())
    assert got == want
    assert test.x.shape == (3925, 3, 32, 32)
    assert inet.Imagenette().check(root).detail == "train: 9469, test: 3925"


def test_pixels_survive_decode_and_centre_crop_exactly(tmp_path):
    folder = make_imagenette(tmp_path)
    test = get_dataset("imagenette", "test", tmp_path, image_size=24, cache_dir="none")
    wide = Image.open(folder / "val" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG")
    original = torch.from_numpy(np.asarray(wide.convert("RGB"))).permute(2, 0, 1)
    assert original.shape == (3, 24, 36)
    assert torch.equal(test.x[2], original[:, :, 6:30])  # short side already 24: pure centre crop
