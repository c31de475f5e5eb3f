"""ImageNette (fastai's 10-class ImageNet subset) from ``imagenette2*/{train,val}/<wnid>/*.JPEG``.

Images are decoded once (greyscale converted to RGB), resized so the short side is
``image_size`` and centre-cropped to a square, and cached as one uint8 safetensors file per
split and size under ``<data dir>/cache/`` (written atomically; reused while the image files
are unchanged). Training batches get random-resized-crop + flip on tensors; evaluation uses
the cached resize + centre crop. Labels come from ``noisy_imagenette.csv`` (column selectable,
default the clean labels); the dataset's ``val/`` folder is the ``test`` split, as in the papers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from xairobust.data._options import flag
from xairobust.data.base import CheckResult, DatasetInfo, DatasetSource, DataSplit
from xairobust.data.transforms import imagenette_augment, resize_center_crop
from xairobust.errors import ConfigError, DataError
from xairobust.progress import track
from xairobust.registry import DATASETS

URLS = {
    "imagenette2-160": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
    "imagenette2-320": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
    "imagenette2": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
}
# Preference order when several variants are present: the smallest that holds the size asked.
VARIANTS = ("imagenette2-160", "imagenette2-320", "imagenette2")
CSV_NAME = "noisy_imagenette.csv"
LABEL_COLUMNS = ("noisy_labels_0", "noisy_labels_1", "noisy_labels_5", "noisy_labels_25", "noisy_labels_50")
WNIDS = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
CLASS_WNIDS = tuple(sorted(WNIDS))
FOLDERS = {"train": "train", "test": "val"}
# ImageNet statistics: the papers fine-tune ImageNet-pretrained nets, whose first layer expects them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CACHE_FORMAT = "1"


def find_folder(root: Path, variant: str | None = None) -> Path:
    """The ImageNette folder under ``root`` (``variant`` if given, else the first present)."""
    root = Path(root)
    names = (variant,) if variant else VARIANTS
    for name in names:
        if (root / name).is_dir():
            return root / name
    looked = ", ".join(str(root / n) for n in names)
    name = variant or VARIANTS[0]
    url = URLS.get(name, URLS[VARIANTS[0]])
    raise DataError(
        f"ImageNette not found (looked at {looked}). Run `xairobust data download imagenette"
        f" --data-dir {root}`, or download {url} and extract it into {root}"
    )


def list_images(folder: Path, split: str) -> list[str]:
    """Sorted paths ``<train|val>/<wnid>/<file>.JPEG`` relative to ``folder``."""
    base = folder / FOLDERS[split]
    if not base.is_dir():
        raise DataError(f"ImageNette: {base} is missing; the folder {folder} is incomplete (re-extract it)")
    out = []
    for wnid in sorted(os.listdir(base)):
        sub = base / wnid
        if not sub.is_dir():
            continue
        if wnid not in WNIDS:
            raise DataError(f"ImageNette: unexpected class folder {sub} (expected the 10 ImageNette wnids)")
        out.extend(f"{FOLDERS[split]}/{wnid}/{f}" for f in sorted(os.listdir(sub)) if f.lower().endswith((".jpeg", ".jpg")))
    if not out:
        raise DataError(f"ImageNette: no JPEG images under {base}/<wnid>/")
    return out


def read_labels(folder: Path, paths: list[str], column: str) -> Tensor:
    """Class indices of ``paths`` from ``noisy_imagenette.csv`` column ``column``.

    Without the CSV the clean labels are the folder names; a noisy column then cannot be read.
    """
    csv_path = folder / CSV_NAME
    if not csv_path.is_file():
        if column != LABEL_COLUMNS[0]:
            raise DataError(f"ImageNette: label column '{column}' needs {csv_path}, which is missing")
        wnids = [p.split("/")[1] for p in paths]
    else:
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "path" not in reader.fieldnames or column not in reader.fieldnames:
                raise DataError(f"ImageNette: {csv_path} has no 'path' or '{column}' column (columns: {reader.fieldnames})")
            table = {row["path"]: row[column] for row in reader}
        missing = [p for p in paths if p not in table]
        if missing:
            raise DataError(f"ImageNette: {len(missing)} images are not in {csv_path} (first: {missing[0]})")
        wnids = [table[p] for p in paths]
    index = {w: i for i, w in enumerate(CLASS_WNIDS)}
    bad = sorted({w for w in wnids if w not in index})
    if bad:
        raise DataError(f"ImageNette: unknown class id(s) {bad[:3]} in column '{column}'")
    return torch.tensor([index[w] for w in wnids], dtype=torch.int64)


def _fingerprint(folder: Path, paths: list[str]) -> str:
    """Hash of every image's relative path and size: a changed folder invalidates the cache."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p}:{(folder / p).stat().st_size}\n".encode())
    return h.hexdigest()


