"""Batch augmentations on tensors, on whatever device the batch lives on.

Every random draw comes from the generator the training loop passes to ``DataSplit.augment``
(a CPU generator), and is made on the CPU, then moved to the batch's device: the same seed gives
the same augmented batch on CPU and GPU, and decoding never happens per batch (datasets keep
decoded uint8 tensors in memory).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from xairobust.data.base import Augment


def _uniform(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator)


def random_crop_flip(x: Tensor, generator: torch.Generator | None, padding: int = 4, flip: bool = True) -> Tensor:
    """Zero-pad by ``padding``, crop back to the input size at a random offset, flip half.

    The standard CIFAR augmentation (crop 32 from the 40x40 zero-padded image + horizontal flip),
    vectorised with one gather per batch instead of a Python loop over images.
    """
    n, _, h, w = x.shape
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = _uniform(n, generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (oy[:, None] + torch.arange(h)[None, :]).to(dev)  # (N, H)
    cols_base = torch.arange(w)[None, :].expand(n, w)
    # A flipped crop reads its columns right to left: flip folded into the gather.
    cols_base = torch.where(flips[:, None], cols_base.flip(1), cols_base)
    cols = (ox[:, None] + cols_base).to(dev)  # (N, W)
    # Two gathers (rows, then columns) with broadcast index views: no per-element index tensors.
    c, wp = x.shape[1], padded.shape[3]
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, wp))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _resized_crop_boxes(
    n: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image crop (height, width, top, left) in pixels, as RandomResizedCrop draws them.

    torchvision tries up to 10 draws per image and falls back to a centre crop; we draw 10
    candidates for every image at once and keep the first that fits (same distribution).
    """
    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator))
    log_r = torch.log(torch.tensor(ratio))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(n, tries, generator=generator))
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    ok = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    ch = ch.gather(1, pick)[:, 0]
    cw = cw.gather(1, pick)[:, 0]
    fallback = first < 0  # no candidate fitted: the whole image (centre crop at ratio 1)
    side = float(min(h, w))
    ch = torch.where(fallback, torch.full_like(ch, side), ch)
    cw = torch.where(fallback, torch.full_like(cw, side), cw)
    top = torch.floor(torch.rand(n, generator=generator) * (h - ch + 1))
    left = torch.floor(torch.rand(n, generator=generator) * (w - cw + 1))
    top = torch.where(fallback, (h - ch) // 2, top)
    left = torch.where(fallback, (w - cw) // 2, left)
    return ch, cw, top, left


def random_resized_crop_flip(
    x: Tensor,
    generator: torch.Generator | None,
    size: int | None = None,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> Tensor:
    """Crop a random box of ``scale`` x area and ``ratio`` aspect, resize it to ``size``, flip half.

    One bilinear ``grid_sample`` for the whole batch (flip folded into the sampling grid).
    The default scale (0.35, 1) is the one fastai uses for ImageNette: ImageNette images are
    already tightly framed, ImageNet's (0.08, 1) crops away the object too often.
    """
    n, _, h, w = x.shape
    size = size or h
    ch, cw, top, left = _resized_crop_boxes(n, h, w, scale, ratio, generator)
    flips = _uniform(n, generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    # Affine map from output coords in [-1, 1] to input coords in [-1, 1] (align_corners=False).
    sx = cw / w
    sy = ch / h
    tx = (2 * left + cw) / w - 1
    ty = (2 * top + ch) / h - 1
    sx = torch.where(flips, -sx, sx)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """Resize the short side to ``size`` (antialiased bilinear) and crop the centre square.

    Works on one image (C, H, W) or a batch; uint8 in -> uint8 out (rounded).
    """
    single = x.dim() == 3
    if single:
        x = x[None]
    h, w = x.shape[-2:]
    if min(h, w) != size:
        k = size / min(h, w)
        nh, nw = max(size, math.floor(h * k + 0.5)), max(size, math.floor(w * k + 0.5))
        dtype = x.dtype
        x = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        if dtype == torch.uint8:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top : top + size, left : left + size]
    return x[0] if single else x


def cifar_augment(padding: int = 4) -> Augment:
    """The CIFAR training augmentation as a ``DataSplit.augment`` callable."""
    return partial(random_crop_flip, padding=padding)


def imagenette_augment(size: int, scale: tuple[float, float] = (0.35, 1.0)) -> Augment:
    """The ImageNette training augmentation as a ``DataSplit.augment`` callable."""
    return partial(random_resized_crop_flip, size=size, scale=scale)
