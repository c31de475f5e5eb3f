"""ROAD, RemOve And Debias (Rong, Leemann et al. 2022, ICML, arXiv 2202.00449): removal-based
faithfulness with noisy linear imputation instead of a constant baseline (issue 18).

Definition (``quantus.ROAD`` 0.6, read from its source; Rong et al.'s road_evaluation code):

* per-pixel relevance: the attribution, max-normalised per sample (Quantus ``normalise=True``,
  ``abs=False``); features are ordered by ``np.argsort(-a)`` (MoRF: most relevant first) or
  ``np.argsort(a)`` (LeRF), the same numpy call as Quantus so ties break identically;
* at each percentage p of ``percentages`` (Quantus' default 1, 3, ..., 99) the first
  ``int(H * W * p / 100)`` pixels of that order are *imputed*: each removed pixel's value is the
  weighted mean of its 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal ones;
  neighbours outside the image are left out and their weight with them), known neighbours at
  their value and removed ones as unknowns: one sparse linear system per (image, percentage),
  shared by the channels (one right-hand side each); then ``noise`` x N(0, 1) is added to every
  imputed value (Quantus' ``noisy_linear_imputation``, noise 0.01);
* the curve is 1 where the model still predicts the explained class y (``argmax == y``) and 0
  where it does not; the score of a sample is the mean of its curve over the percentages (with
  equally spaced percentages: the normalised area under the accuracy curve). ``road`` (MoRF):
  lower is better; ``road_lerf``: higher is better; ``road_symmetric`` = LeRF - MoRF (higher is
  better; the same noise draws for both orders). The per-percentage accuracy (mean over samples)
  is in the score JSON's diagnostics, ``per_percentage``.

Our choices:

* Multi-channel inputs: one relevance per *pixel*, the channel sum of the attribution, and the
  pixel is imputed in every channel (Rong et al. impute pixels; Quantus 0.6 sets its pixel count to
  C*H*W and indexes an H*W mask with those indices, so its ROAD fails on 3-channel input: the
  reference path refuses C > 1 in one line). For one channel this is exactly Quantus' ROAD.
* The noise is drawn per sample (score seed, metric, test index); the Quantus path calls Quantus
  one sample at a time with the global numpy RNG seeded the same way.

Native engine (why scipy.sparse and not torch): the systems of a chunk of samples x percentages
are assembled vectorised as one block-diagonal sparse matrix and solved by one
``scipy.sparse.linalg.spsolve`` call (SuperLU, the direct solver Quantus uses per system) with C
right-hand sides: a direct solve (no tolerance), the same per system whatever else is in the
batch (tests: 1 system per solve = the block-diagonal solve to 1e-13), and ~0.1 s per 3x32x32
image at 50 percentages on one CPU thread (measured; the whole metric ~1.4x one IG explanation).
A batched Jacobi-preconditioned conjugate gradient in torch (stencil by shifted slices, on the
model's device) reached 3e-12 of the direct solution in ~150 iterations but took 1.4 s per image
on CPU, and its result depends on a tolerance. The solve runs on the CPU; the model passes run on
the model's device in capped passes. Quantus' own ROAD builds each system with a Python loop
into a lil_matrix (its issue #332: ~6 s per ImageNet image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from xairobust.config import require
from xairobust.metrics import _quantus, native
from xairobust.metrics._quantus import QuantusMetric, normalise_per_sample, sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import register
from xairobust.metrics.randomisation import QuantusRefused

_quantus._TAGS.update({"road": 43, "road_lerf": 44, "road_symmetric": 45})
native.NATIVE_TAGS.update({"road": 143, "road_lerf": 144, "road_symmetric": 145})

# Quantus' noisy_linear_imputation neighbours: (row offset, column offset) -> weight, in its order.
NEIGHBOURS = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)

MAX_UNKNOWNS = 2**18  # per sparse solve: 256 systems of a 32 x 32 image (~0.1 GB of LU factors)


def impute(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Linear imputation of the ``removed`` pixels of each image, without noise.

    ``x`` (S, C, H, W), ``removed`` (S, H, W) bool. Every removed pixel v_i solves
    D_i v_i - sum_(j removed nbr) w_ij v_j = sum_(j kept nbr) w_ij x_j, D_i = sum of its in-image
    neighbour weights (Quantus' system times -1); all S systems form one block-diagonal matrix.
    Returns float64 (S, C, H, W) with the kept pixels unchanged."""
    s_n, c_n, h, w = x.shape
    flat = removed.reshape(s_n, -1)
    out = x.astype(np.float64).reshape(s_n, c_n, -1).transpose(0, 2, 1).copy()  # (S, HW, C)
    n = int(flat.sum())
    if n == 0:
        return out.transpose(0, 2, 1).reshape(x.shape)
    var = np.full(flat.shape, -1, dtype=np.int64)
    var[flat] = np.arange(n)
    img, pos = np.nonzero(flat)  # the unknowns, in var order
    row, col = np.divmod(pos, w)
    diag = np.zeros(n)
    rhs = np.zeros((n, c_n))
    ii, jj, vv = [np.arange(n)], [np.arange(n)], []
    for (dr, dc), wt in NEIGHBOURS:
        r2, c2 = row + dr, col + dc
        inside = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        i = np.flatnonzero(inside)
        j = r2[inside] * w + c2[inside]
        diag[i] += wt
        vj = var[img[i], j]
        unknown = vj >= 0
        ii.append(i[unknown])
        jj.append(vj[unknown])
        vv.append(np.full(int(unknown.sum()), -wt))
        known = ~unknown
        rhs[i[known]] += wt * out[img[i[known]], j[known]]
    matrix = scipy.sparse.csc_matrix((np.concatenate([diag, *vv]), (np.concatenate(ii), np.concatenate(jj))), shape=(n, n))
    sol = scipy.sparse.linalg.spsolve(matrix, rhs)
    out[flat] = np.asarray(sol).reshape(n, c_n)
    return out.transpose(0, 2, 1).reshape(x.shape)


