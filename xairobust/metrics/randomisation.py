"""Randomisation metrics (issue 18): does the explanation depend on the model at all?

* ``mprt``: Model Parameter Randomisation Test (Adebayo et al. 2018, "Sanity checks for saliency
  maps"), as ``quantus.MPRT`` computes it: the layers (modules with ``reset_parameters``, in
  ``named_modules`` order) are re-initialised cascadingly, top layer first (``layer_order``
  ``top_down``; ``bottom_up`` and ``independent`` as in Quantus), each with
  ``torch.manual_seed(seed + 1)`` before ``reset_parameters()``; after each step the sample is
  re-explained on the randomised copy and compared with its scored attribution by Spearman rank
  correlation of ``|n(a)|`` (n = per-sample max-normalisation; Quantus' ``abs=True,
  normalise=True``). The per-sample score is the similarity after the last step (the fully
  randomised model for a cascade; Quantus' ``return_last_correlation``); the similarity at every
  step, the layer order and the per-layer means are in the metric's diagnostics (score JSON):
  ``layer_order``, ``per_layer_mean``, ``per_layer`` (per sample). Lower is better: an
  explanation that stays the same when the weights are destroyed does not explain the model.
* ``efficient_mprt``: eMPRT (Hedström et al. 2023, "Sanity checks revisited"), as
  ``quantus.EfficientMPRT``: the relative rise in discrete entropy (``np.histogram`` with
  ``n_bins`` equal-width bins, ``scipy.stats.entropy``) of the raw explanation from the original
  model to the fully randomised one, (H_rand - H_orig) / H_orig. Higher is better. With Quantus'
  ``skip_layers=True`` only the fully randomised model is explained, and since every reset is
  seeded alike that model does not depend on the layer order (so there is no order option).
* ``random_logit``: Random Logit test (Sixt et al. 2020), as ``quantus.RandomLogit``: SSIM
  (skimage, uniform 7-window over the flattened map, data range of the pair) between the
  normalised explanation of the explained class and of one other class drawn uniformly at random.
  Lower is better.

Our choices (documented because they change numbers):

* Randomisation seed: the layers are reset under a 32-bit seed derived from the score seed
  (``sample_global_seed(score seed, metric, 0)``), passed as Quantus' ``seed``; the weights do
  not depend on the device (the reset runs on a CPU copy of the module) or on the batch.
  Random Logit's other class comes from a per-sample seed (``sample_global_seed(score seed,
  'random_logit', index)``), so it does not depend on the batch (Quantus seeds once per batch);
  the Quantus path calls Quantus one sample at a time with that seed.
* Explainer draws: re-explanations on the randomised model / at the other class use the
  *stored* attributions' seeds (draw 0 of ``make_explain``): a stochastic explainer then differs
  only because the model (or class) changed, not because of fresh noise. Hence the ``random``
  control, which ignores the model, has MPRT similarity 1 at every layer, like ``sobel``.
* The randomised copies are deep copies made inside the metric; the run's model is never
  modified and nothing is written (tests/test_randomisation.py checks the weights' sha256).
  The global torch and numpy RNG states are restored after each Quantus call (Quantus calls
  ``torch.manual_seed`` and ``np.random.seed``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.metrics import native
from xairobust.metrics._quantus import QuantusMetric, normalise_per_sample, sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import register

LAYER_ORDERS = ("top_down", "bottom_up", "independent")


class QuantusRefused(ConfigError):
    """Quantus' attribution checks (``asserts.assert_attributions``) reject a re-explanation
    (e.g. a map that is all negative at another class): the reference path cannot score it."""


# --- randomised copies ----------------------------------------------------------------------------


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the modules Quantus randomises: every module with ``reset_parameters``."""
    return [name for name, m in model.named_modules() if hasattr(m, "reset_parameters")]


def _reset_on_cpu(module: nn.Module, seed: int) -> None:
    """``torch.manual_seed(seed + 1); module.reset_parameters()`` as Quantus does, but on a CPU
    copy (the same weights on every device) and without touching the global torch RNG."""
    cpu = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        cpu.reset_parameters()
    with torch.no_grad():
        for (_, dst), (_, src) in zip(module.state_dict(keep_vars=True).items(), cpu.state_dict(keep_vars=True).items(), strict=True):
            dst.copy_(src.to(dst.device))


