"""Shared fixtures. Tests are sized for 2 CPU cores: tiny models, a few hundred samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread per test process keeps timings stable on a 2-core machine and results bit-exact.
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("XAIROBUST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_data(sub: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (set XAIROBUST_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits_cnn trained for 2 epochs with the standard method (shared, read-only)."""
    from xairobust.stages.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "digits_standard"
    return train(TrainConfig(epochs=2, seed=0), out, quiet=True)