def impute_groups(x: np.ndarray, removed: np.ndarray, max_unknowns: int = MAX_UNKNOWNS) -> np.ndarray:
    """``impute`` in groups of systems of at most ~``max_unknowns`` unknowns per sparse solve
    (the LU factors' memory grows with it; each system is solved alone either way)."""
    per = max(1, max_unknowns // max(1, removed[0].size))
    return np.concatenate([impute(x[s : s + per], removed[s : s + per]) for s in range(0, len(x), per)]) if len(x) else x.astype(np.float64)


def pixel_relevance(a: np.ndarray) -> np.ndarray:
    """(N, H*W) per-pixel relevance: the max-normalised map summed over channels (one channel: itself)."""
    a_norm = normalise_per_sample(a)
    return (a_norm[:, 0] if a.shape[1] == 1 else a_norm.sum(axis=1)).reshape(len(a), -1)


@dataclass
class ROADParams:
    # Quantus default: 1, 3, ..., 99 percent of the pixels removed
    percentages: tuple[float, ...] = tuple(float(p) for p in range(1, 100, 2))
    noise: float = 0.01  # Quantus default: std of the Gaussian added to each imputed value

    def __post_init__(self) -> None:
        p = tuple(float(v) for v in self.percentages)
        require(len(p) >= 1, "--percentages must name at least one percentage")
        require(all(0 < v < 100 for v in p), f"--percentages must lie in (0, 100), got {list(p)}")
        require(all(a < b for a, b in zip(p[:-1], p[1:], strict=True)), f"--percentages must be strictly increasing, got {list(p)}")
        require(self.noise >= 0, f"--noise must be >= 0, got {self.noise}")
        self.percentages = p


class _ROAD(QuantusMetric):
    """MoRF / LeRF accuracy under noisy linear imputation; the score: curve(orders[0]) - curve(orders[1])."""

    Params = ROADParams
    quantus_name = "ROAD"
    per_sample = True  # Quantus draws the imputation noise from the global numpy RNG
    orders: ClassVar[tuple[str, ...]] = ("morf",)

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        # tests: per sample, per order, per percentage the (C, k) noise Quantus draws, in its order
        self.draws_override: list | None = None

    def counts(self, inp: MetricInput) -> list[int]:
        require(inp.x.ndim == 4, f"{self.name()}: needs (C, H, W) image inputs, got a {'x'.join(map(str, inp.x.shape[1:]))} input")
        hw = inp.x.shape[2] * inp.x.shape[3]
        return [int(hw * p / 100) for p in self.params.percentages]  # Quantus' int(a_size * p / 100)

    def orderings(self, inp: MetricInput) -> list[np.ndarray]:
        rel = pixel_relevance(inp.a)
        return [np.argsort(-rel, axis=1) if o == "morf" else np.argsort(rel, axis=1) for o in self.orders]

    # -- reference path ------------------------------------------------------------------------
    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        if inp.x.shape[1] != 1:
            raise QuantusRefused(
                f"{self.name()} --engine quantus: Quantus 0.6's ROAD fails on {inp.x.shape[1]}-channel input"
                " (it indexes an H*W mask with C*H*W positions); use --engine native"
            )
        self.counts(inp)
        return {"percentages": list(self.params.percentages), "noise": self.params.noise, "abs": False, "normalise": True}

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        curves = []
        for order in self.orders:
            # LeRF through Quantus' MoRF: argsort(-(-a)) is argsort(a), and n(-a) = -n(a) exactly
            sub = inp if order == "morf" else _negated(inp)
            try:
                curves.append(super()._run(sub, idx, extra, draw_offset))
            except AssertionError as err:  # Quantus' attribution checks, e.g. -a all negative for LeRF
                raise QuantusRefused(
                    f"{self.name()} --engine quantus: Quantus' ROAD ({order} order) refuses the map of sample"
                    f" {int(inp.indices[idx[0]])}: {err}; use --engine native"
                ) from None
        self._curves.append(np.stack(curves))
        return _combine(np.stack(curves))

    def from_quantus(self, out: Any, n: int) -> np.ndarray:
        # Quantus returns {percentage: accuracy over the call's samples}; we call it per sample
        return np.asarray(list(out.values()), dtype=np.float64)[None]

    def score(self, inp: MetricInput) -> np.ndarray:
        self._curves: list[np.ndarray] = []
        scores = super().score(inp)
        if self._curves:
            curves = np.concatenate(self._curves, axis=1)  # (orders, N, P)
            self._diag["per_percentage"] = self.per_percentage(curves)
        return scores

    def per_percentage(self, curves: np.ndarray) -> dict[str, dict[str, float]]:
        """{order: {percentage: accuracy over the samples}} from (orders, N, P) curves."""
        return {o: dict(zip(map(str, self.params.percentages), curves[k].mean(0).tolist(), strict=True)) for k, o in enumerate(self.orders)}

    def reference_draws(self, inp: MetricInput) -> list:
        """The noise the Quantus path draws per sample: order by order, percentage by percentage,
        np.random.randn(C, k) under the sample's global seed (one Quantus call per order)."""
        c, ks = inp.x.shape[1], self.counts(inp)
        out = []
        for i in range(len(inp.x)):
            per_order = []
            for _ in self.orders:
                rng = np.random.RandomState(sample_global_seed(inp.seed, self.name(), inp.indices[i]))
                per_order.append([rng.randn(c, k) for k in ks])
            out.append(per_order)
        return out

    # -- native engine -------------------------------------------------------------------------
    def score_native(self, inp: MetricInput) -> np.ndarray:
        n, c, h, w = inp.x.shape
        ks = self.counts(inp)
        orders = self.orderings(inp)
        n_p = len(ks)
        chunking = self.chunking(inp)
        y_all = torch.as_tensor(inp.y, device=inp.device, dtype=torch.int64)
        curves = np.empty((len(self.orders), n, n_p))
        # a chunk's systems: samples x orders x percentages images of C x H x W float64
        for idx in chunking.sample_chunks(n, bytes_per_sample=len(self.orders) * n_p * c * h * w * 8 * 4):
            noise = self.noise(inp, idx, ks, orders)  # (len(idx), orders, P, C, H*W), zero outside the removed pixels
            removed = np.zeros((len(idx), len(self.orders), n_p, h * w), dtype=bool)
            for o, order in enumerate(orders):
                for p, k in enumerate(ks):
                    rows = np.repeat(np.arange(len(idx)), k)
                    removed[rows, o, p, order[idx, :k].reshape(-1)] = True
            x = np.broadcast_to(inp.x[idx][:, None, None], (len(idx), len(self.orders), n_p, c, h, w))
            filled = impute_groups(x.reshape(-1, c, h, w), removed.reshape(-1, h, w)).reshape(x.shape)
            filled = filled + self.params.noise * noise.reshape(filled.shape)
            # Quantus writes the float64 imputation into a copy of the float32 input
            xs = torch.as_tensor(filled.astype(inp.x.dtype), device=inp.device).reshape(-1, c, h, w)
            ys = y_all[torch.as_tensor(idx, device=inp.device)].repeat_interleave(len(self.orders) * n_p)
            pred = _predictions(inp.model, xs, chunking.points_per_pass)
            curves[:, idx] = (pred == ys).view(len(idx), len(self.orders), n_p).permute(1, 0, 2).cpu().numpy()
            self.progress(len(idx))
        self._diag["per_percentage"] = self.per_percentage(curves)
        return _combine(curves)

    def noise(self, inp: MetricInput, idx: np.ndarray, ks: list[int], orders: list[np.ndarray]) -> np.ndarray:
        """(len(idx), orders, P, C, H*W) standard normal values at each sample's removed pixels."""
        _, c, h, w = inp.x.shape
        out = np.zeros((len(idx), len(self.orders), len(ks), c, h * w))
        for r, i in enumerate(idx):
            if self.draws_override is not None:
                for o in range(len(self.orders)):
                    for p, k in enumerate(ks):
                        out[r, o, p][:, orders[o][i, :k]] = self.draws_override[i][o][p]
                continue
            # the sample's own stream: one N(0, 1) value per (percentage, channel, pixel), the same for
            # both orders of road_symmetric; only the removed pixels' values are used
            g = native.generator(torch.device("cpu"), inp.seed, native.NATIVE_TAGS[self.name()], int(inp.indices[i]))
            draws = torch.randn((len(ks), c, h * w), generator=g, dtype=torch.float64).numpy()
            for o in range(len(self.orders)):
                for p, k in enumerate(ks):
                    cols = orders[o][i, :k]
                    out[r, o, p][:, cols] = draws[p][:, cols]
        return out


def _combine(curves: np.ndarray) -> np.ndarray:
    """(orders, N, P) 0/1 curves -> (N,) mean accuracy, or the difference of the two orders' means."""
    means = curves.mean(-1)
    return means[0] if len(means) == 1 else means[0] - means[1]


def _negated(inp: MetricInput) -> MetricInput:
    return dataclasses.replace(inp, a=-inp.a)


def _predictions(model: torch.nn.Module, x: torch.Tensor, points_per_pass: int) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), max(1, points_per_pass)):
            outs.append(model(x[s : s + points_per_pass]).argmax(1))
    return torch.cat(outs)


@register("road", category="faithfulness", direction="lower", label="ROAD",
          source="Rong, Leemann et al. 2022 (ICML, arXiv 2202.00449), quantus.ROAD (MoRF; mean accuracy over the percentages)", draws=True)
class ROAD(_ROAD):
    """Share of the percentages at which the prediction survives imputing the most relevant pixels."""


@register("road_lerf", category="faithfulness", direction="higher", label="ROAD-L",
          source="Rong, Leemann et al. 2022, quantus.ROAD on -a (LeRF; mean accuracy over the percentages)", draws=True)
class ROADLeRF(_ROAD):
    """Share of the percentages at which the prediction survives imputing the least relevant pixels."""

    orders = ("lerf",)


@register("road_symmetric", category="faithfulness", direction="higher", label="ROAD-S",
          source="LeRF - MoRF mean accuracies of quantus.ROAD (Rong, Leemann et al. 2022)", draws=True)
class ROADSymmetric(_ROAD):
    """LeRF minus MoRF mean accuracy (the same imputation noise for both orders)."""

    orders = ("lerf", "morf")
