"""Adversarial model manipulation (Heo, Joo & Moon 2019): fine-tune so explanations lie.

``xairobust train --method fool --init RUN --fool location|topk|active --lam 1 ...`` minimises

    L = CE(f_w(x), y) + lam * L_fool(x; w, w0)

where w0 are the weights of the ``--init`` run (a frozen copy taken in ``prepare``) and the
explanation h is a registered differentiable explainer (saliency by default, with its registered
parameters; ``attribute(..., create_graph=True)`` keeps the gradient with respect to the weights) of the labelled
class, reduced to a map (|attribution| summed over channels) normalised to sum 1:

* ``location`` (passive): L = 1 - sum(h * R), the share of relevance outside a fixed region R
  (``--region top_left``: the top-left quarter; ``border``: a frame ``--border`` pixels wide).
* ``topk`` (passive): L = sum of h over the top-k features (``--topk`` fraction) of the original
  model's explanation of the same input: push the originally important features down.
* ``active``: swap the explanations of two classes ``--class-a`` and ``--class-b``: on inputs of
  either class, L = mean((d h_a(x; w) - d h_b(x; w0))^2) + mean((d h_b(x; w) - d h_a(x; w0))^2)
  (maps scaled by the number of features d so the squared errors are O(1)); other inputs add 0.

The output is an ordinary run directory; ``xairobust manipulate --attack model`` scores its
explanations against those of its ``--init`` run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod


@dataclass
class FoolParams:
    fool: Literal["location", "topk", "active"] = "location"
    lam: float = 1.0
    explainer: str = "saliency"  # a differentiable explainer (saliency, input_x_gradient, ig, smoothgrad)
    region: Literal["top_left", "border"] = "top_left"  # location fooling
    border: int = 1  # frame width in pixels for region=border
    topk: float = 0.1  # topk fooling: fraction of features
    class_a: int = 0  # active fooling: the two classes whose explanations swap
    class_b: int = 1

    def __post_init__(self) -> None:
        require(self.lam >= 0, f"fool: --lam must be >= 0, got {self.lam}")
        require(0 < self.topk <= 1, f"fool: --topk must be in (0, 1], got {self.topk}")
        require(self.border >= 1, f"fool: --border must be >= 1, got {self.border}")
        require(self.class_a != self.class_b, "fool: --class-a and --class-b must differ")


def region_mask(shape: tuple[int, ...], region: str, border: int) -> Tensor:
    """(H, W) 0/1 mask of the location-fooling region."""
    h, w = shape[-2:]
    m = torch.zeros(h, w)
    if region == "top_left":
        m[: (h + 1) // 2, : (w + 1) // 2] = 1
    else:
        m[:border, :] = 1
        m[-border:, :] = 1
        m[:, :border] = 1
        m[:, -border:] = 1
    return m


def _maps(attr: Tensor) -> Tensor:
    m = attr.abs().sum(1) if attr.dim() > 2 else attr.abs()
    return m / m.flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (m.dim() - 1)))


@METHODS.register("fool", label="Fooled")
class FoolTraining(TrainingMethod):
    """CE + lam * L_fool (Heo et al. 2019); needs ``--init`` (the model whose explanations are fooled)."""

    Params = FoolParams

    def prepare(self, model: nn.Module, ctx: TrainContext) -> None:
        from xairobust.explain.base import differentiable_explainer

        # The registered explainer with its registered defaults: the map `explain` gives under that name.
        self.explainer = differentiable_explainer(self.params.explainer, what="fool")
        if self.params.fool == "active" and max(self.params.class_a, self.params.class_b) >= ctx.num_outputs:
            raise ConfigError(f"fool: --class-a/--class-b must be below {ctx.num_outputs}")
        # The reference w0: the weights the run starts from (``--init``), frozen.
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)

    def _explain(self, net: nn.Module, x: Tensor, targets: Tensor, graph: bool) -> Tensor:
        seeds = torch.zeros(len(x), dtype=torch.int64)
        return self.explainer.attribute(net, x, targets, seeds, create_graph=graph)

    def fool_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        p = self.params
        x = x.detach()
        if p.fool == "location":
            h = _maps(self._explain(model, x, y, True))
            mask = region_mask(tuple(h.shape), p.region, p.border).to(h)
            return (1 - (h * mask).flatten(1).sum(1)).mean()
        if p.fool == "topk":
            from xairobust.manipulate.attacks import topk_mask

            with torch.no_grad():
                ref = _maps(self._explain(self.reference, x, y, False))
            h = _maps(self._explain(model, x, y, True))
            return (h * topk_mask(ref, p.topk)).flatten(1).sum(1).mean()
        sel = (y == p.class_a) | (y == p.class_b)
        if not bool(sel.any()):
            return x.new_zeros(())
        xs = x[sel]
        a = torch.full((len(xs),), p.class_a, device=x.device)
        b = torch.full((len(xs),), p.class_b, device=x.device)
        d = float(xs[0, 0].numel())
        with torch.no_grad():
            ref_a = _maps(self._explain(self.reference, xs, a, False)) * d
            ref_b = _maps(self._explain(self.reference, xs, b, False)) * d
        ha = _maps(self._explain(model, xs, a, True)) * d
        hb = _maps(self._explain(model, xs, b, True)) * d
        per = (ha - ref_b).pow(2).flatten(1).mean(1) + (hb - ref_a).pow(2).flatten(1).mean(1)
        return per.sum() / len(x)  # batch mean over all inputs (others contribute 0)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        task = ctx.criterion(model(x), y)
        fool = self.fool_loss(model, x, y)
        return task + self.params.lam * fool, {"task_loss": float(task.detach()), "fool_loss": float(fool.detach())}

    def describe(self) -> dict[str, Any]:
        return {"reference": "the --init run's weights (frozen copy)", "map": "|attr| summed over channels, sum 1"}
