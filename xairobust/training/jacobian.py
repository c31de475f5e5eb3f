"""Jacobian regularisation (Hoffman, Roberts & Yaida 2019): task loss + lambda/2 * ||J||_F^2.

J = d outputs / d inputs (in the model's input space), averaged over the batch. ||J||_F^2 is
estimated with random projections: for v uniform on the unit sphere of the C-dimensional
output space, E[v v^T] = I / C, hence E ||J^T v||^2 = ||J||_F^2 / C and
``(C / n_proj) * sum_k ||J^T v_k||^2`` is unbiased. Each J^T v is one vector-Jacobian product
(``autograd.grad`` with ``create_graph=True`` so the penalty is differentiable in the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod


def jacobian_frobenius_sq(
    out: Tensor, x: Tensor, n_proj: int, generator: torch.Generator | None = None, create_graph: bool = True
) -> Tensor:
    """Batch mean of ||d out_b / d x_b||_F^2; ``n_proj = -1`` is exact (one VJP per output).

    ``out`` (B, C) must come from ``x`` (requires grad). Rows are assumed independent (true in
    eval mode; with batch-norm in train mode the VJP also carries the batch-statistics path,
    as in Hoffman et al.'s implementation).
    """
    batch, c = out.shape[0], out[0].numel()
    flat = out.reshape(batch, c)
    total = out.new_zeros(())
    if n_proj == -1:
        vectors = [torch.zeros_like(flat).index_fill_(1, torch.tensor([k], device=out.device), 1.0) for k in range(c)]
        scale = 1.0
    else:
        vectors = []
        for _ in range(n_proj):
            g = torch.randn(flat.shape, generator=generator, device=out.device, dtype=flat.dtype)
            vectors.append(g / g.norm(dim=1, keepdim=True))  # uniform on the unit sphere, per sample
        scale = c / n_proj
    for v in vectors:
        (jtv,) = torch.autograd.grad(flat, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
        total = total + jtv.pow(2).sum()
    return scale * total / batch


@dataclass
class JacobianParams:
    """``xairobust train --method jacobian --lam 0.01 --n-proj 1``."""

    lam: float = 0.01  # lambda_JR; the penalty is lam / 2 * ||J||_F^2
    n_proj: int = 1  # random projections per batch; -1 = exact (C vector-Jacobian products)

    def __post_init__(self) -> None:
        require(self.lam >= 0, f"jacobian: --lam must be >= 0, got {self.lam}")
        require(self.n_proj >= 1 or self.n_proj == -1, f"jacobian: --n-proj must be >= 1 or -1 (exact), got {self.n_proj}")


@METHODS.register("jacobian", label="JacobReg")
class JacobianRegularisation(TrainingMethod):
    """Task loss + lam/2 * ||J||_F^2 (random-projection estimate)."""

    Params = JacobianParams

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        x = x.detach().requires_grad_(True)
        out = model(x)
        task = ctx.criterion(out, y)
        jac = jacobian_frobenius_sq(out, x, self.params.n_proj, ctx.generator)
        loss = task + 0.5 * self.params.lam * jac
        return loss, {"task_loss": float(task.detach()), "jacobian_sq": float(jac.detach())}

    def describe(self) -> dict[str, Any]:
        return {
            "estimator": "exact" if self.params.n_proj == -1 else "random projections (C/n_proj) sum ||J^T v||^2",
            "jacobian_of": "model outputs w.r.t. inputs in the input space, batch mean of ||J_b||_F^2",
            "batchnorm": "train mode: the vector-Jacobian products include the batch-statistics path",
        }
