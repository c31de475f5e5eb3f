"""Class-specific image generation (Boychev eq. 16, Fig. 3): maximise the logit of class c.

The start of each image is a draw from a multivariate normal fitted to the test images of class
c (mean and full covariance, eqs. 19-22, with ``1/n`` as in eq. 20). The sample covariance of
d pixels from fewer than d images is singular, so ``ridge`` is added to its diagonal (in pixel
variance units: 1e-4 is a standard deviation of 0.01, a fortieth of a grey level step of 0-255
images) to make it positive definite. Above ``fit_size`` pixels a side the fit and the draw are
made on an area-downsampled ``fit_size`` x ``fit_size`` copy and the draw is upsampled
(bilinear) to the input size: a full covariance of 3 x 160 x 160 inputs would be 76,800^2 floats
(~23 GB). Draws are clamped to the value range (the start must be a valid input). Each class has
its own seeded generator, so class c's draws do not depend on which other classes are generated
and two runs with the same seed start from the same images (the numbers pair by image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.registry import VISUALISATIONS
from xairobust.visualize._core import batched
from xairobust.visualize.base import Context, VisualBudget, Visualisation, descend, item_generator


@dataclass
class GenerationParams(VisualBudget):
    ridge: float = 1e-4
    fit_size: int = 32

    def check(self, where: str) -> None:
        super().check(where)
        cfg.require(self.ridge > 0, f"{where}: --ridge must be > 0 (it makes the covariance positive definite)")
        cfg.require(self.fit_size >= 1, f"{where}: --fit-size must be >= 1")


def class_normal_draws(images: Tensor, n: int, gen: torch.Generator, ridge: float, fit_size: int,
                       value_range: tuple[float, float] | None) -> Tensor:
    """``n`` draws from the multivariate normal of ``images`` (N, C, H, W), shaped like them."""
    c, h, w = images.shape[1:]
    small = images.double()
    if max(h, w) > fit_size:
        small = F.interpolate(small, size=(fit_size, fit_size), mode="area")
    flat = small.flatten(1)
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / len(flat)
    cov.diagonal().add_(ridge)
    chol = torch.linalg.cholesky(cov)
    z = torch.randn((n, flat.shape[1]), generator=gen, dtype=torch.float64)
    draws = (mean + z @ chol.T).view(n, *small.shape[1:])
    if tuple(draws.shape[2:]) != (h, w):
        draws = F.interpolate(draws, size=(h, w), mode="bilinear", align_corners=False)
    if value_range is not None:
        draws = draws.clamp(value_range[0], value_range[1])
    return draws.float()


@VISUALISATIONS.register("generation", paper="Boychev eq. 16, Figs. 3, 7, 14, 19; Tables 2, 5")
class Generation(Visualisation):
    name = "generation"
    Params = GenerationParams

    def _classes(self, ctx: Context) -> list[int]:
        if ctx.info.task != "classification":
            raise ConfigError("visualize --kind generation needs a classifier (it maximises a class logit)")
        k = int(ctx.info.num_outputs)
        classes = list(ctx.classes) or list(range(k))
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise ConfigError(f"visualize: --classes {bad[0]} is out of range; the model has {k} classes (0..{k - 1})")
        return classes

    def work(self, ctx: Context, params: GenerationParams) -> int:
        return len(self._classes(ctx)) * ctx.n * int(params.steps)

    def run(self, ctx: Context, params: GenerationParams) -> tuple[dict[str, Tensor], dict[str, Any]]:
        classes = self._classes(ctx)
        labels = ctx.test.y
        sources, cls = [], []
        for c in classes:
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) < 2:
                raise ConfigError(f"visualize: class {c} has {len(idx)} test images; a normal needs at least 2")
            draws = class_normal_draws(ctx.test.inputs(idx), ctx.n, item_generator(ctx.seed, c), params.ridge,
                                       params.fit_size, ctx.info.value_range)
            sources.append(draws)
            cls.append(torch.full((ctx.n,), c, dtype=torch.int64))
        x_src, y = torch.cat(sources), torch.cat(cls)

        def objective_for(sl: slice):
            target = y[sl].to(ctx.device)
            return lambda x: ctx.model(x).gather(1, target[:, None])[:, 0]

        results, start, end = descend(ctx, params, x_src, objective_for, maximize=True)
        with torch.no_grad():  # the same batches as the descent: the same logits
            pred = [ctx.model(results[sl].to(ctx.device)).argmax(1).cpu() for sl in batched(len(y), ctx.batch_size)]
        tensors = {
            "sources": x_src,
            "results": results,
            "classes": y,
            "draw": torch.arange(ctx.n).repeat(len(classes)),
            "logit_start": start,
            "logit": end,
            "predicted": torch.cat(pred),
        }
        summary = {
            "n_per_class": ctx.n,
            "classes": classes,
            "logit_start_mean": float(tensors["logit_start"].mean()),
            "logit_mean": float(tensors["logit"].mean()),
            "success_rate": float((tensors["predicted"] == y).float().mean()),
        }
        return tensors, summary
