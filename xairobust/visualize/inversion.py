"""Representation inversion (Boychev eq. 15, Fig. 4): find x with R(x) close to R(x_target).

Minimises ``||R(x) - R(x_t)||_2 / ||R(x_t)||_2`` over x by L2 PGD from a source image: a test
image of another class (``source=other``, default; drawn per target with its own seed) or uniform
noise over the value range (``source=noise``). Targets are ``n`` test images chosen as the
explain stage chooses them (stratified: classes round-robin in stored order), so two runs of the
same dataset invert the same images and their numbers pair by test index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from xairobust.data.selection import select_indices
from xairobust.registry import VISUALISATIONS
from xairobust.visualize.base import Context, VisualBudget, Visualisation, descend, item_generator, uniform_noise


@dataclass
class InversionParams(VisualBudget):
    source: Literal["other", "noise"] = "other"


def pick_sources(ctx: Context, indices: Tensor, source: str) -> tuple[Tensor, Tensor]:
    """(source images, their test indices or -1 for noise), one per target, seeded per target."""
    test = ctx.test
    labels = test.y if ctx.info.task == "classification" else None
    shape = tuple(test.inputs(indices[:1]).shape[1:])
    images, chosen = [], []
    for idx in indices.tolist():
        gen = item_generator(ctx.seed, idx)
        if source == "noise":
            images.append(uniform_noise(shape, ctx.info.value_range, gen))
            chosen.append(-1)
            continue
        if labels is not None:
            candidates = torch.nonzero(labels != labels[idx]).flatten()
        else:
            candidates = torch.cat([torch.arange(idx), torch.arange(idx + 1, len(test))])
        pick = int(candidates[int(torch.randint(len(candidates), (1,), generator=gen))])
        chosen.append(pick)
        images.append(test.inputs(torch.tensor([pick]))[0])
    return torch.stack(images), torch.tensor(chosen, dtype=torch.int64)


def inversion_loss(rep_x: Tensor, rep_t: Tensor) -> Tensor:
    """||R(x) - R(x_t)|| / ||R(x_t)|| per sample (eq. 15)."""
    return (rep_x - rep_t).norm(dim=1) / rep_t.norm(dim=1).clamp_min(1e-12)


@VISUALISATIONS.register("inversion", paper="Boychev eq. 15, Figs. 4, 8, 11; Tables 3, 6")
class Inversion(Visualisation):
    name = "inversion"
    Params = InversionParams

    def _indices(self, ctx: Context) -> Tensor:
        labels = ctx.test.y if ctx.info.task == "classification" else None
        return select_indices(labels, len(ctx.test), ctx.n, "stratified", ctx.seed)

    def work(self, ctx: Context, params: InversionParams) -> int:
        return len(self._indices(ctx)) * int(params.steps)

    def run(self, ctx: Context, params: InversionParams) -> tuple[dict[str, Tensor], dict[str, Any]]:
        indices = self._indices(ctx)
        targets = ctx.test.inputs(indices)
        sources, source_indices = pick_sources(ctx, indices, params.source)

        def objective_for(sl: slice):
            with torch.no_grad():
                rep_t = ctx.rep(targets[sl].to(ctx.device))[0]
            return lambda x: inversion_loss(ctx.rep(x)[0], rep_t)

        out, loss_start, loss_end = descend(ctx, params, sources, objective_for, maximize=False)
        tensors = {
            "targets": targets,
            "sources": sources,
            "results": out,
            "indices": indices,
            "source_indices": source_indices,
            "labels": ctx.test.targets(indices),
            "loss_start": loss_start,
            "loss": loss_end,
            "distance_to_target": (out - targets).flatten(1).norm(dim=1),
        }
        summary = {
            "n": len(indices),
            "loss_mean": float(tensors["loss"].mean()),
            "loss_start_mean": float(tensors["loss_start"].mean()),
            "pixel_l2_to_target_mean": float(tensors["distance_to_target"].mean()),
        }
        return tensors, summary
