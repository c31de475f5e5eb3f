"""The NsLoss paper's seven explanation-quality metrics, computed with Quantus 0.6.

Every metric is registered with ``category`` (sensitivity / faithfulness / complexity),
``direction`` (which way is better) and ``label`` (the paper's column header); reports read them.

Defaults (see also ``xairobust.metrics.presets`` and docs/i4x.md):

* Counts (``nr_samples`` 200, ``nr_runs`` 100) and formulas (norms, similarity functions,
  ``abs``/``normalise`` switches) are Quantus' defaults: the NsLoss paper says it used Quantus
  and states no override.
* Perturbation sizes are ours, in the model's input space ([0, 1] pixels): Quantus' default
  sensitivity radius 0.2 (51/255) is six times the usual L-inf attack budget of 8/255 and
  changes many predictions; we use ``radius = 8/255`` (uniform L-inf noise, the budget
  robustness claims are made about) and an LLE Gaussian std of ``4/255`` (about 95 % of pixel
  changes inside 8/255).
* Feature counts that Quantus sets for 224x224 ImageNet inputs are scaled to the input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from xairobust.config import require
from xairobust.metrics import native
from xairobust.metrics._quantus import FixedNoise, QuantusMetric, RowNoise, chunked, sample_rng
from xairobust.metrics.base import MetricInput
from xairobust.perturb import DEFAULT_EPS
from xairobust.registry import METRICS

DEFAULT_RADIUS = DEFAULT_EPS  # 8/255, the attacks' default radius (see the module doc)
DEFAULT_LLE_STD = 4 / 255


def register(name: str, **meta: Any):
    """METRICS.register that also records the name on the class (for its random streams)."""

    def deco(cls: type) -> type:
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.category = meta["category"]
        cls.direction = meta["direction"]
        return METRICS.register(name, **meta)(cls)

    return deco


# --- sensitivity ------------------------------------------------------------------------------


@dataclass
class SensitivityParams:
    nr_samples: int = 200  # Quantus default
    radius: float = DEFAULT_RADIUS  # L-inf radius of the uniform input noise (our choice, see module doc)
    drop_changed: bool = False  # NaN (dropped) for samples whose prediction changes under any perturbation
    clip: bool = True  # keep perturbed inputs inside the dataset's value range
    noise_floor: bool = True  # stochastic explainers: also score at zero perturbation

    def __post_init__(self) -> None:
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.radius > 0, f"--radius must be > 0, got {self.radius}")


@dataclass
class LLEParams:
    nr_samples: int = 200  # Quantus default
    perturb_std: float = DEFAULT_LLE_STD  # Gaussian noise std (our choice; Quantus' 0.1 is 25/255)
    drop_changed: bool = False
    clip: bool = True
    noise_floor: bool = True  # stochastic explainers: also the floor (see native.lle_floor)

    def __post_init__(self) -> None:
        require(self.nr_samples >= 1, f"--nr-samples must be >= 1, got {self.nr_samples}")
        require(self.perturb_std > 0, f"--perturb-std must be > 0, got {self.perturb_std}")


class _Sensitivity(QuantusMetric):
    sensitivity = True
    noise_kind: ClassVar[str] = "uniform"

    def noise_scale(self) -> float:
        return self.params.radius

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {
            "nr_samples": self.params.nr_samples,
            "return_nan_when_prediction_changes": self.params.drop_changed,
        }

    def rngs(self, inp: MetricInput, idx: np.ndarray, tag: str) -> list[np.random.Generator]:
        return [sample_rng(inp.seed, tag, inp.indices[i]) for i in idx]

    # Native: which statistic of which per-perturbation ratio (see native.perturbed_ratios).
    stream: ClassVar[str] = "sensitivity"
    ratio: ClassVar[str] = "raw"
    statistic: ClassVar[str] = "max"
    FLOOR_WHAT: ClassVar[str] = "the same metric at zero input perturbation: explainer noise alone"

    def chunk_extra(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        value_range = inp.value_range if self.params.clip else None
        if self.noise_override is not None:
            return {"perturb_func": FixedNoise(self.noise_override[idx], value_range)}
        noise = RowNoise(self.rngs(inp, idx, self.name()), self.noise_kind, self.noise_scale(), value_range)
        return {"perturb_func": noise}

    def wants_floor(self, inp: MetricInput) -> bool:
        return bool(getattr(inp.explain, "stochastic", False)) and bool(getattr(self.params, "noise_floor", False))

    def record_floor(self, floor: np.ndarray) -> None:
        self._diag["noise_floor"] = {
            "mean": float(np.nanmean(floor)),
            "std": float(np.nanstd(floor)),
            "per_sample": [float(v) for v in floor],
            "what": self.FLOOR_WHAT,
        }

    def after_score(self, inp: MetricInput, scores: np.ndarray) -> None:
        if self.params.drop_changed:
            self._diag["dropped_prediction_changed"] = int(np.isnan(scores).sum())
        if self.wants_floor(inp):
            self.record_floor(self.noise_floor(inp))

    # -- native ---------------------------------------------------------------------------------
    def perturb_spec(self) -> native.PerturbSpec:
        p = self.params
        return native.PerturbSpec(self.stream, self.noise_kind, float(self.noise_scale()), int(p.nr_samples), bool(p.clip), bool(p.drop_changed))

    def reduce(self, ratios: np.ndarray) -> np.ndarray:
        """Quantus' np.max / np.mean over perturbations (NaN if any perturbation was dropped)."""
        return ratios.max(1) if self.statistic == "max" else ratios.mean(1)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        chunking = self.chunking(inp)
        rex = self.reexplainer(inp, chunking)
        spec = self.perturb_spec()
        key = ("perturbed", spec, id(inp), None if self.noise_override is None else id(self.noise_override))
        if key not in self.shared:
            # every relative-stability ratio any metric of this run wants from the same draws
            relative = frozenset(self.shared.get(("relative", spec), ()))
            self.shared[key] = native.perturbed_ratios(inp, spec, rex, chunking, self.noise_override, self.progress, relative)
        else:
            self.progress(len(inp.x))
        found = self.shared[key]
        ratios = np.where(found["changed"], np.nan, found[self.ratio])
        scores = self.reduce(ratios)
        if self.wants_floor(inp):
            self.record_floor(self.native_floor(inp, chunking, rex, found))
        return scores

    def floor_numerators(self, inp: MetricInput, chunking, rex) -> dict[str, np.ndarray]:
        key = ("floor", int(self.params.nr_samples), id(inp))
        if key not in self.shared:
            self.shared[key] = native.floor_numerators(inp, int(self.params.nr_samples), rex, chunking)
        return self.shared[key]

    def native_floor(self, inp: MetricInput, chunking, rex, found: dict[str, np.ndarray]) -> np.ndarray:
        return self.reduce(self.floor_numerators(inp, chunking, rex)["raw"])

    def noise_floor(self, inp: MetricInput) -> np.ndarray:
        """The metric with unperturbed inputs: re-explaining the same x with fresh draws."""
        out = np.empty(len(inp.x))
        for idx in chunked(len(inp.x), self.batch_size):
            noise = RowNoise(self.rngs(inp, idx, "noise_floor"), "none", 0.0, None)
            extra = {"perturb_func": noise, "return_nan_when_prediction_changes": False}
            # Draw numbers far from the main run's, so the floor uses independent explainer draws.
            out[idx] = self._run(inp, idx, extra, draw_offset=1_000_000)
        return out