def randomised_models(model: nn.Module, order: str, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Quantus' ``get_random_layer_generator``: (layer name, copy with that layer -- and, when
    cascading, every earlier one in ``order`` -- re-initialised). One copy, mutated per step."""
    original = copy.deepcopy(model.state_dict())
    work = copy.deepcopy(model).eval()
    modules = [(n, m) for n, m in work.named_modules() if hasattr(m, "reset_parameters")]
    if order == "top_down":
        modules = modules[::-1]
    for name, module in modules:
        if order == "independent":
            work.load_state_dict(original)
        _reset_on_cpu(module, seed)
        yield name, work


def randomisation_seed(score_seed: int, metric: str) -> int:
    return sample_global_seed(score_seed, metric, 0)


# --- similarity functions (torch, batched; equal to Quantus' scipy/skimage ones) ------------------


def rank_average(a: Tensor) -> Tensor:
    """Row-wise ranks 1..d with ties averaged (scipy.stats.rankdata 'average'), float64."""
    s = a.sort(1).values
    lo = torch.searchsorted(s, a.contiguous(), right=False)
    hi = torch.searchsorted(s, a.contiguous(), right=True)
    return (lo + hi + 1).double() / 2


def spearman_rows(a: Tensor, b: Tensor) -> np.ndarray:
    """Spearman rank correlation of each row pair (NaN for a constant row, as scipy)."""
    return native.pearson_rows(rank_average(a), rank_average(b))


def ssim_rows(a: Tensor, b: Tensor, win: int = 7) -> np.ndarray:
    """skimage.metrics.structural_similarity of each flattened row pair as Quantus calls it:
    uniform window ``win``, sample covariance, K1 0.01, K2 0.03, data range = max - min of the
    pair, the (win - 1) / 2 border cropped (so the border mode never matters)."""
    a, b = a.double(), b.double()
    require(a.shape[1] >= win, f"random_logit: SSIM needs at least {win} features per sample, got {a.shape[1]}")
    both = torch.cat([a, b], 1)
    r = both.amax(1, keepdim=True) - both.amin(1, keepdim=True)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2

    def mean(t: Tensor) -> Tensor:
        return nn.functional.avg_pool1d(t.unsqueeze(1), win, stride=1).squeeze(1)

    ux, uy = mean(a), mean(b)
    norm = win / (win - 1)
    vx = norm * (mean(a * a) - ux * ux)
    vy = norm * (mean(b * b) - uy * uy)
    vxy = norm * (mean(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(1).cpu().numpy()


def discrete_entropy_rows(a: np.ndarray, n_bins: int) -> np.ndarray:
    """quantus.functions.complexity_func.discrete_entropy per sample (np.histogram + scipy entropy)."""
    flat = a.reshape(len(a), -1)
    return np.array([scipy.stats.entropy(np.histogram(row, bins=n_bins)[0]) for row in flat], dtype=np.float64)


# --- shared machinery -----------------------------------------------------------------------------


def _draw0_explain(inp: MetricInput, indices: np.ndarray) -> Callable[..., np.ndarray]:
    """Quantus ``explain_func`` with the stored attributions' seeds (draw 0; module doc)."""

    def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        return inp.explain(model, np.asarray(inputs), np.asarray(targets), indices, draw=0)

    return explain


