"""Similarity measures between an original and a manipulated explanation, per sample.

Every measure works on *maps*: the absolute attribution summed over channels, (B, H, W) (for
images; any (B, ...) input is reduced over dim 1), as Ghorbani et al. (2019) compare saliency
maps. A feature is a pixel position.

Registered in :data:`MEASURES` with a direction for reports: "higher" means the model's
explanation resisted better (e.g. a higher top-k intersection), "lower" the opposite (a larger
centre-of-mass shift, a higher fooling rate); measures of the perturbation itself have none.

* ``spearman``      Spearman rank correlation of the two maps (average ranks for ties, as
                    ``scipy.stats.spearmanr``; NaN-free: a constant map gives 0).
* ``topk_1/5/10``   |top-k(original) ∩ top-k(manipulated)| / k with k = 1 / 5 / 10 % of the
                    features (at least 1). Ties are broken by ``torch.topk``'s order.
* ``com_shift``     L2 distance (in pixels) between the maps' centres of mass.
* ``ssim``          structural similarity of the two maps, each scaled to [0, 1] by its own
                    maximum (``skimage.metrics.structural_similarity``, data_range 1, its
                    default 7x7 window, smaller for maps under 7 pixels).
* ``fooled``        1 when the fooling measure (default ``topk_10``) is below a threshold
                    (default 0.5) *and* the prediction is unchanged, else 0; its mean is the
                    Fooling Success Rate (Heo et al. 2019).
* ``pred_unchanged``1 when the manipulated input keeps the original prediction.
* ``norm_linf`` / ``norm_l2``  the perturbation's actual size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from xairobust.registry import Registry

MEASURES: Registry = Registry("similarity measure")


def to_map(attr: Tensor) -> Tensor:
    """|attribution| summed over channels: (B, C, H, W) -> (B, H, W); (B, D) stays (B, D)."""
    return attr.abs().sum(1) if attr.dim() > 2 else attr.abs()


@dataclass
class Pair:
    """What the measures of one batch see (maps, predictions, the two inputs)."""

    orig: Tensor  # (B, ...) maps of the original explanation
    adv: Tensor  # (B, ...) maps of the manipulated input's explanation
    x: Tensor  # original inputs
    x_adv: Tensor  # manipulated inputs
    pred: Tensor  # original predictions (B,)
    pred_adv: Tensor  # predictions on x_adv (B,)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of (B, D) arrays: Pearson of average ranks (0 if constant)."""
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(1) / den
    return np.where(den > 0, r, 0.0)


def k_of(fraction: float, d: int) -> int:
    return max(1, int(round(fraction * d)))


def topk_intersection(a: Tensor, b: Tensor, fraction: float) -> Tensor:
    """Share of the top-k features of ``a`` that are among the top-k of ``b``, per row."""
    a, b = a.flatten(1), b.flatten(1)
    k = k_of(fraction, a.shape[1])
    ia = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    ib = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, dim=1).indices, True)
    return (ia & ib).sum(1).double() / k


def centre_of_mass(m: Tensor) -> Tensor:
    """(B, H, W) maps -> (B, 2) centre of mass in pixel coordinates (row, col); differentiable."""
    if m.dim() == 2:
        m = m.unsqueeze(1)
    m = m.flatten(2) if m.dim() > 3 else m
    h, w = m.shape[-2:]
    rows = torch.arange(h, dtype=m.dtype, device=m.device).view(1, h, 1)
    cols = torch.arange(w, dtype=m.dtype, device=m.device).view(1, 1, w)
    total = m.sum((-2, -1)).clamp_min(1e-12)
    return torch.stack([(m * rows).sum((-2, -1)) / total, (m * cols).sum((-2, -1)) / total], dim=1)


def ssim_maps(a: Tensor, b: Tensor) -> Tensor:
    """skimage SSIM of each pair of maps scaled to [0, 1] by their own maximum."""
    from skimage.metrics import structural_similarity

    out = []
    for u, v in zip(a.double().cpu().numpy(), b.double().cpu().numpy(), strict=True):
        u = u.reshape(u.shape[-2:]) if u.ndim >= 2 else u[None]
        v = v.reshape(v.shape[-2:]) if v.ndim >= 2 else v[None]
        u = u / u.max() if u.max() > 0 else u
        v = v / v.max() if v.max() > 0 else v
        win = min(7, *u.shape)
        win = win if win % 2 == 1 else win - 1
        if win < 3:
            out.append(float("nan"))
            continue
        out.append(float(structural_similarity(u, v, data_range=1.0, win_size=win)))
    return torch.tensor(out, dtype=torch.float64)


def _reg(name: str, direction: str | None, label: str):
    return MEASURES.register(name, direction=direction, label=label, category="manipulation")


@_reg("spearman", "higher", "Spearman")
def spearman(p: Pair) -> Tensor:
    r = spearman_rows(p.orig.flatten(1).double().cpu().numpy(), p.adv.flatten(1).double().cpu().numpy())
    return torch.from_numpy(r)


def _topk_measure(fraction: float):
    def measure(p: Pair) -> Tensor:
        return topk_intersection(p.orig.cpu(), p.adv.cpu(), fraction)

    measure.__doc__ = f"top-{fraction:.0%} intersection"
    return measure


for _pct in (1, 5, 10):
    _reg(f"topk_{_pct}", "higher", f"Top-{_pct}%")(_topk_measure(_pct / 100))


@_reg("com_shift", "lower", "CoM shift")
def com_shift(p: Pair) -> Tensor:
    return (centre_of_mass(p.orig.double()) - centre_of_mass(p.adv.double())).norm(dim=1).cpu()


@_reg("ssim", "higher", "SSIM")
def ssim(p: Pair) -> Tensor:
    return ssim_maps(p.orig, p.adv)


@_reg("pred_unchanged", None, "Pred. kept")
def pred_unchanged(p: Pair) -> Tensor:
    return (p.pred.cpu() == p.pred_adv.cpu()).double()


@_reg("norm_linf", None, "‖δ‖∞")
def norm_linf(p: Pair) -> Tensor:
    return (p.x_adv - p.x).flatten(1).abs().amax(1).double().cpu()


@_reg("norm_l2", None, "‖δ‖₂")
def norm_l2(p: Pair) -> Tensor:
    return (p.x_adv - p.x).flatten(1).norm(dim=1).double().cpu()


FOOLED = "fooled"
@_reg(FOOLED, "lower", "FSR")
def fooled(p: Pair) -> Tensor:
    """Needs another measure's values and a threshold: computed by :func:`compute_measures`."""
    raise NotImplementedError("'fooled' is computed by compute_measures (it needs the fooling measure)")


def compute_measures(p: Pair, fool_measure: str = "topk_10", fool_threshold: float = 0.5) -> dict[str, Tensor]:
    """Every registered measure for one batch, {name: (B,) float64}; ``fooled`` last."""
    out: dict[str, Tensor] = {}
    for name in MEASURES.names():
        if name == FOOLED:
            continue
        out[name] = MEASURES.get(name)(p).double()
    if fool_measure not in out:
        from xairobust.errors import ConfigError

        raise ConfigError(f"manipulate: --fool-measure must be one of {', '.join(sorted(out))}, got '{fool_measure}'")
    out[FOOLED] = ((out[fool_measure] < fool_threshold) & (out["pred_unchanged"] > 0)).double()
    return out