@register("max_sensitivity", category="sensitivity", direction="lower", label="Max")
class MaxSensitivity(_Sensitivity):
    """Yeh et al. 2019: max over perturbations of ||a(x) - a(x')|| / ||a(x)|| (Frobenius)."""

    Params = SensitivityParams
    quantus_name = "MaxSensitivity"


@register("avg_sensitivity", category="sensitivity", direction="lower", label="Avg")
class AvgSensitivity(_Sensitivity):
    """Yeh et al. 2019: the mean of the same ratio over perturbations."""

    Params = SensitivityParams
    quantus_name = "AvgSensitivity"
    statistic = "mean"


@register("local_lipschitz_estimate", category="sensitivity", direction="lower", label="LL")
class LocalLipschitzEstimate(_Sensitivity):
    """Alvarez-Melis & Jaakkola 2018: max over perturbations of ||a(x) - a(x')|| / ||x - x'||.

    Attributions are max-normalised per sample first (Quantus' default ``normalise=True``).
    Noise floor: with x' = x the ratio would divide by zero, so the floor holds LLE's radius fixed
    and takes the explainer's own variation at x as numerator (``native.lle_floor``).
    """

    Params = LLEParams
    quantus_name = "LocalLipschitzEstimate"
    noise_kind = "gaussian"
    stream = "local_lipschitz_estimate"
    ratio = "lipschitz"
    FLOOR_WHAT = (
        "max_k ||n(a) - n(a_k(x))|| / ||x - x'_k||: the explainer's own variation at the unperturbed input"
        " (fresh draws k) over the distance of LLE's k-th perturbation (the radius held fixed)"
    )

    def native_floor(self, inp: MetricInput, chunking, rex, found: dict[str, np.ndarray]) -> np.ndarray:
        return native.lle_floor(self.floor_numerators(inp, chunking, rex)["normalised"], found["dist"])

    def noise_floor(self, inp: MetricInput) -> np.ndarray:
        """Quantus engine: the same definition; distances of the Quantus path's own draws."""
        chunking = self.chunking(inp)
        rex = self.reexplainer(inp, chunking)
        d = int(np.prod(inp.x.shape[1:]))
        dist = np.empty((len(inp.x), self.params.nr_samples))
        for row, i in enumerate(range(len(inp.x))):
            if self.noise_override is not None:
                noise = self.noise_override[i].reshape(self.params.nr_samples, d)
            else:
                rng = sample_rng(inp.seed, self.name(), inp.indices[i])
                noise = np.stack([rng.normal(0.0, self.noise_scale(), d) for _ in range(self.params.nr_samples)])
            x = inp.x[i].reshape(1, d)
            xp = x + noise.astype(x.dtype)
            if self.params.clip and inp.value_range is not None:
                xp = np.clip(xp, *inp.value_range)
            dist[row] = np.linalg.norm((x - xp).astype(np.float64), axis=1)
        return native.lle_floor(self.floor_numerators(inp, chunking, rex)["normalised"], dist)

    def noise_scale(self) -> float:
        return self.params.perturb_std

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {**super().quantus_kwargs(inp, idx), "perturb_std": self.params.perturb_std}


