"""Helpers shared by the Captum adapters: chunking, per-sample RNG scopes, baselines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

# Samples per Captum call. Memory grows with chunk x n_steps (IG) or n_samples (SHAP), so the
# stage lowers it for big models; results do not depend on it (per-sample seeds).
DEFAULT_CHUNK = 32


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering range(n)."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global RNGs for one call, then restore them.

    Captum's GradientShap draws baselines and interpolation points from ``np.random`` and input
    noise from torch's RNG; it has no generator argument. Seeding both per sample makes the
    draws a function of (sample, seed) alone, and restoring them leaves the caller's streams alone.
    """
    np_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            np.random.set_state(np_state)


def sample_generator(seed: int) -> torch.Generator:
    """A CPU generator for one sample's draws (then moved to the device: identical on any device)."""
    return torch.Generator().manual_seed(int(seed))


def blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of each image (the 'blurred' IG baseline); kernel clipped to the image size."""
    from torchvision.transforms.functional import gaussian_blur

    h, w = x.shape[-2:]
    k = int(2 * np.ceil(3 * sigma) + 1)
    k = min(k, 2 * ((min(h, w) - 1) // 2) + 1)  # reflect padding needs kernel // 2 < size
    return gaussian_blur(x, [k, k], [sigma, sigma])


def uniform_like(x: Tensor, seeds: Tensor, low: float, high: float) -> Tensor:
    """One uniform-noise tensor per sample, drawn from that sample's seed."""
    out = [torch.empty(x.shape[1:]).uniform_(low, high, generator=sample_generator(int(s))) for s in seeds]
    return torch.stack(out).to(x.device, x.dtype)


@contextlib.contextmanager
def captum_quiet() -> Iterator[None]:
    """Silence Captum's 'Input Tensor 0 did not already require gradients' (it sets them itself)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        yield


def target_grad(model, points: Tensor, rows: Tensor, create_graph: bool = False) -> Tensor:
    """d model(points)[i, rows[i]] / d points, one backward of the summed target outputs.

    With ``create_graph`` the gradient keeps its graph back to ``points`` (and to whatever
    ``points`` was computed from), so a manipulation attack can differentiate an explanation
    with respect to the input. ``points`` that carry no graph become a fresh leaf.
    """
    if not create_graph or not points.requires_grad:
        points = points.detach().requires_grad_()
    with torch.enable_grad():
        out = model(points)
        (grad,) = torch.autograd.grad(out.gather(1, rows[:, None]).sum(), points, create_graph=create_graph)
    return grad
