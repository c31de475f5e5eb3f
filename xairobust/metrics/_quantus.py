"""The wrapper that makes Quantus scores per sample, seeded and independent of batch size.

Three things in Quantus 0.6 make its numbers depend on how samples are batched:

* ``normalise_by_max`` divides every attribution by the maximum over the whole batch;
  we pass ``normalise_per_sample`` instead.
* perturbations are drawn from the global numpy RNG, so a sample's noise depends on its
  position in the batch; the sensitivity metrics get ``RowNoise``, a perturbation function
  with one generator per sample (seeded from the score seed, the metric and the sample's
  test-split index), which draws each row's noise from that row's generator only.
* metrics that draw inside Quantus code we cannot replace (Faithfulness Correlation picks its
  random feature subsets with ``np.random.choice``) are called one sample at a time with the
  global RNG seeded for that sample (and restored afterwards).

Sensitivity metrics re-explain perturbed inputs through ``MetricInput.explain``, i.e. with the
explainer and parameters of the attributions being scored (Quantus' own ``explain`` would use
its default method).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from xairobust.metrics.base import Metric, MetricInput

# Tags keep the random streams of different metrics apart (same seed, different metric).
_TAGS = {
    "max_sensitivity": 1,
    "avg_sensitivity": 2,
    "local_lipschitz_estimate": 3,
    "faithfulness_correlation": 4,
    "noise_floor": 5,
    "relative_input_stability": 21,
    "relative_output_stability": 22,
    "relative_representation_stability": 23,
    "mprt": 31,
    "efficient_mprt": 32,
    "random_logit": 33,
}


def normalise_per_sample(a: np.ndarray, normalise_axes: Any = None, **_: Any) -> np.ndarray:
    """Divide each sample's attribution by its own max |a| (all-zero samples stay zero)."""
    flat = np.abs(a.reshape(len(a), -1))
    peak = flat.max(axis=1) if flat.size else np.zeros(len(a))
    peak = np.where(peak == 0, 1.0, peak)
    return a / peak.reshape((-1,) + (1,) * (a.ndim - 1))


def sample_rng(seed: int, tag: str, index: int) -> np.random.Generator:
    """The generator of one sample's perturbations for one metric."""
    return np.random.default_rng([int(seed), _TAGS[tag], int(index)])


def sample_global_seed(seed: int, tag: str, index: int) -> int:
    """A 32-bit seed for the global numpy RNG (metrics that draw inside Quantus)."""
    return int(sample_rng(seed, tag, index).integers(0, 2**32 - 1))


class FixedNoise:
    """Quantus perturbation function returning given noise: call k adds ``noise[:, k]`` (tests
    feed identical draws to both engines with it)."""

    def __init__(self, noise: np.ndarray, value_range: tuple[float, float] | None) -> None:
        self.noise, self.value_range, self.k = noise, value_range, 0

    def __call__(self, arr: np.ndarray, indices: Any = None, **_: Any) -> np.ndarray:
        out = arr + self.noise[:, self.k].reshape(len(arr), -1).astype(arr.dtype)
        self.k += 1
        return out if self.value_range is None else np.clip(out, *self.value_range)


class RowNoise:
    """Quantus perturbation function drawing each row's noise from that row's own generator.

    ``kind`` is "uniform" (U(-scale, scale) per feature, like Quantus' batch_uniform_noise) or
    "gaussian" (N(0, scale^2), like batch_gaussian_noise) or "none" (the noise floor).
    Perturbed inputs are clipped to ``value_range`` when given, so they stay valid images.
    """

    def __init__(
        self,
        rngs: list[np.random.Generator],
        kind: str,
        scale: float,
        value_range: tuple[float, float] | None,
    ) -> None:
        self.rngs, self.kind, self.scale, self.value_range = rngs, kind, scale, value_range

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "uniform":
            return rng.uniform(-self.scale, self.scale, n)
        if self.kind == "gaussian":
            return rng.normal(0.0, self.scale, n)
        return np.zeros(n)

    def __call__(self, arr: np.ndarray, indices: Any = None, **_: Any) -> np.ndarray:
        noise = np.stack([self.draw(r, arr.shape[1]) for r in self.rngs]).astype(arr.dtype)
        out = arr + noise
        if self.value_range is not None and self.kind != "none":
            out = np.clip(out, *self.value_range)
        return out


def chunked(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(n, s + size)) for s in range(0, n, max(1, size))]


