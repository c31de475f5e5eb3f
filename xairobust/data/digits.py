"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (ships with sklearn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from xairobust.data.base import CheckResult, DatasetInfo, DatasetSource, DataSplit
from xairobust.errors import ConfigError
from xairobust.registry import DATASETS

# The split is fixed by this seed, independent of the training seed, so that every run of a
# zoo is evaluated on the same test images.
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@DATASETS.register("digits", task="classification", download=False)
class Digits(DatasetSource):
    """1797 grey 8x8 images, 10 classes; pixel values 0..16 rescaled to [0, 1]."""

    name = "digits"
    splits = ("train", "test")

    def info(self, **kwargs: Any) -> DatasetInfo:
        return DatasetInfo(
            name="digits",
            task="classification",
            num_outputs=10,
            input_shape=(1, 8, 8),
            # Mean/std of the training pixels in [0, 1] (computed once; see tests).
            mean=(0.3052,),
            std=(0.3760,),
            class_names=tuple(str(i) for i in range(10)),
        )

    def load(self, split: str, root: Path, **kwargs: Any) -> DataSplit:
        if kwargs:
            raise ConfigError(f"dataset 'digits' takes no options, got {', '.join(map(str, kwargs))}")
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
        index = np.arange(len(images))
        train_idx, test_idx = train_test_split(
            index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
        )
        chosen = np.sort(train_idx if split == "train" else test_idx)
        return DataSplit(
            torch.from_numpy(images[chosen]),
            torch.from_numpy(bunch.target[chosen].astype(np.int64)),
            self.info(),
        )

    def check(self, root: Path) -> CheckResult:
        result = super().check(root)
        result.path = "(embedded in scikit-learn)"
        return result
