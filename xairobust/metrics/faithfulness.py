"""Removal-based faithfulness beyond the paper's two (issue 18): Pixel-Flipping, Region
Perturbation (MoRF, LeRF and their difference), Selectivity, Monotonicity Correlation and
Infidelity, each on the native engine and on the Quantus 0.6 reference path.

Definitions are Quantus 0.6's (read from its source; the class named in each entry's ``source``),
with attributions max-normalised per sample where Quantus normalises (see _quantus.py):

* ``pixel_flipping`` (Bach et al. 2015): features in descending attribution order, removed
  cumulatively ``features_in_step`` at a time (replaced by the baseline); the curve is the model's
  output for the explained class after each step (no point for the intact input), and the score
  its area, ``np.trapz(curve, dx=1)`` (Quantus ``return_auc_per_sample``). Lower is better.
* ``region_perturbation`` / ``_lerf`` (Samek et al. 2016): the input is cut into
  ``patch_size`` x ``patch_size`` patches (all channels; zero-padded symmetrically when the size
  does not divide the image, as Quantus); patches in descending (MoRF) or ascending (LeRF) order
  of their attribution sum are replaced cumulatively, for the first ``regions_evaluation``
  patches; the curve is f(x) - f(x_k) and the score its area ``np.trapz(curve, dx=1)`` (Quantus'
  ``get_auc_score`` per sample; AOPC, Samek's mean of the same curve with the zero of k = 0, is
  this area's monotone companion and not reported separately). MoRF: higher is better; LeRF:
  lower. ``region_perturbation_symmetric`` = MoRF area - LeRF area (higher is better): a
  replacement value that is itself out of distribution lowers both curves alike, so the
  difference is less sensitive to the baseline than either.
* ``selectivity`` (Montavon et al. 2018): every patch in MoRF order, the curve is f(x_k), the
  score its area. Lower is better.
* ``monotonicity_correlation`` (Nguyen & Martinez 2020): |a| in ascending order,
  ``features_in_step`` at a time; each step's features alone are replaced ``nr_samples`` times
  (baseline ``uniform``: one U(value range) value per replacement, Quantus' default) and the
  score is Spearman's rho between the step's attribution mass and the mean squared output change
  over f(x)^2 (1 when |f(x)| < eps). Higher is better.
* ``infidelity`` (Yeh et al. 2019, NeurIPS, "On the (in)fidelity and sensitivity of
  explanations"): E_I[(I^T a - (f(x) - f(x - I)))^2] over Quantus' perturbations: the
  ``patch_size`` patches in raster order are replaced cumulatively, I_k = x - x_k, the mean over
  the patches and over ``nr_samples`` repetitions (identical with the deterministic black baseline;
  with ``uniform`` each replacement draws its value). Not normalised (Quantus ``normalise=False``)
  and the same quantity as ``captum.metrics.infidelity(..., normalize=False)`` fed the same
  perturbations (tests/test_faithfulness.py); Captum's ``normalize=True`` rescales I^T a by the
  least-squares factor beta = E[I^T a * df] / E[(I^T a)^2] first (scale-free); it is not used
  here, so the value is in squared output units and depends on the attribution's scale. With
  I = x - x' the explanation that makes a linear model's Infidelity 0 is its gradient (Yeh:
  I^T a = f(x) - f(x - I) for every I); gradient x input plays that role only for Yeh's
  removal masks with a zero baseline. Lower is better.

Our choices (as the seven's, xairobust.metrics.quantus_metrics): feature counts sized for
224 x 224 inputs are scaled to the input size (``features_in_step`` 0 = at most 64 steps, the
Faithfulness Estimate rule; ``patch_size`` 0 = min(H, W) // 8, i.e. 64 patches); baselines
are restricted to values Quantus' cumulative replacement keeps fixed (black = the sample's
minimum, white = its maximum; Quantus recomputes 'mean' of the already perturbed input at every
step), plus ``uniform`` where drawn per replacement; every draw comes from a per-sample stream.

Native engine: each chunk's (sample, step) perturbed inputs are built by one masked ``where`` per
pass of at most ``points_per_pass`` inputs (no Python loop over samples or steps); feature and
patch orders are computed with the same numpy calls as Quantus, so ties break identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from xairobust.config import require
from xairobust.metrics import _quantus, native
from xairobust.metrics._quantus import QuantusMetric, sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import features_in_step, register

# Random streams of these metrics (Quantus path: global-RNG seeds; native: torch generators).
_quantus._TAGS.update({"monotonicity_correlation": 41, "infidelity": 42})
native.NATIVE_TAGS.update({"monotonicity_correlation": 141, "infidelity": 142})

CUMULATIVE_BASELINES = ("black", "white")
# scores that are areas under removal curves (sums of ~64 model outputs; tests size tolerances by it)
AREA_METRICS = ("pixel_flipping", "region_perturbation", "region_perturbation_lerf", "region_perturbation_symmetric", "selectivity")


def auto_patch_size(shape: tuple[int, ...]) -> int:
    """64 patches of a square image (min(H, W) // 8; 4 on 32 x 32, 1 on 8 x 8)."""
    return max(1, min(shape[-2:]) // 8)


def _require_image(name: str, shape: tuple[int, ...]) -> None:
    require(len(shape) == 3, f"{name}: needs (C, H, W) image inputs, got a {'x'.join(map(str, shape))} input")


def value_range(inp: MetricInput) -> tuple[float, float]:
    return tuple(inp.value_range) if inp.value_range is not None else (0.0, 1.0)  # Quantus' uniform_low/high


def require_cumulative(baseline: str) -> None:
    require(baseline in CUMULATIVE_BASELINES, "--baseline must be black or white (kept fixed by cumulative replacement)")


def reference_uniform(inp: MetricInput, name: str, count: int) -> np.ndarray:
    """(N, count) the U(value range) values the Quantus path draws per sample for metric ``name``:
    Quantus draws them from the global numpy RNG, which that path seeds per sample."""
    lo, hi = value_range(inp)
    return np.stack([
        np.random.RandomState(sample_global_seed(inp.seed, name, inp.indices[i])).uniform(lo, hi, count) for i in range(len(inp.x))
    ])


def replacement_values(inp: MetricInput, name: str, baseline: str, x_all: Tensor, count: int, override: np.ndarray | None) -> Tensor:
    """(N, count) native replacement values: ``uniform`` drawn from each sample's own stream (or the
    given ``override``, the tests' identical draws), any other baseline its per-sample value."""
    n, device = len(x_all), x_all.device
    if baseline != "uniform":  # the same value for every replacement
        return native.baseline_values(x_all, baseline)[:, None].expand(n, count)
    if override is not None:
        return torch.as_tensor(override, device=device, dtype=x_all.dtype).reshape(n, count)
    lo, hi = value_range(inp)
    return torch.stack([
        torch.rand(count, generator=native.generator(device, inp.seed, native.NATIVE_TAGS[name], int(j)), device=device)
        for j in inp.indices
    ]).to(x_all.dtype) * (hi - lo) + lo


# --- shared native pieces ---------------------------------------------------------------------


def replaced_outputs(
    inp: MetricInput,
    n_pairs: int,
    build: Callable[[Tensor, Tensor, Tensor], Tensor],
    softmax: bool,
    chunking: native.Chunking,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, n_pairs) float32 outputs f(x_p)[y] for every sample and perturbation p.

    ``build(idx, rows, pairs)`` returns the (P, d) perturbed flat inputs of the given
    (sample ``rows`` of chunk ``idx``, perturbation ``pairs``) combinations; it is called once
    per model pass of at most ``points_per_pass`` inputs."""
    device = inp.device
    n = len(inp.x)
    shape = tuple(inp.x.shape[1:])
    out = np.empty((n, n_pairs), dtype=np.float32)
    y_all = torch.as_tensor(inp.y, device=device, dtype=torch.int64)
    ppp = chunking.points_per_pass
    for idx in chunking.sample_chunks(n):
        c = len(idx)
        rows_all = torch.arange(c, device=device).repeat_interleave(n_pairs)
        pairs_all = torch.arange(n_pairs, device=device).repeat(c)
        y = y_all[idx]
        vals = torch.empty(c * n_pairs, device=device)
        for s in range(0, c * n_pairs, ppp):
            rows, pairs = rows_all[s : s + ppp], pairs_all[s : s + ppp]
            xs = build(torch.as_tensor(idx, device=device), rows, pairs)
            vals[s : s + len(rows)] = native.outputs_at(inp.model, xs.view(len(rows), *shape), y[rows], ppp, softmax)
        out[idx] = vals.view(c, n_pairs).cpu().numpy()
        if on_chunk is not None:
            on_chunk(c)
    return out


def clean_outputs(inp: MetricInput, softmax: bool, chunking: native.Chunking) -> np.ndarray:
    x = torch.as_tensor(inp.x, device=inp.device)
    y = torch.as_tensor(inp.y, device=inp.device, dtype=torch.int64)
    return native.outputs_at(inp.model, x, y, chunking.points_per_pass, softmax).cpu().numpy()


def flat_baseline(x_flat: Tensor, kind: str) -> Tensor:
    """(N,) per-sample baseline value (black = min, white = max; fixed under cumulative replacement)."""
    return native.baseline_values(x_flat, kind)


def cumulative_builder(inp: MetricInput, step_of: np.ndarray, fill: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Callable:
    """Perturbation p replaces every feature whose step is <= p (cumulative removal).

    ``step_of``: (N, d) int64 step at which each feature is replaced (a large value: never).
    ``fill(idx, rows, pairs)`` gives the replacement values, (P, 1) or (P, d)."""
    device = inp.device
    n = len(inp.x)
    x_all = torch.as_tensor(inp.x, device=device).reshape(n, -1)
    steps = torch.as_tensor(step_of, device=device)

    def build(idx: Tensor, rows: Tensor, pairs: Tensor) -> Tensor:
        sample = idx[rows]
        mask = steps[sample] <= pairs[:, None]
        x = x_all[sample]
        return torch.where(mask, fill(idx, rows, pairs).to(x.dtype).expand_as(x), x)

    return build


def auc(curves: np.ndarray) -> np.ndarray:
    """Quantus' calculate_auc, the composite trapezoidal rule with dx = 1, per row (its np.trapz
    is np.trapezoid since numpy 2.0)."""
    return np.trapezoid(curves.astype(np.float64), dx=1, axis=1)


# --- patches (Region Perturbation, Selectivity) -----------------------------------------------


def padding(dim: int, patch: int) -> tuple[int, int]:
    """Quantus' get_padding_size: the remainder split floor / ceil."""
    mod = dim % patch
    if mod == 0:
        return (0, 0)
    total = patch - mod
    return (math.floor(total / 2), math.ceil(total / 2))


def patch_layout(shape: tuple[int, ...], patch: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """The blocks of a zero-padded (C, H, W) input as Quantus' get_block_indices yields them.

    Returns (blocks, patch_of, pad_h, pad_w): blocks (B, C*p*p) flat indices into the padded
    input in Quantus' order (row-major over blocks, (c, row, col) inside one), and patch_of (d,)
    the block of each feature of the unpadded input."""
    c, h, w = shape
    ph, pw = padding(h, patch), padding(w, patch)
    hp, wp = h + sum(ph), w + sum(pw)
    idx = np.arange(c * hp * wp).reshape(c, hp, wp)
    bh, bw = hp // patch, wp // patch
    blocks = np.stack([idx[:, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].reshape(-1) for i in range(bh) for j in range(bw)])
    rows = (np.arange(h) + ph[0]) // patch
    cols = (np.arange(w) + pw[0]) // patch
    patch_of = np.repeat((rows[:, None] * bw + cols[None, :])[None], c, axis=0).reshape(-1)  # a writable copy
    return blocks, patch_of, ph, pw


def patch_sums(a: np.ndarray, patch: int) -> np.ndarray:
    """(N, B) attribution sums per patch, with Quantus' zero padding and summation order."""
    blocks, _, ph, pw = patch_layout(tuple(a.shape[1:]), patch)
    flat = np.pad(a, ((0, 0), (0, 0), ph, pw), mode="constant").reshape(len(a), -1)
    # one (N, C*p*p) sum per block, as Quantus: a single (N, B, C*p*p) sum rounds differently in the
    # last bit, which reorders near-tied patches (measured on Grad-CAM maps)
    # (and flat[:, b] is laid out differently from Quantus' per-row fancy index: same rule)
    rows = np.arange(len(a))[:, None]
    return np.stack([flat[rows, np.broadcast_to(b, (len(a), len(b)))].sum(axis=-1) for b in blocks], -1)


def region_steps(a_norm: np.ndarray, patch: int, order: str, regions: int | None) -> tuple[np.ndarray, int]:
    """(N, d) step at which each feature's patch is replaced, and the number of steps."""
    sums = patch_sums(a_norm, patch)
    ranking = np.argsort(-sums, -1) if order == "morf" else np.argsort(sums, -1)
    nb = sums.shape[1]
    k = nb if regions is None else min(regions, nb)
    big = np.iinfo(np.int64).max // 2
    step_of_patch = np.full((len(a_norm), nb), big, dtype=np.int64)
    np.put_along_axis(step_of_patch, ranking[:, :k], np.arange(k)[None].repeat(len(a_norm), 0), axis=1)
    _, patch_of, _, _ = patch_layout(tuple(a_norm.shape[1:]), patch)
    return step_of_patch[:, patch_of], k


def _normalised(a: np.ndarray) -> np.ndarray:
    return _quantus.normalise_per_sample(a)


# --- the metrics --------------------------------------------------------------------------------


class _Faithfulness(QuantusMetric):
    """Common Quantus-path plumbing: softmax per call, curves reduced to one value per sample."""

    def call_kwargs(self, inp: MetricInput) -> dict[str, Any]:
        return {"softmax": self.params.softmax}

    def baseline_kwargs(self, inp: MetricInput) -> dict[str, Any]:
        lo, hi = value_range(inp)
        return {"perturb_baseline": self.params.baseline, "perturb_func_kwargs": {"uniform_low": lo, "uniform_high": hi}}


@dataclass
class PixelFlippingParams:
    # Features removed per step; 0 = auto (at most 64 steps; the Faithfulness Estimate rule).
    # Quantus' default 1 is 3072 forward passes per CIFAR-10 image.
    features_in_step: int = 0
    baseline: str = "black"  # Quantus default (the sample's minimum)
    softmax: bool = True  # Quantus' default for this metric: probabilities

    def __post_init__(self) -> None:
        require(self.features_in_step >= 0, f"--features-in-step must be >= 0, got {self.features_in_step}")
        require_cumulative(self.baseline)


@register("pixel_flipping", category="faithfulness", direction="lower", label="PF",
          source="Bach et al. 2015 (PLoS ONE 10(7)), quantus.PixelFlipping (AUC per sample)")
class PixelFlipping(_Faithfulness):
    """Area under f(x_k)[y] as features are removed in descending attribution order."""

    Params = PixelFlippingParams
    quantus_name = "PixelFlipping"

    def step(self, inp: MetricInput) -> int:
        return features_in_step(self.params.features_in_step, tuple(inp.x.shape[1:]))

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        # return_auc_per_sample would call np.trapz, which numpy 2.4 removed: the curve, then auc()
        return {"features_in_step": self.step(inp), **self.baseline_kwargs(inp)}

    def from_quantus(self, out: Any, n: int) -> np.ndarray:
        return auc(np.asarray(out, dtype=np.float64).reshape(n, -1))

    def score_native(self, inp: MetricInput) -> np.ndarray:
        n = len(inp.x)
        d = int(np.prod(inp.x.shape[1:]))
        s = self.step(inp)
        order = np.argsort(-_normalised(inp.a).reshape(n, -1), axis=1)  # Quantus' call: same ties
        step_of = np.empty((n, d), dtype=np.int64)
        np.put_along_axis(step_of, order, np.arange(d)[None].repeat(n, 0) // s, axis=1)
        x_flat = torch.as_tensor(inp.x, device=inp.device).reshape(n, -1)
        base = flat_baseline(x_flat, self.params.baseline)
        build = cumulative_builder(inp, step_of, lambda idx, rows, pairs: base[idx[rows]][:, None])
        curves = replaced_outputs(inp, math.ceil(d / s), build, self.params.softmax, self.chunking(inp), self.progress)
        return auc(curves)


@dataclass
class RegionParams:
    patch_size: int = 0  # 0 = auto: min(H, W) // 8 (64 patches); Quantus' 8 is sized for 224 x 224
    regions_evaluation: int = 100  # Quantus default: patches replaced (all of them when fewer)
    baseline: str = "black"
    softmax: bool = True  # Quantus' default for this metric

    def __post_init__(self) -> None:
        require(self.patch_size >= 0, f"--patch-size must be >= 0, got {self.patch_size}")
        require(self.regions_evaluation >= 1, f"--regions-evaluation must be >= 1, got {self.regions_evaluation}")
        require_cumulative(self.baseline)


class _Regions(_Faithfulness):
    """Cumulative patch replacement in attribution order; curve f(x) - f(x_k) or f(x_k)."""

    orders: ClassVar[tuple[str, ...]] = ("morf",)  # the score: area(orders[0]) - area(orders[1])
    drop_curve: ClassVar[bool] = True  # f(x) - f(x_k) (Region Perturbation) or f(x_k) (Selectivity)
    all_regions: ClassVar[bool] = False

    def patch(self, inp: MetricInput) -> int:
        shape = tuple(inp.x.shape[1:])
        _require_image(self.name(), shape)
        p = self.params.patch_size or auto_patch_size(shape)
        require(p <= min(shape[1:]), f"{self.name()}: --patch-size {p} is larger than the {shape[1]}x{shape[2]} image")
        return p

    def regions(self) -> int | None:
        return None if self.all_regions else int(self.params.regions_evaluation)

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        kw = {"patch_size": self.patch(inp), **self.baseline_kwargs(inp)}
        if not self.all_regions:
            kw.update(order=self._order, regions_evaluation=self.params.regions_evaluation)
        return kw

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        areas = []
        for order in self.orders:
            self._order = order
            areas.append(super()._run(inp, idx, extra, draw_offset))
        return areas[0] if len(areas) == 1 else areas[0] - areas[1]

    def from_quantus(self, out: Any, n: int) -> np.ndarray:
        return auc(np.asarray(out, dtype=np.float64).reshape(n, -1))

    def score_native(self, inp: MetricInput) -> np.ndarray:
        n = len(inp.x)
        p = self.patch(inp)
        chunking = self.chunking(inp)
        a_norm = _normalised(inp.a)
        x_flat = torch.as_tensor(inp.x, device=inp.device).reshape(n, -1)
        base = flat_baseline(x_flat, self.params.baseline)
        y0 = clean_outputs(inp, self.params.softmax, chunking) if self.drop_curve else None
        areas = []
        for order in self.orders:
            step_of, k = region_steps(a_norm, p, order, self.regions())
            build = cumulative_builder(inp, step_of, lambda idx, rows, pairs: base[idx[rows]][:, None])
            outs = replaced_outputs(inp, k, build, self.params.softmax, chunking)
            areas.append(auc(y0[:, None] - outs if y0 is not None else outs))
        self.progress(n)
        return areas[0] if len(areas) == 1 else areas[0] - areas[1]


@register("region_perturbation", category="faithfulness", direction="higher", label="RP",
          source="Samek et al. 2016 (IEEE TNNLS 28(11)), quantus.RegionPerturbation order=morf (AUC per sample)")
class RegionPerturbation(_Regions):
    """MoRF: area under f(x) - f(x_k) as the most relevant patches are replaced first."""

    Params = RegionParams
    quantus_name = "RegionPerturbation"


@register("region_perturbation_lerf", category="faithfulness", direction="lower", label="RP-L",
          source="Samek et al. 2016, quantus.RegionPerturbation order=lerf (AUC per sample)")
class RegionPerturbationLeRF(_Regions):
    """LeRF: area under f(x) - f(x_k) as the least relevant patches are replaced first."""

    Params = RegionParams
    quantus_name = "RegionPerturbation"
    orders = ("lerf",)


@register("region_perturbation_symmetric", category="faithfulness", direction="higher", label="RP-S",
          source="MoRF - LeRF areas of quantus.RegionPerturbation (Samek et al. 2016)")
class RegionPerturbationSymmetric(_Regions):
    """MoRF area - LeRF area of the same patches and baseline."""

    Params = RegionParams
    quantus_name = "RegionPerturbation"
    orders = ("morf", "lerf")


@dataclass
class SelectivityParams:
    patch_size: int = 0  # 0 = auto: min(H, W) // 8 (64 patches); Quantus' 8 is sized for 224 x 224
    baseline: str = "black"
    softmax: bool = True  # Quantus' default for this metric

    def __post_init__(self) -> None:
        require(self.patch_size >= 0, f"--patch-size must be >= 0, got {self.patch_size}")
        require_cumulative(self.baseline)


@register("selectivity", category="faithfulness", direction="lower", label="Sel",
          source="Montavon et al. 2018 (Digital Signal Processing 73), quantus.Selectivity (AUC per sample)")
class Selectivity(_Regions):
    """Area under f(x_k)[y] as every patch is replaced in descending attribution order."""

    Params = SelectivityParams
    quantus_name = "Selectivity"
    drop_curve = False
    all_regions = True


# --- Monotonicity Correlation ---------------------------------------------------------------------


@dataclass
class MonotonicityParams:
    nr_samples: int = 100  # Quantus default: replacements per step
    # Features per step; 0 = auto (at most 64 steps). Quantus' 1 with 100 samples is 307,200
    # forward passes per CIFAR-10 image.
    features_in_step: int = 0
    baseline: str = "uniform"  # Quantus default: one U(value range) value per replacement
    eps: float = 1e-5  # Quantus: |f(x)| below eps is not divided by
    softmax: bool = True  # Quantus' default for this metric

    def __post_init__(self) -> None:
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.features_in_step >= 0, f"--features-in-step must be >= 0, got {self.features_in_step}")
        require(self.baseline in ("uniform", "black", "white", "mean"), "--baseline must be uniform, black, white or mean")
        require(self.eps > 0, f"--eps must be > 0, got {self.eps}")


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho per row (average ranks for ties; NaN for a constant row, as scipy)."""
    ra = torch.as_tensor(scipy.stats.rankdata(a, axis=1))
    rb = torch.as_tensor(scipy.stats.rankdata(b, axis=1))
    return native.pearson_rows(ra, rb)


@register("monotonicity_correlation", category="faithfulness", direction="higher", label="MC",
          source="Nguyen & Martinez 2020 (arXiv 2007.07584), quantus.MonotonicityCorrelation", draws=True)
class MonotonicityCorrelation(_Faithfulness):
    """Spearman rho between each step's |a| mass and the output variance when those features alone
    are replaced (ascending |a| order)."""

    Params = MonotonicityParams
    quantus_name = "MonotonicityCorrelation"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.per_sample = params.baseline == "uniform"  # Quantus draws it from the global numpy RNG
        self.draws_override: np.ndarray | None = None  # tests: (N, steps, nr_samples) uniform values

    def step(self, inp: MetricInput) -> int:
        return features_in_step(self.params.features_in_step, tuple(inp.x.shape[1:]))

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {"nr_samples": self.params.nr_samples, "features_in_step": self.step(inp), "eps": self.params.eps,
                "abs": True, "normalise": True, **self.baseline_kwargs(inp)}

    def steps(self, inp: MetricInput) -> int:
        return math.ceil(int(np.prod(inp.x.shape[1:])) / self.step(inp))

    def reference_draws(self, inp: MetricInput) -> np.ndarray:
        """The uniform values the Quantus path draws for each sample (its global seed, in its
        order: step by step, one value per replacement)."""
        t, k = self.steps(inp), self.params.nr_samples
        return reference_uniform(inp, self.name(), t * k).reshape(-1, t, k)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        n = len(inp.x)
        d = int(np.prod(inp.x.shape[1:]))
        s, t, k = self.step(inp), self.steps(inp), self.params.nr_samples
        a = np.abs(_normalised(inp.a)).reshape(n, -1)
        order = np.argsort(a, axis=1)
        step_of = np.empty((n, d), dtype=np.int64)
        np.put_along_axis(step_of, order, np.arange(d)[None].repeat(n, 0) // s, axis=1)
        rows = np.arange(n)[:, None]  # Quantus' sums, indexed as it does (the layout fixes the rounding)
        atts = np.stack([a[rows, order[:, j * s : (j + 1) * s]].sum(axis=1) for j in range(t)], axis=1)
        device = inp.device
        x_all = torch.as_tensor(inp.x, device=device).reshape(n, -1)
        steps_t = torch.as_tensor(step_of, device=device)
        # one value per replacement (features outside the step are intact)
        values = replacement_values(inp, self.name(), self.params.baseline, x_all, t * k, self.draws_override)

        def build(idx: Tensor, rows: Tensor, pairs: Tensor) -> Tensor:
            sample = idx[rows]
            x = x_all[sample]
            mask = steps_t[sample] == (pairs // k)[:, None]
            return torch.where(mask, values[sample, pairs][:, None].expand_as(x), x)

        chunking = self.chunking(inp)
        y0 = clean_outputs(inp, self.params.softmax, chunking)
        outs = replaced_outputs(inp, t * k, build, self.params.softmax, chunking, self.progress).reshape(n, t, k)
        inv = np.where(np.abs(y0) >= self.params.eps, 1.0 / np.abs(y0).astype(np.float64), 1.0) ** 2
        var = np.mean((outs - y0[:, None, None]) ** 2, axis=2) * inv[:, None]
        return spearman_rows(atts, var)


# --- Infidelity ------------------------------------------------------------------------------------


@dataclass
class InfidelityParams:
    patch_size: int = 4  # Quantus default (perturb_patch_sizes=[4]); must divide H and W
    nr_samples: int = 10  # Quantus n_perturb_samples (repetitions; identical with the black baseline)
    baseline: str = "black"  # Quantus default; uniform: one U(value range) value per replaced patch
    softmax: bool = False  # Quantus' default for this metric: logits

    def __post_init__(self) -> None:
        require(self.patch_size >= 1, f"--patch-size must be >= 1, got {self.patch_size}")
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.baseline in ("black", "white", "uniform"), "--baseline must be black, white or uniform")


@register("infidelity", category="faithfulness", direction="lower", label="INFD",
          source="Yeh et al. 2019 (NeurIPS, arXiv 1901.09392), quantus.Infidelity; = captum.metrics.infidelity(normalize=False)")
class Infidelity(_Faithfulness):
    """Mean over cumulative patch removals I_k = x - x_k of (sum(a * I_k) - (f(x) - f(x_k)))^2."""

    Params = InfidelityParams
    quantus_name = "Infidelity"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.per_sample = params.baseline == "uniform"  # drawn from the global numpy RNG inside Quantus
        self.draws_override: np.ndarray | None = None  # tests: (N, nr_samples, patches) uniform values

    def patches(self, inp: MetricInput) -> int:
        shape = tuple(inp.x.shape[1:])
        _require_image("infidelity", shape)
        p = self.params.patch_size
        # Quantus 0.6 pads the patch grid but perturbs the unpadded input: only exact tilings work.
        require(shape[1] % p == 0 and shape[2] % p == 0,
                f"infidelity: --patch-size {p} must divide the {shape[1]}x{shape[2]} image")
        return (shape[1] // p) * (shape[2] // p)

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        self.patches(inp)
        reps = self.params.nr_samples if self.params.baseline == "uniform" else 1  # black/white: identical repetitions
        return {"perturb_patch_sizes": [self.params.patch_size], "n_perturb_samples": reps, **self.baseline_kwargs(inp)}

    def repetitions(self) -> int:
        return self.params.nr_samples if self.params.baseline == "uniform" else 1

    def reference_draws(self, inp: MetricInput) -> np.ndarray:
        """The uniform values the Quantus path draws per sample: repetition by repetition, one per patch."""
        k, m = self.repetitions(), self.patches(inp)
        return reference_uniform(inp, self.name(), k * m).reshape(-1, k, m)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        n = len(inp.x)
        shape = tuple(inp.x.shape[1:])
        m, k = self.patches(inp), self.repetitions()
        p = self.params.patch_size
        _, patch_of, _, _ = patch_layout(shape, p)
        device = inp.device
        x_all = torch.as_tensor(inp.x, device=device).reshape(n, -1)
        a_all = torch.as_tensor(inp.a, device=device).reshape(n, -1).double()
        patch_t = torch.as_tensor(patch_of, device=device)
        steps_t = patch_t[None].expand(n, -1)  # raster order: patch j is replaced at step j
        values = replacement_values(inp, self.name(), self.params.baseline, x_all, k * m, self.draws_override).reshape(n, k, m)

        def perturbed(idx: Tensor, rows: Tensor, pairs: Tensor) -> Tensor:
            sample = idx[rows]
            x = x_all[sample]
            rep, step = pairs // m, pairs % m
            fill = values[sample, rep][:, patch_t]  # (P, d): each feature's patch value of this repetition
            return torch.where(steps_t[sample] <= step[:, None], fill, x)

        chunking = self.chunking(inp)
        y0 = clean_outputs(inp, self.params.softmax, chunking)
        outs = replaced_outputs(inp, k * m, perturbed, self.params.softmax, chunking, self.progress)
        # I_k^T a from the same perturbed inputs, without another pass: rebuild them per chunk.
        dots = np.empty((n, k * m))
        for idx in chunking.sample_chunks(n, bytes_per_sample=k * m * x_all.shape[1] * 8):
            c = len(idx)
            it = torch.as_tensor(idx, device=device)
            rows = torch.arange(c, device=device).repeat_interleave(k * m)
            pairs = torch.arange(k * m, device=device).repeat(c)
            xp = perturbed(it, rows, pairs)
            diff = (x_all[it[rows]] - xp).double()  # I = x - x', float32 difference as Quantus
            dots[idx] = (diff * a_all[it[rows]]).sum(1).view(c, k * m).cpu().numpy()
        deltas = (y0[:, None] - outs).astype(np.float64)
        return np.mean((deltas - dots) ** 2, axis=1)
