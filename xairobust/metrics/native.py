"""The native engine: the seven metrics in torch, on the model's device, batched and capped.

``xairobust score --engine native`` (the default) computes the same quantities as the Quantus
path (``--engine quantus``, the reference; ``xairobust.metrics._quantus``), with the same
formulas, normalisation and explainer draws, but:

* **every model pass is capped** at ``points_per_pass`` points (a point is one input of a forward
  +backward; IG with 50 steps costs 50 points per explained input). Large passes run at a
  fraction of the best-batch rate on CPU (fresh memory, page faults) and do not fit on a GPU for
  big models; :func:`default_points_per_pass` picks the cap from an activation-memory budget.
* **perturbations are drawn on the device** from one generator per (score seed, stream, sample),
  so a sample's draws never depend on the batch it is in. The streams are the engine's own
  (not numpy's): native and Quantus scores are identically distributed, not identical, unless
  both are fed the same draws (``noise_override`` / ``subsets_override``, used by the equality
  tests in tests/test_engines.py).
* **work is shared**: Max- and Avg-Sensitivity read one set of perturbed explanations (the same
  draws, both statistics; one stream ``sensitivity``); the noise floors of Max, Avg and LLE read
  one set of re-explanations of the unperturbed input; IG's convergence-delta forward is skipped.
* Faithfulness Correlation / Estimate replace all subsets / steps of a chunk of samples in
  capped forward passes (Quantus: one call per sample), seeded per sample.

Explainer draws for re-explanations follow ``xairobust.stages.score.make_explain``: the k-th
perturbation of every sample uses draw ``k + 1`` (the noise floor ``1_000_001 + k``), so a
stochastic explainer gets the same draws in both engines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xairobust.explain.base import sample_seeds
from xairobust.metrics.relative import relative_ratios

# Streams of the native engine (kept apart from the Quantus path's numpy streams).
NATIVE_TAGS = {"sensitivity": 101, "local_lipschitz_estimate": 103, "faithfulness_correlation": 104}
FLOOR_DRAW_OFFSET = 1_000_000  # the noise floor's explainer draws (same as the Quantus path)
LLE_EPS = 1e-10  # Quantus' lipschitz_constant epsilon

# Activation budget per model pass: CPU runs fastest when a pass's activations stay near the
# caches (measured: ~64 points on cifar_cnn, ~256 on digits_cnn, issue 14); on CUDA a quarter of
# the free memory.
CPU_BUDGET_BYTES = 64 * 2**20
MIN_POINTS, MAX_POINTS = 8, 16384


def generator(device: torch.device, *key: int) -> torch.Generator:
    """A torch generator on ``device`` seeded from the integer tuple ``key``."""
    seed = int(np.random.default_rng([int(k) for k in key]).integers(0, 2**62))
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def activation_numel(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """Floats of activation one input produces in a forward pass (outputs of leaf modules)."""
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    return max(total, int(np.prod(input_shape)))


_TUNED: dict[tuple, int] = {}


def default_points_per_pass(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, tune: bool = True) -> int:
    """Points per pass: the memory budget's cap (budget / activation bytes of one point), then on
    CPU the fastest power of two up to that cap from a short fwd+bwd probe (~1 s; cached per
    model and shape for the process). Speed only: scores never depend on it."""
    per_point = 4 * activation_numel(model, tuple(input_shape), device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
        per_point *= 3  # saved activations + gradients + workspace
    else:
        budget = CPU_BUDGET_BYTES
    points = budget // max(1, per_point)
    cap = int(min(MAX_POINTS, max(MIN_POINTS, 2 ** int(math.log2(max(1, points))))))
    if not tune or device.type != "cpu" or cap <= 16:
        return cap
    key = (id(model), tuple(input_shape), torch.get_num_threads())
    if key not in _TUNED:
        _TUNED[key] = _fastest(model, tuple(input_shape), device, cap)
    return _TUNED[key]


def _fastest(model: nn.Module, shape: tuple[int, ...], device: torch.device, cap: int, seconds: float = 0.12) -> int:
    import time

    # one thread: CPU time (robust when other processes share the cores); else wall time
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    best, best_rate = cap, 0.0
    size = 16
    while size <= cap:
        x = torch.rand((size, *shape), device=device)
        t = torch.zeros(size, dtype=torch.int64, device=device)
        done, start = 0, clock()
        while clock() - start < seconds or done < 2 * size:
            xr = x.detach().requires_grad_()
            torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)
            done += size
        rate = done / max(clock() - start, 1e-9)
        if rate > best_rate * 1.03:  # a larger pass must be clearly faster
            best, best_rate = size, rate
        size *= 2
    return best


def points_per_input(explainer: Any) -> int:
    """Model points one explained input costs (IG: n_steps; SHAP/EG: n_samples; gradients: 1)."""
    own = getattr(explainer, "points_per_input", None)
    if callable(own):
        return max(1, int(own()))
    params = getattr(explainer, "params", None)
    for key in ("n_steps", "n_samples"):
        if hasattr(params, key):
            return max(1, int(getattr(params, key)))
    return 1


def cap_explainer(explainer: Any, points_per_pass: int) -> int:
    """Set the explainer's chunk so one pass has <= points_per_pass points; returns inputs per pass."""
    inputs = max(1, int(points_per_pass) // points_per_input(explainer))
    if hasattr(explainer, "chunk_size"):
        explainer.chunk_size = inputs
    return inputs


# --- re-explaining ------------------------------------------------------------------------------


class Reexplainer:
    """The scored explainer on device tensors: seeds per (sample, draw) as in make_explain."""

    def __init__(self, explain: Callable[..., Any], model: nn.Module, points_per_pass: int) -> None:
        self.explainer = explain.explainer  # type: ignore[attr-defined]
        self.base_seed = int(explain.base_seed)  # type: ignore[attr-defined]
        self.score_seed = int(explain.score_seed)  # type: ignore[attr-defined]
        self.stochastic = bool(getattr(explain, "stochastic", False))
        self.model = model
        self.inputs_per_pass = cap_explainer(self.explainer, points_per_pass)
        if hasattr(self.explainer, "want_delta"):
            self.explainer.want_delta = False  # nothing in a metric reads IG's convergence delta
        self._draw_seeds: dict[int, int] = {}

    def draw_seed(self, draw: int) -> int:
        if not (self.stochastic and draw):
            return self.base_seed
        if draw not in self._draw_seeds:
            rng = np.random.default_rng([self.base_seed, self.score_seed, int(draw)])
            self._draw_seeds[draw] = int(rng.integers(0, 2**62))
        return self._draw_seeds[draw]

    def seeds(self, indices: np.ndarray, draws: np.ndarray) -> Tensor:
        out = torch.empty(len(indices), dtype=torch.int64)
        for d in np.unique(draws):
            sel = np.nonzero(draws == d)[0]
            out[torch.as_tensor(sel)] = sample_seeds(self.draw_seed(int(d)), torch.as_tensor(indices[sel]))
        return out

    def __call__(self, x: Tensor, targets: Tensor, indices: np.ndarray, draws: np.ndarray) -> Tensor:
        seeds = self.seeds(np.asarray(indices), np.asarray(draws))
        outs = []
        step = self.inputs_per_pass
        for s in range(0, len(x), step):
            a = self.explainer.attribute(self.model, x[s : s + step], targets[s : s + step], seeds[s : s + step])
            outs.append(a.detach().float())
        return torch.cat(outs)


# --- shared pieces ------------------------------------------------------------------------------


def normalise(a: Tensor) -> Tensor:
    """Per-sample max-normalisation, bitwise equal to _quantus.normalise_per_sample (float32)."""
    flat = a.reshape(len(a), -1)
    peak = flat.abs().amax(1) if flat.shape[1] else torch.zeros(len(a), device=a.device, dtype=a.dtype)
    peak = torch.where(peak == 0, torch.ones_like(peak), peak)
    return a / peak.view(-1, *([1] * (a.dim() - 1)))


def pearson_rows(a: Tensor, b: Tensor) -> np.ndarray:
    """Pearson correlation of each row pair (float64); NaN where a row is constant (as scipy)."""
    a = a.double().cpu()
    b = b.double().cpu()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    r = (a * b).sum(1) / den
    r = torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))
    return r.numpy()


