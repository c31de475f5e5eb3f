"""Input-manipulation attacks on explanations (registered in :data:`MANIPULATIONS`).

All attacks perturb inputs in the model's input space under an L-inf or L2 budget ``eps`` and
keep the model's prediction: every step is projected onto the budget ball and clamped to the
data's value range, the original network's prediction is checked after every step, and the
returned input is the step (over all steps) that manipulated the explanation most *among the
steps whose prediction is unchanged* (the unperturbed input when none was). "Most" is judged on
the original network's explanation, with the attack's own criterion (top-k intersection for
``topk``, centre-of-mass shift for ``masscenter``, distance to the target map for ``targeted``).

* ``topk`` (Ghorbani et al. 2019): minimise the share of the (normalised) map's mass that lies
  on the original top-k features (k = ``topk`` x features).
* ``masscenter`` (Ghorbani et al. 2019): maximise the L2 shift of the map's centre of mass.
* ``random`` (Ghorbani et al. 2019's baseline): a random-sign perturbation of size ``eps``
  (L-inf: eps * sign; L2: a uniform direction scaled to eps), redrawn up to ``steps`` times
  until the prediction is unchanged; drawn from each sample's seed.
* ``targeted`` (Dombrowski et al. 2019): minimise
  ``expl_weight * mean((h(x_adv) - h_t)^2) + out_weight * mean((g(x_adv) - g(x))^2)``
  with h the map normalised to mean 1, h_t a target map (another sample's explanation) and
  g the logits ("gamma" in the paper is ``out_weight / expl_weight``).

The gradient attacks differentiate the explanation of the softplus copy (``smooth.py``; ReLU
networks have zero input Hessian); the loop is :func:`xairobust.perturb.projected_ascent`, the one
PGD uses (signed gradients for L-inf, normalised gradients for L2, of length ``step_size``),
descending the attack loss, with a per-step callback that keeps the best prediction-preserving step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xairobust.explain._common import sample_generator
from xairobust.explain.base import Explainer
from xairobust.manipulate.measures import centre_of_mass, k_of, to_map, topk_intersection
from xairobust.perturb import DEFAULT_EPS, ThreatOptions, clamp, eval_mode, flat_norm, projected_ascent
from xairobust.registry import Registry

MANIPULATIONS: Registry = Registry("manipulation attack")


@dataclass
class AttackSettings(ThreatOptions):
    """A manipulation attack's budget (its ThreatModel, on ``value_range``) and options."""

    norm: str = "linf"
    eps: float = DEFAULT_EPS
    steps: int = 20
    step_size: float | None = None  # default 2.5 * eps / steps (PGD's rule)
    beta: float = 10.0  # softplus beta of the smoothed copy (Dombrowski et al. use 0.8-30)
    topk: float = 0.1  # fraction of features the top-k attack pushes down
    expl_weight: float = 1.0  # targeted: weight of the explanation term
    out_weight: float = 1.0  # targeted: weight of the output-closeness term (gamma)
    value_range: tuple[float, float] | None = (0.0, 1.0)


@dataclass
class Context:
    """What an attack's loss and score see about a batch."""

    orig_map: Tensor  # (B, ...) map of the original explanation (original network)
    settings: AttackSettings
    target_map: Tensor | None = None  # targeted: (B, ...) maps to reach
    orig_logits: Tensor | None = None


def _normalise_sum(m: Tensor) -> Tensor:
    return m / m.flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (m.dim() - 1)))


def _normalise_mean(m: Tensor) -> Tensor:
    return m / m.flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (m.dim() - 1)))


def topk_mask(m: Tensor, fraction: float) -> Tensor:
    flat = m.flatten(1)
    k = k_of(fraction, flat.shape[1])
    return torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1).indices, 1.0).view_as(m)


class Manipulation:
    """Base: ``loss`` (minimised, per sample, on the smooth copy's map) and ``score`` (lower =
    more manipulated, judged on the original network's map)."""

    gradient: bool = True

    def loss(self, m: Tensor, ctx: Context, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, m: Tensor, ctx: Context) -> Tensor:
        raise NotImplementedError


@MANIPULATIONS.register("topk", label="Top-k (Ghorbani)")
class TopK(Manipulation):
    def loss(self, m: Tensor, ctx: Context, logits: Tensor) -> Tensor:
        mask = topk_mask(ctx.orig_map, ctx.settings.topk)
        return (_normalise_sum(m) * mask).flatten(1).sum(1)

    def score(self, m: Tensor, ctx: Context) -> Tensor:
        return topk_intersection(ctx.orig_map, m, ctx.settings.topk).to(m.device)


@MANIPULATIONS.register("masscenter", label="Mass centre (Ghorbani)")
class MassCenter(Manipulation):
    def loss(self, m: Tensor, ctx: Context, logits: Tensor) -> Tensor:
        return -(centre_of_mass(m) - centre_of_mass(ctx.orig_map)).norm(dim=1)

    def score(self, m: Tensor, ctx: Context) -> Tensor:
        return -(centre_of_mass(m) - centre_of_mass(ctx.orig_map)).norm(dim=1)


