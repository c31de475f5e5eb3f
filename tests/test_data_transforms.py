"""Tensor augmentations against naive per-image implementations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xairobust.data.transforms import random_crop_flip, random_resized_crop_flip, resize_center_crop


def naive_crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int) -> torch.Tensor:
    """Per-image loop drawing the same numbers in the same order as the vectorised version."""
    n, _, h, w = x.shape
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = []
    for i in range(n):
        p = F.pad(x[i], (padding,) * 4)
        crop = p[:, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def test_random_crop_flip_matches_a_per_image_loop():
    x = torch.rand(16, 3, 8, 10)
    got = random_crop_flip(x, torch.Generator().manual_seed(3), padding=3)
    want = naive_crop_flip(x, torch.Generator().manual_seed(3), padding=3)
    assert torch.equal(got, want)


def test_random_crop_flip_is_seeded_and_varies():
    x = torch.rand(32, 3, 32, 32)
    a = random_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_crop_flip(x, torch.Generator().manual_seed(0))
    c = random_crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resized_crop_of_the_whole_image_is_the_identity_or_its_mirror():
    x = torch.rand(6, 3, 12, 12)
    gen = torch.Generator().manual_seed(0)
    got = random_resized_crop_flip(x, gen, size=12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    for i in range(len(x)):
        same = torch.allclose(got[i], x[i], atol=1e-5)
        mirrored = torch.allclose(got[i], x[i].flip(-1), atol=1e-5)
        assert same != mirrored  # exactly one of the two (the images are not symmetric)


def test_resized_crop_at_native_size_equals_slicing_the_box():
    # scale 0.25 with ratio 1 on 16x16 is an 8x8 box; resized to 8 px it must be the raw pixels.
    x = torch.rand(8, 2, 16, 16)
    got = random_resized_crop_flip(x, torch.Generator().manual_seed(5), size=8, scale=(0.25, 0.25),
                                   ratio=(1.0, 1.0), flip=False)
    found = 0
    for i in range(len(x)):
        for top in range(9):
            for left in range(9):
                if torch.allclose(got[i], x[i, :, top : top + 8, left : left + 8], atol=1e-5):
                    found += 1
                    break
    assert found == len(x)


def test_resize_center_crop_matches_interpolate_then_slice():
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    got = resize_center_crop(img, 10)
    ref = F.interpolate(img[None].float(), size=(10, 15), mode="bilinear", antialias=True, align_corners=False)
    ref = ref.round().clamp(0, 255).to(torch.uint8)[0, :, :, 2:12]
    assert got.dtype == torch.uint8 and torch.equal(got, ref)
    square = torch.randint(0, 256, (3, 10, 10), dtype=torch.uint8)
    assert torch.equal(resize_center_crop(square, 10), square)
