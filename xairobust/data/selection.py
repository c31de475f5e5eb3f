"""Which test samples a stage looks at: one deterministic, documented choice for every stage.

``selection=stratified`` (default for classifiers) takes the test split in its stored order and
picks classes round-robin -- the first sample of each class, then the second of each, ... --
until ``n``; ``first`` takes the first ``n``; ``random`` a permutation seeded by ``seed``.
Indices are returned sorted; a larger ``n`` with ``stratified`` or ``first`` contains the
smaller one's samples. Used by explain, manipulate and the visualisations (the data layer, so
none of them imports another stage for it).
"""

from __future__ import annotations

import torch
from torch import Tensor


def select_indices(labels: Tensor | None, n_total: int, n: int, selection: str, seed: int) -> Tensor:
    """Deterministic choice of ``n`` test indices (see the module docstring)."""
    n = min(n, n_total)
    if selection == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(n_total, generator=g)[:n].sort().values
    if selection == "first" or labels is None:
        return torch.arange(n)
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    order = []
    for rank in range(max(len(p) for p in per_class)):
        order.extend(int(p[rank]) for p in per_class if rank < len(p))
    return torch.tensor(sorted(order[:n]), dtype=torch.int64)
