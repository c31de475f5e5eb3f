"""Direct feature visualisation (Boychev eq. 13, Fig. 5): maximise one unit of R.

For each unit (``--units``, or ``n`` units drawn with the seed) an image is grown from uniform
noise (``source=noise``) or a test image (``source=image``) by L2 PGD ascent on that unit's
activation. A unit is one entry of the representation vector (the input of the final linear
layer); with ``--layer`` naming a feature-map module it is a channel, its activation the spatial
mean. As the paper does to check a unit's meaning, the ``top_k`` test images that activate the
unit most are listed with their activations (over the first ``pool`` test images in stratified
order; 0: the whole test split) and stored, so the report needs no dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from xairobust import config as cfg
from xairobust.data.selection import select_indices
from xairobust.errors import ConfigError
from xairobust.registry import VISUALISATIONS
from xairobust.visualize._core import batched
from xairobust.visualize.base import Context, VisualBudget, Visualisation, descend, item_generator, uniform_noise


@dataclass
class FeatureParams(VisualBudget):
    source: Literal["noise", "image"] = "noise"
    top_k: int = 8
    pool: int = 0

    def check(self, where: str) -> None:
        super().check(where)
        cfg.require(self.top_k >= 1, f"{where}: --top-k must be >= 1")
        cfg.require(self.pool >= 0, f"{where}: --pool must be >= 0 (0: the whole test split)")


@VISUALISATIONS.register("feature", paper="Boychev eq. 13, Figs. 5, 9, 12, 15")
class Feature(Visualisation):
    name = "feature"
    Params = FeatureParams

    def _units(self, ctx: Context) -> Tensor:
        with torch.no_grad():
            dim = ctx.rep.units(ctx.test.inputs(torch.tensor([0])).to(ctx.device)).shape[1]
        if ctx.units:
            bad = [u for u in ctx.units if not 0 <= u < dim]
            if bad:
                raise ConfigError(f"visualize: --units {bad[0]} is out of range; {ctx.rep.describe} has {dim} units (0..{dim - 1})")
            return torch.tensor(list(ctx.units), dtype=torch.int64)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        return torch.randperm(dim, generator=gen)[: min(ctx.n, dim)].sort().values

    def work(self, ctx: Context, params: FeatureParams) -> int:
        return len(self._units(ctx)) * int(params.steps)

    def run(self, ctx: Context, params: FeatureParams) -> tuple[dict[str, Tensor], dict[str, Any]]:
        units = self._units(ctx)
        shape = tuple(ctx.test.inputs(torch.tensor([0])).shape[1:])
        sources, source_indices = [], []
        for u in units.tolist():
            gen = item_generator(ctx.seed, u)
            if params.source == "noise":
                sources.append(uniform_noise(shape, ctx.info.value_range, gen))
                source_indices.append(-1)
            else:
                pick = int(torch.randint(len(ctx.test), (1,), generator=gen))
                sources.append(ctx.test.inputs(torch.tensor([pick]))[0])
                source_indices.append(pick)
        x_src = torch.stack(sources)

        def objective_for(sl: slice):
            u = units[sl].to(ctx.device)
            return lambda x: ctx.rep.units(x).gather(1, u[:, None])[:, 0]

        results, act_start, act_end = descend(ctx, params, x_src, objective_for, maximize=True)

        labels = ctx.test.y if ctx.info.task == "classification" else None
        pool = select_indices(labels, len(ctx.test), params.pool or len(ctx.test), "stratified", ctx.seed)
        acts = []
        with torch.no_grad():
            for sl in batched(len(pool), max(ctx.batch_size, 256)):
                a = ctx.rep.units(ctx.test.inputs(pool[sl]).to(ctx.device))
                acts.append(a[:, units.to(ctx.device)].cpu())
        acts_t = torch.cat(acts)  # (pool, units)
        k = min(params.top_k, len(pool))
        # torch.topk breaks ties by position only on some backends: sort stably instead
        order = torch.sort(acts_t, dim=0, descending=True, stable=True).indices[:k].T  # (units, k)
        top_idx = pool[order]
        top_act = torch.gather(acts_t.T, 1, order)
        tensors = {
            "sources": x_src,
            "source_indices": torch.tensor(source_indices, dtype=torch.int64),
            "results": results,
            "units": units,
            "activation_start": act_start,
            "activation": act_end,
            "topk_indices": top_idx,
            "topk_activations": top_act,
            "topk_images": ctx.test.inputs(top_idx.flatten()).view(len(units), k, *shape),
            "topk_labels": ctx.test.targets(top_idx.flatten()).view(len(units), k),
        }
        summary = {
            "units": units.tolist(),
            "top_k": k,
            "pool": len(pool),
            "activation_mean": float(tensors["activation"].mean()),
            "activation_start_mean": float(tensors["activation_start"].mean()),
            "topk_activation_mean": float(top_act.mean()),
            # share of each unit's top-k images that carry its most common label (the paper's
            # check that a unit means one class: "all images belong to class frogs")
            "topk_label_purity": (
                float(torch.stack([(row == row.mode().values).float().mean() for row in tensors["topk_labels"]]).mean())
                if labels is not None else None
            ),
        }
        return tensors, summary