class _Randomisation(QuantusMetric):
    """Metrics that re-explain on a changed model or class; the Quantus path restores RNG states."""

    def quantus_call(self, inp: MetricInput, idx: np.ndarray, kwargs: dict[str, Any], call: dict[str, Any]) -> Any:
        metric = self.quantus_class()(
            normalise_func=normalise_per_sample, disable_warnings=True, display_progressbar=False,
            return_aggregate=False, **kwargs,
        )
        state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return metric(
                    model=inp.model, x_batch=inp.x[idx], y_batch=inp.y[idx], a_batch=inp.a[idx].copy(),
                    device=str(inp.device), batch_size=len(idx), channel_first=True,
                    explain_func=_draw0_explain(inp, inp.indices[idx]), **call,
                )
        except AssertionError as err:  # Quantus' checks of the re-explanation (one line, not a traceback)
            raise QuantusRefused(
                f"score: --engine quantus: Quantus' {self.quantus_name} refuses a re-explanation of sample"
                f" {int(inp.indices[idx[0]])}: {err}; use --engine native"
            ) from None
        finally:
            np.random.set_state(state)

    def reexplain(self, inp: MetricInput, model: nn.Module, chunking: native.Chunking, targets: np.ndarray | None = None) -> Tensor:
        """All samples explained on ``model`` (at ``targets``, default the scored ones), draw 0."""
        rex = native.Reexplainer(inp.explain, model, chunking.points_per_pass)
        x_all = torch.as_tensor(inp.x, device=inp.device)
        y_all = torch.as_tensor(inp.y if targets is None else targets, device=inp.device, dtype=torch.int64)
        out = []
        for idx in chunking.sample_chunks(len(inp.x)):
            out.append(rex(x_all[idx], y_all[idx], inp.indices[idx], np.zeros(len(idx), dtype=np.int64)))
        return torch.cat(out)


# --- MPRT -----------------------------------------------------------------------------------------


@dataclass
class MPRTParams:
    layer_order: str = "top_down"  # cascading, top layer first (Adebayo et al.; Quantus' default)

    def __post_init__(self) -> None:
        require(self.layer_order in LAYER_ORDERS, f"--layer-order must be one of {', '.join(LAYER_ORDERS)}, got '{self.layer_order}'")


@register("mprt", category="randomisation", direction="lower", label="MPRT", draws=True,
          source="Adebayo et al. 2018 (NeurIPS), quantus.MPRT (Spearman of |n(a)|, last layer; per layer in diagnostics)")
class MPRT(_Randomisation):
    """Spearman similarity of |explanation| before and after cascading weight randomisation."""

    Params = MPRTParams
    quantus_name = "MPRT"

    def score(self, inp: MetricInput) -> np.ndarray:
        self._per_layer: dict[str, list[np.ndarray]] = {}
        scores = super().score(inp)
        self._diag.update(self._layer_diag(len(inp.x)))
        return scores

    def _layer_diag(self, n: int) -> dict[str, Any]:
        per = {k: np.concatenate(v) for k, v in self._per_layer.items()}
        return {
            "layer_order": list(per),
            "per_layer_mean": [float(np.nanmean(v)) if np.isfinite(v).any() else None for v in per.values()],
            "per_layer": {k: [float(x) for x in v] for k, v in per.items()},
            "what": "Spearman(|n(a)|, |n(a_randomised)|) after randomising each layer in layer_order (cascading unless"
                    " independent); the score is the last entry",
        }

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        seed = randomisation_seed(inp.seed, self.name())
        out = self.quantus_call(inp, idx, {"layer_order": self.params.layer_order, "seed": seed}, {})
        layers = [k for k in out if k != "original"]  # Quantus' first key: the unrandomised model
        for k in layers:
            self._per_layer.setdefault(k, []).append(np.asarray(out[k], dtype=np.float64))
        return np.asarray(out[layers[-1]], dtype=np.float64)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        chunking = self.chunking(inp)
        a = native.normalise(torch.as_tensor(inp.a, device=inp.device)).abs().reshape(len(inp.x), -1)
        seed = randomisation_seed(inp.seed, self.name())
        n_layers = len(randomisable_layers(inp.model))
        require(n_layers > 0, "mprt: the model has no layer with parameters to randomise")
        last = np.full(len(inp.x), np.nan)
        for name, model in randomised_models(inp.model, self.params.layer_order, seed):
            ar = native.normalise(self.reexplain(inp, model, chunking)).abs().reshape(len(inp.x), -1)
            last = spearman_rows(a, ar)
            self._per_layer[name] = [last]
            self.progress(len(inp.x) / n_layers)
        return last