class QuantusMetric(Metric):
    """Base of the seven adapters: chunking, seeding, normalisation, call bookkeeping.

    Subclasses give ``quantus_class`` and ``quantus_kwargs``; sensitivity metrics also give
    ``noise`` (kind, scale) and ``sensitivity = True``.
    """

    quantus_name: ClassVar[str] = ""
    per_sample: ClassVar[bool] = False  # draws from np.random inside Quantus: one call per sample
    sensitivity: ClassVar[bool] = False
    batch_size: int = 64  # samples per chunk; set by the score stage, never changes scores
    on_chunk: Callable[[int], None] | None = None  # progress callback(samples done in chunk)

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self._diag: dict[str, Any] = {}
        # "native" (xairobust.metrics.native, the default) or "quantus" (this module, the reference)
        self.engine: str = "native"
        self.points_per_pass: int = 0  # native: model points per pass (0 = from the memory budget)
        # native: results shared between metrics of one score run (Max/Avg draws, noise floors)
        self.shared: dict[Any, Any] = {}
        # tests: identical draws for both engines ((N, K, *shape) noise, (N, runs, size) subsets)
        self.noise_override: np.ndarray | None = None
        self.subsets_override: np.ndarray | None = None

    # -- to override -------------------------------------------------------------------------
    def quantus_class(self) -> type:
        import quantus

        return getattr(quantus, self.quantus_name)

    def quantus_kwargs(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {}

    def call_kwargs(self, inp: MetricInput) -> dict[str, Any]:
        return {}

    # -- machinery ---------------------------------------------------------------------------
    def name(self) -> str:
        return type(self).registry_name  # type: ignore[attr-defined]

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        kwargs = {
            "normalise_func": normalise_per_sample,
            "disable_warnings": True,
            "display_progressbar": False,
            "return_aggregate": False,
            **self.quantus_kwargs(inp, idx),
            **extra,
        }
        metric = self.quantus_class()(**kwargs)
        call = dict(
            model=inp.model,
            x_batch=inp.x[idx],
            y_batch=inp.y[idx],
            a_batch=inp.a[idx].copy(),  # Quantus modifies attributions in place (Sparseness)
            device=str(inp.device),
            batch_size=len(idx),
            channel_first=True,
            **self.call_kwargs(inp),
        )
        if self.sensitivity:
            call["explain_func"] = _explain_func(inp, inp.indices[idx], draw_offset)
        with warnings.catch_warnings():
            # Quantus warns on every call about its parameterisation and unchanged inputs.
            warnings.simplefilter("ignore")
            if self.per_sample:
                (i,) = idx
                state = np.random.get_state()
                np.random.seed(sample_global_seed(inp.seed, self.name(), inp.indices[i]))
                try:
                    out = metric(**call)
                finally:
                    np.random.set_state(state)
            else:
                out = metric(**call)
        return self.from_quantus(out, len(idx))

    def from_quantus(self, out: Any, n: int) -> np.ndarray:
        """One float per sample from what the Quantus metric returned (curves override this)."""
        return np.asarray(out, dtype=np.float64).reshape(n)

    def score(self, inp: MetricInput) -> np.ndarray:
        if self.engine == "native":
            self._diag = {}
            scores = self.score_native(inp)
            self._diag = {"n": int(len(scores)), "nan": int(np.isnan(scores).sum()), **self._diag}
            if getattr(self.params, "drop_changed", False):
                self._diag["dropped_prediction_changed"] = int(np.isnan(scores).sum())
            return scores
        if self.engine != "quantus":
            raise ValueError(f"unknown engine '{self.engine}' (native or quantus)")
        size = 1 if self.per_sample else self.batch_size
        scores = np.empty(len(inp.x), dtype=np.float64)
        for idx in chunked(len(inp.x), size):
            scores[idx] = self._run(inp, idx, self.chunk_extra(inp, idx))
            if self.on_chunk is not None:
                self.on_chunk(len(idx))
        self._diag = {"n": int(len(scores)), "nan": int(np.isnan(scores).sum())}
        self.after_score(inp, scores)
        return scores

    def chunk_extra(self, inp: MetricInput, idx: np.ndarray) -> dict[str, Any]:
        return {}

    # -- native engine ------------------------------------------------------------------------
    def score_native(self, inp: MetricInput) -> np.ndarray:
        raise NotImplementedError

    def chunking(self, inp: MetricInput):
        from xairobust.metrics.native import Chunking, default_points_per_pass

        ppp = self.points_per_pass or default_points_per_pass(inp.model, tuple(inp.x.shape[1:]), inp.device)
        return Chunking(self.batch_size, ppp)

    def reexplainer(self, inp: MetricInput, chunking):
        from xairobust.metrics.native import Reexplainer

        key = ("reexplainer", id(inp.explain), chunking.points_per_pass)
        if key not in self.shared:
            self.shared[key] = Reexplainer(inp.explain, inp.model, chunking.points_per_pass)
        return self.shared[key]

    def progress(self, k: int) -> None:
        if self.on_chunk is not None:
            self.on_chunk(k)

    def after_score(self, inp: MetricInput, scores: np.ndarray) -> None:
        pass

    def diagnostics(self) -> dict[str, Any]:
        return dict(self._diag)


def _explain_func(inp: MetricInput, indices: np.ndarray, draw_offset: int) -> Callable[..., np.ndarray]:
    """Quantus ``explain_func`` re-explaining with the scored explainer.

    Quantus calls it once per perturbation step for the whole chunk; the k-th call uses draw k
    for every sample, so a stochastic explainer's randomness per (sample, step) does not depend
    on the chunk either.
    """
    counter = itertools.count(draw_offset + 1)

    def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        return inp.explain(model, np.asarray(inputs), np.asarray(targets), indices, draw=next(counter))

    return explain
