"""FID and the feature distance of inversions, on features from a registered extractor.

The Fréchet distance itself is torchmetrics' ``FrechetInceptionDistance`` (sample means and
unbiased covariances accumulated in float64; ``Tr sqrt(S1 S2)`` from the eigenvalues of
``S1 S2``), fed with features computed once (a pass-through module as its "feature network"),
so real-image features are shared by every run and class compared.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xairobust.visualize._core import batched


class _Passthrough(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, feats: Tensor) -> Tensor:
        return feats


def extract(extractor: nn.Module, images: Tensor, batch_size: int = 128, device: torch.device | str = "cpu",
            advance=None) -> Tensor:
    """Features (N, D) in float64 on the CPU, batch by batch."""
    out = []
    with torch.no_grad():
        for sl in batched(len(images), batch_size):
            out.append(extractor(images[sl].to(device)).double().cpu())
            if advance is not None:
                advance(sl.stop - sl.start)
    return torch.cat(out)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets (N1, D), (N2, D) (each needs at least 2 rows)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        return float("nan")
    metric = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]), reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def feature_distance(orig: Tensor, other: Tensor) -> Tensor:
    """Per-image L2 distance between two feature sets of the same images (N, D) -> (N,)."""
    return (orig.double() - other.double()).norm(dim=1)