# --- eMPRT ----------------------------------------------------------------------------------------


@dataclass
class EfficientMPRTParams:
    n_bins: int = 100  # Quantus' default when no binning rule is given

    def __post_init__(self) -> None:
        require(self.n_bins >= 2, f"--n-bins must be >= 2, got {self.n_bins}")


@register("efficient_mprt", category="randomisation", direction="higher", label="eMPRT", draws=True,
          source="Hedström et al. 2023 (arXiv 2401.06465), quantus.EfficientMPRT ((H_rand - H_orig) / H_orig, discrete entropy)")
class EfficientMPRT(_Randomisation):
    """Relative rise of the explanation's discrete entropy when every layer is randomised."""

    Params = EfficientMPRTParams
    quantus_name = "EfficientMPRT"

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        kwargs = {"seed": randomisation_seed(inp.seed, self.name()), "complexity_func_kwargs": {"n_bins": self.params.n_bins},
                  "abs": False, "normalise": False}
        return np.asarray(self.quantus_call(inp, idx, kwargs, {"softmax": True}), dtype=np.float64)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        chunking = self.chunking(inp)
        seed = randomisation_seed(inp.seed, self.name())
        require(randomisable_layers(inp.model), "efficient_mprt: the model has no layer with parameters to randomise")
        h0 = discrete_entropy_rows(self.reexplain(inp, inp.model, chunking).cpu().numpy(), self.params.n_bins)
        self.progress(len(inp.x) / 2)
        *_, (_, model) = randomised_models(inp.model, "bottom_up", seed)  # the fully randomised model
        h1 = discrete_entropy_rows(self.reexplain(inp, model, chunking).cpu().numpy(), self.params.n_bins)
        self.progress(len(inp.x) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (h1 - h0) / h0


# --- Random Logit ---------------------------------------------------------------------------------


def other_classes(inp: MetricInput, num_classes: int, metric: str) -> np.ndarray:
    """One class != y per sample, uniformly, from the sample's own seed (Quantus' draw:
    np.random.seed(s); randint(0, num_classes - 1) indexes the classes without y)."""
    out = np.empty(len(inp.y), dtype=np.int64)
    for i, (y, index) in enumerate(zip(inp.y, inp.indices, strict=True)):
        k = int(np.random.RandomState(sample_global_seed(inp.seed, metric, index)).randint(0, num_classes - 1, 1)[0])
        out[i] = k if k < int(y) else k + 1
    return out


def n_classes(inp: MetricInput) -> int:
    with torch.no_grad():
        k = int(inp.model(torch.as_tensor(inp.x[:1], device=inp.device)).shape[1])
    if k < 2:
        raise ConfigError("random_logit: needs a classifier with at least two outputs")
    return k


@dataclass
class RandomLogitParams:
    pass


@register("random_logit", category="randomisation", direction="lower", label="RLogit", draws=True,
          source="Sixt et al. 2020 (ICML), quantus.RandomLogit (SSIM of n(a_y), n(a_other))")
class RandomLogit(_Randomisation):
    """SSIM between the explanation of the explained class and of a random other class."""

    Params = RandomLogitParams
    quantus_name = "RandomLogit"
    per_sample = True  # Quantus path: one call per sample, seeded for that sample (module doc)

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        (i,) = idx
        kwargs = {"num_classes": n_classes(inp), "seed": sample_global_seed(inp.seed, self.name(), inp.indices[i]),
                  "abs": False, "normalise": True}
        return np.asarray(self.quantus_call(inp, idx, kwargs, {}), dtype=np.float64).reshape(1)

    def score_native(self, inp: MetricInput) -> np.ndarray:
        chunking = self.chunking(inp)
        off = other_classes(inp, n_classes(inp), self.name())
        a = native.normalise(torch.as_tensor(inp.a, device=inp.device)).reshape(len(inp.x), -1)
        ao = native.normalise(self.reexplain(inp, inp.model, chunking, off)).reshape(len(inp.x), -1)
        self.progress(len(inp.x))
        return ssim_rows(a, ao)