def outputs_at(model: nn.Module, x: Tensor, targets: Tensor, points_per_pass: int, softmax: bool) -> Tensor:
    """model(x)[i, targets[i]] in passes of <= points_per_pass inputs (no grad)."""
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), max(1, points_per_pass)):
            out = model(x[s : s + points_per_pass]).float()
            if softmax:
                out = torch.softmax(out, 1)
            outs.append(out.gather(1, targets[s : s + points_per_pass, None].to(out.device)).squeeze(1))
    return torch.cat(outs) if outs else torch.empty(0, device=x.device)


def baseline_values(x_flat: Tensor, kind: str) -> Tensor:
    """Quantus' per-sample baseline value: black = min, white = max, mean = mean of the sample."""
    if kind == "black":
        return x_flat.amin(1)
    if kind == "white":
        return x_flat.amax(1)
    if kind == "mean":
        return x_flat.mean(1)
    raise ValueError(f"baseline '{kind}' has no per-sample value")


@dataclass
class Chunking:
    """How the engine splits work: samples per chunk and model points per pass."""

    batch_size: int
    points_per_pass: int

    def sample_chunks(self, n: int, bytes_per_sample: int = 0, budget: int = 512 * 2**20) -> list[np.ndarray]:
        size = self.batch_size
        if bytes_per_sample:
            size = max(1, min(size, budget // max(1, bytes_per_sample)))
        return [np.arange(s, min(n, s + size)) for s in range(0, n, size)]


# --- sensitivity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerturbSpec:
    """One set of perturbations: its stream, noise kind and scale, count, clipping."""

    stream: str
    kind: str  # uniform | gaussian
    scale: float
    nr_samples: int
    clip: bool
    drop_changed: bool


def draw_noise(spec: PerturbSpec, seed: int, index: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """(nr_samples, *shape) noise of one sample, from its own generator on ``device``."""
    g = generator(device, seed, NATIVE_TAGS[spec.stream], index)
    if spec.kind == "uniform":
        u = torch.rand((spec.nr_samples, *shape), generator=g, device=device)
        return u * (2 * spec.scale) - spec.scale
    return torch.randn((spec.nr_samples, *shape), generator=g, device=device) * spec.scale


def perturbed_ratios(
    inp: Any,
    spec: PerturbSpec,
    rex: Reexplainer,
    chunking: Chunking,
    noise_override: np.ndarray | None = None,
    on_chunk: Callable[[int], None] | None = None,
    relative: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """For every sample and perturbation k: the norms every sensitivity statistic needs.

    ``relative``: also the Relative Input / Output / Representation Stability ratios ("ris",
    "ros", "rrs"; xairobust.metrics.relative) of the same perturbed explanations.

    Returns (N, K) float64 arrays: ``raw`` = ||a - a'|| / ||a|| (Max/Avg-Sensitivity),
    ``lipschitz`` = ||n(a) - n(a')|| / (||x - x'|| + 1e-10) (LLE, n = per-sample max-normalisation),
    ``dist`` = ||x - x'||, and ``changed`` (prediction changed; only when drop_changed).
    """
    device = inp.device
    n, K = len(inp.x), spec.nr_samples
    shape = tuple(inp.x.shape[1:])
    d = int(np.prod(shape))
    out = {k: np.empty((n, K)) for k in ("raw", "lipschitz", "dist")}
    out["changed"] = np.zeros((n, K), dtype=bool)
    for key in relative:
        out[key] = np.empty((n, K))
    x_all = torch.as_tensor(inp.x, device=device)
    a_all = torch.as_tensor(inp.a, device=device)
    y_all = torch.as_tensor(inp.y, device=device, dtype=torch.int64)
    lo_hi = inp.value_range if spec.clip else None
    for idx in chunking.sample_chunks(n, bytes_per_sample=3 * K * d * 4):
        c = len(idx)
        x, a, y = x_all[idx], a_all[idx], y_all[idx]
        if noise_override is not None:
            noise = torch.as_tensor(noise_override[idx], device=device, dtype=x.dtype).view(c, K, *shape)
        else:
            noise = torch.stack([draw_noise(spec, inp.seed, int(inp.indices[i]), shape, device) for i in idx])
        xp = (x.unsqueeze(1) + noise.to(x.dtype)).reshape(c * K, *shape)
        if lo_hi is not None:
            xp = xp.clamp(*lo_hi)
        rows = np.repeat(idx, K)
        draws = np.tile(np.arange(1, K + 1), c)
        ap = rex(xp, y.repeat_interleave(K), inp.indices[rows], draws)
        a64 = a.double().reshape(c, 1, -1)
        ap64 = ap.double().reshape(c, K, -1)
        raw = torch.linalg.vector_norm(a64 - ap64, dim=2) / torch.linalg.vector_norm(a64, dim=2)
        na = normalise(a).double().reshape(c, 1, -1)
        nap = normalise(ap).double().reshape(c, K, -1)
        dist = torch.linalg.vector_norm((x.unsqueeze(1) - xp.view(c, K, *shape)).double().reshape(c, K, -1), dim=2)
        out["raw"][idx] = raw.cpu().numpy()
        out["lipschitz"][idx] = (torch.linalg.vector_norm(na - nap, dim=2) / (dist + LLE_EPS)).cpu().numpy()
        out["dist"][idx] = dist.cpu().numpy()
        if relative:
            for key, vals in relative_ratios(rex.model, x, xp, a, ap, relative, chunking.points_per_pass).items():
                out[key][idx] = vals
        if spec.drop_changed:
            with torch.no_grad():
                before = outputs_argmax(rex.model, x, chunking.points_per_pass)
                after = outputs_argmax(rex.model, xp, chunking.points_per_pass).view(c, K)
            out["changed"][idx] = (after != before[:, None]).cpu().numpy()
        if on_chunk is not None:
            on_chunk(c)
    return out


def outputs_argmax(model: nn.Module, x: Tensor, points_per_pass: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + points_per_pass]).argmax(1) for s in range(0, len(x), max(1, points_per_pass))])


def floor_numerators(inp: Any, nr_samples: int, rex: Reexplainer, chunking: Chunking) -> dict[str, np.ndarray]:
    """Re-explanations of the unperturbed inputs with fresh draws (the explainer's own noise).

    (N, K): ``raw`` = ||a - a_k(x)|| / ||a|| (the Max/Avg floor) and ``normalised`` =
    ||n(a) - n(a_k(x))|| (the LLE floor's numerator; see :func:`lle_floor`).
    """
    device = inp.device
    n, K = len(inp.x), nr_samples
    shape = tuple(inp.x.shape[1:])
    out = {"raw": np.empty((n, K)), "normalised": np.empty((n, K))}
    x_all = torch.as_tensor(inp.x, device=device)
    a_all = torch.as_tensor(inp.a, device=device)
    y_all = torch.as_tensor(inp.y, device=device, dtype=torch.int64)
    for idx in chunking.sample_chunks(n, bytes_per_sample=2 * K * int(np.prod(shape)) * 4):
        c = len(idx)
        x, a, y = x_all[idx], a_all[idx], y_all[idx]
        rows = np.repeat(idx, K)
        draws = np.tile(np.arange(1, K + 1), c) + FLOOR_DRAW_OFFSET
        ap = rex(x.repeat_interleave(K, 0), y.repeat_interleave(K), inp.indices[rows], draws)
        a64 = a.double().reshape(c, 1, -1)
        out["raw"][idx] = (torch.linalg.vector_norm(a64 - ap.double().reshape(c, K, -1), dim=2) / torch.linalg.vector_norm(a64, dim=2)).cpu().numpy()
        na = normalise(a).double().reshape(c, 1, -1)
        out["normalised"][idx] = torch.linalg.vector_norm(na - normalise(ap).double().reshape(c, K, -1), dim=2).cpu().numpy()
    return out


def lle_floor(normalised: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """LLE's noise floor: max_k ||n(a) - n(a_k(x))|| / (||x - x'_k|| + 1e-10).

    With x' = x the Lipschitz ratio divides by zero, so the floor keeps LLE's own perturbation
    radius: the numerator is the explainer's own variation at the unperturbed input (fresh draws
    k), the denominator the distance of LLE's k-th perturbation. It is what LLE would measure for
    an explainer whose attributions do not depend on the input at all within the neighbourhood.
    """
    k = min(normalised.shape[1], dist.shape[1])
    return (normalised[:, :k] / (dist[:, :k] + LLE_EPS)).max(1)


# --- faithfulness -------------------------------------------------------------------------------


def replacement_correlation(
    inp: Any,
    groups: Callable[[np.ndarray], Tensor],
    baseline: str,
    softmax: bool,
    chunking: Chunking,
    uniform_values: Callable[[np.ndarray, int], Tensor] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pearson r, per sample, between attribution mass of each feature group and the output drop
    when that group alone is replaced by the baseline (Faithfulness Correlation / Estimate).

    ``groups(idx)`` gives (c, G, S) flat feature indices of each sample's G groups of size S.
    """
    device = inp.device
    n = len(inp.x)
    shape = tuple(inp.x.shape[1:])
    d = int(np.prod(shape))
    scores = np.empty(n)
    x_all = torch.as_tensor(inp.x, device=device).reshape(n, d)
    a_all = normalise(torch.as_tensor(inp.a, device=device)).reshape(n, d)
    y_all = torch.as_tensor(inp.y, device=device, dtype=torch.int64)
    ppp = chunking.points_per_pass
    for idx in chunking.sample_chunks(n):
        c = len(idx)
        x, a, y = x_all[idx], a_all[idx], y_all[idx]
        g = groups(idx).to(device)  # (c, G, S)
        G = g.shape[1]
        if baseline == "uniform":
            assert uniform_values is not None
            base = uniform_values(idx, G).to(device, x.dtype)  # (c, G)
        else:
            base = baseline_values(x, baseline)[:, None].expand(c, G)
        y0 = outputs_at(inp.model, x.view(c, *shape), y, ppp, softmax)
        drops = torch.empty(c, G, device=device)
        pair_s = torch.arange(c, device=device).repeat_interleave(G)
        pair_g = torch.arange(G, device=device).repeat(c)
        for s in range(0, c * G, ppp):
            ps, pg = pair_s[s : s + ppp], pair_g[s : s + ppp]
            xs = x[ps].clone()
            sel = g[ps, pg]  # (p, S)
            xs.scatter_(1, sel, base[ps, pg][:, None].expand_as(sel).to(xs.dtype))
            drops[ps, pg] = y0[ps] - outputs_at(inp.model, xs.view(len(ps), *shape), y[ps], ppp, softmax)
        mass = torch.gather(a.unsqueeze(1).expand(c, G, d), 2, g).sum(2)
        scores[idx] = pearson_rows(mass, drops)
        if on_chunk is not None:
            on_chunk(c)
    return scores


def estimate_groups(a: np.ndarray, step: int) -> Callable[[np.ndarray], Tensor]:
    """Faithfulness Estimate's groups: features in Quantus' order (np.argsort(-a) of the
    normalised attribution, ties broken exactly as Quantus does), ``step`` at a time."""
    n = len(a)

    def groups(idx: np.ndarray) -> Tensor:
        an = normalise(torch.as_tensor(a[idx])).reshape(len(idx), -1).numpy()
        order = np.argsort(-an, axis=1)
        d = order.shape[1]
        return torch.as_tensor(order.reshape(len(idx), d // step, step))

    del n
    return groups


def correlation_subsets(inp: Any, nr_runs: int, size: int) -> Callable[[np.ndarray], Tensor]:
    """Faithfulness Correlation's random subsets: ``nr_runs`` subsets of ``size`` features per
    sample (without replacement within a subset), from the sample's own generator on the device."""
    d = int(np.prod(inp.x.shape[1:]))

    def groups(idx: np.ndarray) -> Tensor:
        out = []
        for i in idx:
            g = generator(inp.device, inp.seed, NATIVE_TAGS["faithfulness_correlation"], int(inp.indices[i]))
            keys = torch.rand((nr_runs, d), generator=g, device=inp.device)
            out.append(keys.topk(size, dim=1).indices)
        return torch.stack(out)

    return groups


# --- complexity ---------------------------------------------------------------------------------


def complexity(a: np.ndarray, device: torch.device) -> np.ndarray:
    """Entropy of |n(a)| / sum |n(a)| (Quantus' Complexity with its 1e-12)."""
    t = normalise(torch.as_tensor(a, device=device)).abs().reshape(len(a), -1).double()
    p = t / t.sum(1, keepdim=True)
    return (-(p * torch.log(p + 1e-12)).sum(1)).cpu().numpy()


def sparseness(a: np.ndarray, device: torch.device) -> np.ndarray:
    """Gini index of |n(a)| + 1e-7 (Quantus' Sparseness)."""
    t = normalise(torch.as_tensor(a, device=device)).abs().reshape(len(a), -1).double() + 1e-7
    t = t.sort(1).values
    d = t.shape[1]
    k = torch.arange(1, d + 1, device=t.device, dtype=t.dtype)
    return (((2 * k - d - 1) * t).sum(1) / (d * t.sum(1))).cpu().numpy()
