"""The Relative Input / Output / Representation Stability ratios (Agarwal et al. 2022) of one chunk
of perturbed inputs, as Quantus computes them.

The metrics are in ``xairobust.metrics.stability``; the computation is here, below both the
metrics and the native engine (``native.perturbed_ratios`` fills these ratios from the same draws
as Max/Avg-Sensitivity), so neither imports the other's module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

EPS_MIN = 1e-6  # Quantus' eps_min for every relative-stability division


def _relative(a: Tensor, b: Tensor) -> Tensor:
    """(a - b) / (a + (a == 0) * eps), in float64 (Quantus' numerator)."""
    return (a - b) / (a + (a == 0).to(a.dtype) * EPS_MIN)


def hidden_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs Quantus' get_hidden_representations collects by default."""
    return [m for _, m in model.named_modules() if not isinstance(m, (type(model), nn.Sequential))]


def representations(model: nn.Module, x: Tensor, points_per_pass: int) -> Tensor:
    """(N, R): every hidden module's output, flattened per sample and concatenated."""
    rows: list[Tensor] = []
    for s in range(0, len(x), max(1, points_per_pass)):
        part = x[s : s + points_per_pass]
        found: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any, found: list[Tensor] = found, k: int = len(part)) -> None:
            if isinstance(out, Tensor):
                found.append(out.detach().reshape(k, -1).clone())

        handles = [m.register_forward_hook(hook) for m in hidden_modules(model)]
        try:
            with torch.no_grad():
                model(part)
        finally:
            for h in handles:
                h.remove()
        rows.append(torch.cat(found, 1))
    return torch.cat(rows)


def logits(model: nn.Module, x: Tensor, points_per_pass: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + points_per_pass]).float() for s in range(0, len(x), max(1, points_per_pass))])


def relative_ratios(model: nn.Module, x: Tensor, xp: Tensor, a: Tensor, ap: Tensor, which: frozenset[str], points_per_pass: int) -> dict[str, np.ndarray]:
    """(c, K) RIS / ROS / RRS objectives of one chunk: x (c, ...), xp and ap (c*K, ...)."""
    c = len(x)
    k = len(xp) // max(1, c)
    a64 = a.double().reshape(c, 1, -1)
    num = torch.linalg.vector_norm(_relative(a64, ap.double().reshape(c, k, -1)), dim=2)
    out: dict[str, np.ndarray] = {}

    def finish(name: str, den: Tensor) -> None:
        den = den + (den == 0).to(den.dtype) * EPS_MIN
        out[name] = (num / den).cpu().numpy()

    if "ris" in which:
        diff = (x.unsqueeze(1) - xp.view(c, k, *x.shape[1:])).reshape(c, k, -1).double()  # float32 difference, as Quantus
        x64 = x.double().reshape(c, 1, -1)
        finish("ris", torch.linalg.vector_norm(diff / (x64 + (x64 == 0).double() * EPS_MIN), dim=2))
    if "ros" in which:
        h, hp = logits(model, x, points_per_pass), logits(model, xp, points_per_pass)
        diff = (h.unsqueeze(1) - hp.view(c, k, -1)).double()
        finish("ros", torch.linalg.vector_norm(diff, dim=2))
    if "rrs" in which:
        r, rp = representations(model, x, points_per_pass), representations(model, xp, points_per_pass)
        diff = (r.unsqueeze(1) - rp.view(c, k, -1)).double()
        r64 = r.double().unsqueeze(1)
        finish("rrs", torch.linalg.vector_norm(diff / (r64 + (r64 == 0).double() * EPS_MIN), dim=2))
    return out