def decode_images(folder: Path, paths: list[str], size: int, quiet: bool) -> Tensor:
    """(N, 3, size, size) uint8: RGB decode, short side resized to ``size``, centre crop."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, p in enumerate(track(paths, len(paths), f"decode ImageNette {size}px", quiet)):
        try:
            with Image.open(folder / p) as im:
                rgb = np.array(im.convert("RGB"))  # greyscale (and CMYK) images -> RGB
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"ImageNette: cannot decode {folder / p} ({exc})") from None
        out[i] = resize_center_crop(torch.from_numpy(rgb).permute(2, 0, 1), size)
    return out


def cached_images(folder: Path, split: str, paths: list[str], size: int, cache_dir: Path | None) -> Tensor:
    """Decoded images from the cache when it matches the folder, else decode (and cache)."""
    quiet = not sys.stderr.isatty()
    if cache_dir is None:
        return decode_images(folder, paths, size, quiet)
    key = _fingerprint(folder, paths)
    cache = Path(cache_dir) / f"{folder.name}_{split}_{size}px.safetensors"
    if cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("fingerprint") == key and meta.get("format") == CACHE_FORMAT:
                    return fh.get_tensor("images")
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    images = decode_images(folder, paths, size, quiet)
    try:
        from xairobust.runs import save_tensors

        save_tensors(cache, {"images": images}, {"fingerprint": key, "format": CACHE_FORMAT, "paths": json.dumps(paths)})
    except OSError as exc:  # read-only data dir: work without a cache
        print(f"warning: could not write the ImageNette cache {cache} ({exc})", file=sys.stderr)
    return images


@DATASETS.register("imagenette", task="classification", download=True, url=URLS["imagenette2-160"])
class Imagenette(DatasetSource):
    """ImageNette: 9,469 train / 3,925 test (its val/ folder) RGB images, 10 classes, in [0, 1].

    dataset_kwargs: ``image_size`` (default 160), ``label_column`` (a column of
    noisy_imagenette.csv, default ``noisy_labels_0`` = clean labels), ``variant`` (folder name,
    default the first of imagenette2-160, imagenette2-320, imagenette2 present), ``augment``
    (default true), ``crop_scale_min`` (random-resized-crop area fraction, default 0.35),
    ``cache_dir`` (default ``<data dir>/cache``; ``none`` disables the cache).
    """

    name = "imagenette"
    splits = ("train", "test")

    def info(self, image_size: int = 160, **kwargs: Any) -> DatasetInfo:
        return DatasetInfo(
            name="imagenette",
            task="classification",
            num_outputs=10,
            input_shape=(3, int(image_size), int(image_size)),
            mean=MEAN,
            std=STD,
            class_names=tuple(WNIDS[w] for w in CLASS_WNIDS),
        )

    def load(
        self,
        split: str,
        root: Path,
        image_size: int = 160,
        label_column: str = LABEL_COLUMNS[0],
        variant: str | None = None,
        augment: bool | str = True,
        crop_scale_min: float = 0.35,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> DataSplit:
        if kwargs:
            raise ConfigError(
                f"dataset 'imagenette': unknown option(s) {', '.join(kwargs)} (known: image_size, label_column,"
                " variant, augment, crop_scale_min, cache_dir)"
            )
        if split not in FOLDERS:
            raise ConfigError(f"dataset 'imagenette' has no split '{split}' (splits: train, test)")
        size = int(image_size)
        if not 8 <= size <= 1024:
            raise ConfigError(f"dataset 'imagenette': image_size must be in 8..1024, got {image_size}")
        if not 0 < float(crop_scale_min) <= 1:
            raise ConfigError(f"dataset 'imagenette': crop_scale_min must be in (0, 1], got {crop_scale_min}")
        if label_column not in LABEL_COLUMNS:
            raise ConfigError(f"dataset 'imagenette': label_column must be one of {', '.join(LABEL_COLUMNS)}")
        folder = find_folder(root, variant)
        paths = list_images(folder, split)
        labels = read_labels(folder, paths, label_column)
        if cache_dir is None:
            cache: Path | None = Path(root) / "cache"
        else:
            cache = None if str(cache_dir).lower() == "none" else Path(cache_dir)
        images = cached_images(folder, split, paths, size, cache)
        aug = None
        if split == "train" and flag(augment, "dataset 'imagenette': augment"):
            aug = imagenette_augment(size, (float(crop_scale_min), 1.0))
        return DataSplit(images, labels, self.info(size), aug)

    def check(self, root: Path) -> CheckResult:
        """Found/valid without decoding: folders, class folders, CSV rows for every image."""
        try:
            folder = find_folder(root)
        except DataError as exc:
            return CheckResult(self.name, str(root), False, str(exc))
        try:
            sizes = {}
            for split in self.splits:
                paths = list_images(folder, split)
                read_labels(folder, paths, LABEL_COLUMNS[0])
                sizes[split] = len(paths)
        except DataError as exc:
            return CheckResult(self.name, str(folder), False, str(exc))
        return CheckResult(self.name, str(folder), True, ", ".join(f"{k}: {v}" for k, v in sizes.items()))

    def download(self, root: Path, variant: str = VARIANTS[0]) -> Path:
        from xairobust.data._download import download_and_extract

        if variant not in URLS:
            raise ConfigError(f"imagenette: unknown variant '{variant}' (known: {', '.join(URLS)})")
        if not (Path(root) / variant).is_dir():
            download_and_extract(URLS[variant], Path(root))
        return Path(root) / variant
