"""Jacobian regularisation: exact mode vs torch.autograd.functional.jacobian, estimator unbiasedness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from xairobust.training.base import TrainContext
from xairobust.training.jacobian import JacobianParams, JacobianRegularisation, jacobian_frobenius_sq


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double().eval()


def _x(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _reference(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Batch mean of ||J_b||_F^2 with the full Jacobian of each sample from autograd.functional."""
    total = 0.0
    for b in range(len(x)):
        j = jacobian(lambda inp: model(inp.unsqueeze(0))[0], x[b], create_graph=create_graph)  # (C, *input)
        total = total + j.pow(2).sum()
    return total / len(x)


def test_exact_mode_equals_the_full_jacobian():
    model, x = _net(), _x().requires_grad_(True)
    value = jacobian_frobenius_sq(model(x), x, n_proj=-1, create_graph=False)
    assert float(value) == pytest.approx(float(_reference(model, x.detach())), rel=1e-12)


def test_exact_mode_gradient_wrt_weights_equals_the_reference():
    model, x = _net(), _x().requires_grad_(True)
    params = [model[1].weight, model[1].bias, model[3].weight]  # the last bias does not enter J
    ours = torch.autograd.grad(jacobian_frobenius_sq(model(x), x, n_proj=-1), params)
    ref = torch.autograd.grad(_reference(model, x.detach(), create_graph=True), params)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_random_projection_estimator_is_unbiased():
    # Mean of K independent single-projection estimates vs the exact value, within 4 standard
    # errors computed from the draws themselves.
    model, x = _net(), _x().requires_grad_(True)
    out = model(x)
    exact = float(jacobian_frobenius_sq(out, x, n_proj=-1, create_graph=False))
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([float(jacobian_frobenius_sq(out, x, n_proj=1, generator=g, create_graph=False)) for _ in range(3000)])
    se = float(draws.std()) / math.sqrt(len(draws))
    assert se > 0
    assert abs(float(draws.mean()) - exact) < 4 * se
    # n_proj averages: the same estimator with n_proj=4 has about half the spread.
    four = torch.tensor([float(jacobian_frobenius_sq(out, x, n_proj=4, generator=g, create_graph=False)) for _ in range(600)])
    assert abs(float(four.mean()) - exact) < 4 * float(four.std()) / math.sqrt(len(four))
    assert float(four.std()) < 0.7 * float(draws.std())


def test_method_loss_is_task_loss_plus_half_lambda_times_jacobian():
    model, x = _net(), _x(4)
    y = torch.tensor([0, 1, 2, 3])
    ctx = TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=4,
                       value_range=(0.0, 1.0), generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    method = JacobianRegularisation(JacobianParams(lam=0.3, n_proj=-1))
    loss, logs = method.loss(model, x, y, ctx)
    expected = nn.functional.cross_entropy(model(x), y) + 0.15 * _reference(model, x)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    assert logs["jacobian_sq"] == pytest.approx(float(_reference(model, x)), rel=1e-10)
    loss.backward()  # differentiable in the weights (double backward)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_regression_uses_the_context_criterion():
    model, x = _net(), _x(4)
    y = torch.rand(4, 4, dtype=torch.float64)
    ctx = TrainContext(task="regression", criterion=nn.functional.mse_loss, num_outputs=4,
                       value_range=None, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    loss, logs = JacobianRegularisation(JacobianParams(lam=0.0, n_proj=1)).loss(model, x, y, ctx)
    assert float(loss.detach()) == pytest.approx(float(nn.functional.mse_loss(model(x), y).detach()), rel=1e-12)


@pytest.mark.parametrize("bad,match", [({"lam": -0.1}, "--lam"), ({"n_proj": 0}, "--n-proj"), ({"n_proj": -2}, "--n-proj")])
def test_bad_params_name_the_option(bad, match):
    from xairobust.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        JacobianParams(**bad)