# --- faithfulness -----------------------------------------------------------------------------


def _n_features(inp: MetricInput) -> int:
    return int(np.prod(inp.x.shape[1:]))


@dataclass
class FaithCorrParams:
    nr_runs: int = 100  # Quantus default
    # Features replaced per run; 0 = auto: Quantus' 224 when inputs have >= 8 * 224 features
    # (its default is sized for 224x224 images), else 1/8 of the features (8 of 64 on digits).
    subset_size: int = 0
    baseline: str = "black"  # Quantus perturb_baseline: black = per-sample min (0 for [0, 1] images)
    softmax: bool = False  # Quantus default: logits

    def __post_init__(self) -> None:
        require(self.nr_runs >= 2, f"--nr-runs must be >= 2 (a correlation needs two points), got {self.nr_runs}")
        require(self.subset_size >= 0, f"--subset-size must be >= 0, got {self.subset_size}")
        require(self.baseline in ("black", "white", "mean", "uniform"), "--baseline must be black, white, mean or uniform")


def auto_subset_size(n_features: int) -> int:
    return 224 if n_features >= 8 * 224 else max(1, n_features // 8)


@register("faithfulness_correlation", category="faithfulness", direction="higher", label="Corr")
class FaithfulnessCorrelation(QuantusMetric):
    """Bhatt et al. 2020: Pearson correlation, over random feature subsets, between the
    attribution mass of the subset and the output drop when the subset is replaced."""

    Params = FaithCorrParams
    quantus_name = "FaithfulnessCorrelation"
    per_sample = True  # its subsets come from np.random.choice inside Quantus

    def size(self, inp: MetricInput) -> int:
        size = self.params.subset_size or auto_subset_size(_n_features(inp))
        require(size < _n_features(inp), f"faithfulness_correlation: --subset-size {size} must be below the {_n_features(inp)} input features")
        return size

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        p = self.params
        return {"nr_runs": p.nr_runs, "subset_size": self.size(inp), "perturb_baseline": p.baseline}

    def score_native(self, inp: MetricInput) -> np.ndarray:
        import torch

        p = self.params
        if self.subsets_override is not None:
            fixed = self.subsets_override
            groups = lambda idx: torch.as_tensor(fixed[idx], dtype=torch.int64)  # noqa: E731
        else:
            groups = native.correlation_subsets(inp, p.nr_runs, self.size(inp))

        def uniform_values(idx: np.ndarray, runs: int) -> torch.Tensor:
            vals = []
            for i in idx:  # a stream apart from the subsets' (tag + 1000)
                g = native.generator(inp.device, inp.seed, native.NATIVE_TAGS["faithfulness_correlation"] + 1000, int(inp.indices[i]))
                vals.append(torch.rand(runs, generator=g, device=inp.device))
            return torch.stack(vals)

        return native.replacement_correlation(inp, groups, p.baseline, p.softmax, self.chunking(inp), uniform_values, self.progress)

    def call_kwargs(self, inp: MetricInput) -> dict[str, Any]:
        return {"softmax": self.params.softmax}


@dataclass
class FaithEstParams:
    # Features removed per step; 0 = auto: ceil(features / 64), i.e. at most 64 steps
    # (1 on digits = Quantus' default; Quantus' 1 would mean 150k forward passes on ImageNette).
    features_in_step: int = 0
    baseline: str = "black"
    softmax: bool = False

    def __post_init__(self) -> None:
        require(self.features_in_step >= 0, f"--features-in-step must be >= 0, got {self.features_in_step}")
        # 'uniform' would draw from the global RNG per batch: not batch-size invariant.
        require(self.baseline in ("black", "white", "mean"), "--baseline must be black, white or mean")


def features_in_step(given: int, input_shape: tuple[int, ...]) -> int:
    """The Faithfulness Estimate step for inputs of ``input_shape`` (C, H, W) / (C, L) / (F,).

    Quantus 0.6 removes features of all channels in attribution order but asserts that the step
    divides the number of *positions* (the product of the shape after the channel axis: 1024 on
    CIFAR-10, 25,600 on ImageNette-160), not the number of features. Auto (``given == 0``): the
    smallest divisor of the positions that is >= ceil(features / 64), i.e. at most 64 steps
    (1 on digits, 64 on CIFAR-10 -> 48 steps, 1280 on ImageNette-160 -> 60 steps); when that
    leaves fewer than 8 steps (positions with no divisor near the target, e.g. 313 x 149 = 46,637
    on Soundtracks), the largest divisor below the target (313 -> 149 steps). A given step
    that does not divide the positions is a ConfigError naming the option.
    """
    features = int(np.prod(input_shape))
    positions = int(np.prod(input_shape[1:])) if len(input_shape) > 1 else 1
    if given:
        require(
            positions % given == 0,
            f"faithfulness_estimate: --features-in-step {given} must divide the {positions} positions of a"
            f" {'x'.join(map(str, input_shape))} input (Quantus steps over channels x positions)",
        )
        return given
    target = max(1, math.ceil(features / 64))
    divisors = [d for d in range(1, positions + 1) if positions % d == 0]
    step = next(d for d in divisors if d >= target)
    if features // step < 8:  # too few points for a correlation (e.g. 313 x 149 spectrograms)
        step = max(d for d in divisors if d < target) if target > 1 else step
    return step


@register("faithfulness_estimate", category="faithfulness", direction="higher", label="Est")
class FaithfulnessEstimate(QuantusMetric):
    """Alvarez-Melis & Jaakkola 2018: Pearson correlation, over features in order of attribution,
    between each feature group's attribution and the output drop when that group alone is replaced."""

    Params = FaithEstParams
    quantus_name = "FaithfulnessEstimate"

    def step(self, input_shape: tuple[int, ...]) -> int:
        return features_in_step(self.params.features_in_step, input_shape)

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {"features_in_step": self.step(tuple(inp.x.shape[1:])), "perturb_baseline": self.params.baseline}

    def call_kwargs(self, inp: MetricInput) -> dict[str, Any]:
        return {"softmax": self.params.softmax}

    def score_native(self, inp: MetricInput) -> np.ndarray:
        groups = native.estimate_groups(inp.a, self.step(tuple(inp.x.shape[1:])))
        p = self.params
        return native.replacement_correlation(inp, groups, p.baseline, p.softmax, self.chunking(inp), None, self.progress)


# --- complexity -------------------------------------------------------------------------------


@register("complexity", category="complexity", direction="lower", label="Comp")
class Complexity(QuantusMetric):
    """Bhatt et al. 2020: entropy of the fractional contributions |a_i| / sum |a|."""

    quantus_name = "Complexity"

    def score_native(self, inp: MetricInput) -> np.ndarray:
        self.progress(len(inp.x))
        return native.complexity(inp.a, inp.device)


@register("sparseness", category="complexity", direction="higher", label="Spr")
class Sparseness(QuantusMetric):
    """Chalasani et al. 2020: Gini index of |a|."""

    quantus_name = "Sparseness"

    def score_native(self, inp: MetricInput) -> np.ndarray:
        self.progress(len(inp.x))
        return native.sparseness(inp.a, inp.device)