@MANIPULATIONS.register("targeted", label="Targeted (Dombrowski)")
class Targeted(Manipulation):
    def _dist(self, m: Tensor, ctx: Context) -> Tensor:
        assert ctx.target_map is not None
        return (_normalise_mean(m) - _normalise_mean(ctx.target_map)).pow(2).flatten(1).mean(1)

    def loss(self, m: Tensor, ctx: Context, logits: Tensor) -> Tensor:
        s = ctx.settings
        assert ctx.orig_logits is not None
        out = (logits - ctx.orig_logits).pow(2).mean(1)
        return s.expl_weight * self._dist(m, ctx) + s.out_weight * out

    def score(self, m: Tensor, ctx: Context) -> Tensor:
        return self._dist(m, ctx)


@MANIPULATIONS.register("random", label="Random sign")
class RandomSign(Manipulation):
    gradient = False


@MANIPULATIONS.register("model", label="Model manipulation (Heo)")
class ModelManipulation(Manipulation):
    """Not an input attack: the run is a ``--method fool`` fine-tune, and its explanations are
    compared with those of its ``--init`` run on unperturbed inputs (the manipulate stage)."""

    gradient = False
    model_level = True


def random_perturbation(x: Tensor, seeds: Tensor, tries: int, norm: str, eps: float) -> Tensor:
    """(tries, B, ...) random perturbations of size eps, each sample's from its own seed."""
    out = []
    for s in seeds:
        g = sample_generator(int(s))
        if norm == "linf":
            d = torch.randint(0, 2, (tries, *x.shape[1:]), generator=g).to(x.dtype) * 2 - 1
            d = d * eps
        else:
            d = torch.randn((tries, *x.shape[1:]), generator=g, dtype=x.dtype)
            d = d / flat_norm(d) * eps
        out.append(d)
    return torch.stack(out, 1).to(x.device)


def manipulate_batch(
    model: nn.Module,
    smooth: nn.Module,
    explainer: Explainer,
    attack: str,
    x: Tensor,
    targets: Tensor,
    seeds: Tensor,
    settings: AttackSettings,
    target_map: Tensor | None = None,
    trace: list[dict[str, Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """(x_adv, kept_step) for one batch; kept_step is 0 where no step kept the prediction.

    ``explainer`` is a registered, ``differentiable`` explainer: the attack back-propagates through
    ``explainer.attribute(..., create_graph=True)`` on the softplus copy and judges every step with
    the plain ``attribute`` on the original network -- the same maths and parameters as ``explain``.
    ``targets`` are the original predictions (the explained outputs). ``trace``, when given,
    receives per step the perturbation's L-inf and L2 norms and whether the prediction was kept.
    """
    atk: Manipulation = MANIPULATIONS.get(attack)()
    if getattr(atk, "model_level", False):
        raise ValueError("the 'model' manipulation compares two runs; it has no input attack")
    x = x.detach()
    s = settings

    def explain(net: nn.Module, inp: Tensor, graph: bool) -> Tensor:
        return explainer.attribute(net, inp, targets, seeds, create_graph=graph)

    with eval_mode(model):
        if not atk.gradient:
            return _random_search(model, x, targets, seeds, s, trace)
        orig_map = to_map(explain(model, x, False))
        with torch.no_grad():
            orig_logits = smooth(x)
        ctx = Context(orig_map=orig_map, settings=s, target_map=target_map, orig_logits=orig_logits)
        best, kept = x.clone(), torch.zeros(len(x), dtype=torch.int64)
        best_score = atk.score(orig_map, ctx).clone()

        def loss(z: Tensor) -> Tensor:
            xa = clamp(z, s.value_range)
            logits = smooth(xa) if attack == "targeted" else None
            return atk.loss(to_map(explain(smooth, xa, True)), ctx, logits)

        def keep_best(i: int, delta: Tensor) -> None:
            # judged on the original network: the step counts only where its prediction is kept
            nonlocal best_score
            cand = x + delta
            with torch.no_grad():
                ok = model(cand).argmax(1) == targets
            sc = atk.score(to_map(explain(model, cand, False)), ctx)
            better = ok & (sc < best_score)
            best[better] = cand[better]
            best_score = torch.where(better, sc, best_score)
            kept[better.cpu()] = i + 1
            if trace is not None:
                _trace(trace, delta, ok)

        projected_ascent(loss, x, s.threat_model(s.value_range), maximize=False, on_step=keep_best)
    return best.detach(), kept


def _random_search(model: nn.Module, x: Tensor, targets: Tensor, seeds: Tensor, s: AttackSettings,
                   trace: list[dict[str, Tensor]] | None) -> tuple[Tensor, Tensor]:
    """Ghorbani et al.'s random baseline: the first of up to ``steps`` random draws that keeps the prediction."""
    best = x.clone()
    kept = torch.zeros(len(x), dtype=torch.int64)
    tries = max(1, s.steps)
    draws = random_perturbation(x, seeds, tries, s.norm, s.eps)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for i in range(tries):
        cand = clamp(x + draws[i], s.value_range)
        with torch.no_grad():
            ok = model(cand).argmax(1) == targets
        take = ok & ~done
        best[take] = cand[take]
        kept[take.cpu()] = i + 1
        done |= ok
        if trace is not None:
            _trace(trace, cand - x, ok)
        if bool(done.all()):
            break
    return best, kept


def _trace(trace: list[dict[str, Tensor]], delta: Tensor, ok: Tensor) -> None:
    trace.append({
        "linf": delta.flatten(1).abs().amax(1).detach().cpu(),
        "l2": delta.flatten(1).norm(dim=1).detach().cpu(),
        "pred_kept": ok.detach().cpu(),
    })
