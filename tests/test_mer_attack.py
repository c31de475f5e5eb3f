"""The BIM regression attack: epsilon, loss increase, exact steps, stopping, reference mode, SNR."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from xairobust.attacks.bim_regression import (
    BIMRegressionParams,
    bim_regression,
    bim_regression_attack,
    per_sample_corr,
    per_sample_mse,
    snr_db,
)
from xairobust.errors import ConfigError
from xairobust.models.base import create_model
from xairobust.registry import ATTACKS


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = create_model("a2e", num_outputs=8, in_channels=1, width=0.125)
    model.eval()
    with torch.no_grad():  # non-trivial BN running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def data(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 313, 149, generator=g), torch.rand(n, 8, generator=g)


def test_registered():
    assert ATTACKS.get("bim-regression") is bim_regression
    assert ATTACKS.meta("bim-regression")["task"] == "regression"


def test_stays_in_eps_and_increases_every_samples_loss(cnn):
    x, y = data()
    res = bim_regression_attack(cnn, x, y, eps=0.001, step_size=0.002, max_iter=10)
    delta = res.x_adv - x
    assert float(delta.abs().max()) <= 0.001 + 1e-7
    with torch.no_grad():
        before = per_sample_mse(cnn(x), y)
        after = per_sample_mse(cnn(res.x_adv), y)
    assert torch.all(after > before)
    assert res.iterations.tolist() == [10] * 4 and not res.stopped_early.any()


def test_exact_steps_on_a_linear_model():
    # f(x) = W x + b: grad of the MSE w.r.t. x is (2/K) W^T (f(x) - y), so the BIM iterate is
    # computable by hand; with step 0.4 eps the clip binds from the third step on.
    torch.manual_seed(3)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x, y = torch.randn(2, 6), torch.randn(2, 3)
    eps, step = 0.05, 0.02
    W, b = lin[1].weight.detach(), lin[1].bias.detach()
    delta = torch.zeros_like(x)
    for _ in range(4):
        resid = (x + delta) @ W.T + b - y
        grad = resid @ W  # (2/K) factor does not change the sign
        delta = (delta + step * grad.sign()).clamp(-eps, eps)
    got = bim_regression_attack(lin, x, y, eps=eps, step_size=step, max_iter=4, corr_threshold=None)
    torch.testing.assert_close(got.x_adv, x + delta)


def test_batch_result_equals_one_sample_at_a_time_with_early_stops(cnn):
    # float64, so that no near-zero gradient changes sign between batch sizes (in float32 a few
    # of the 46,637 coordinates can, because convolution kernels differ by batch size)
    cnn = copy.deepcopy(cnn).double()
    x, y = (t.double() for t in data(5, seed=2))
    with torch.no_grad():
        mse0 = per_sample_mse(cnn(x), y)
    thr = float(mse0.median()) * 1.02  # some samples stop after a few steps, others run out
    batch = bim_regression_attack(cnn, x, y, max_iter=6, mse_threshold=thr)
    for i in range(len(x)):
        one = bim_regression_attack(cnn, x[i : i + 1], y[i : i + 1], max_iter=6, mse_threshold=thr)
        torch.testing.assert_close(batch.x_adv[i : i + 1], one.x_adv, atol=1e-12, rtol=0)
        assert batch.iterations[i] == one.iterations[0]
    assert batch.stopped_early.any()
    stopped = batch.stopped_early
    with torch.no_grad():
        assert torch.all(per_sample_mse(cnn(batch.x_adv[stopped]), y[stopped]) >= thr)
        assert torch.all(mse0[batch.iterations == 0] >= thr)


def test_threshold_already_reached_means_no_perturbation(cnn):
    x, y = data(2)
    res = bim_regression_attack(cnn, x, y, max_iter=5, mse_threshold=1e-9)
    assert torch.equal(res.x_adv, x) and res.iterations.tolist() == [0, 0] and res.stopped_early.all()


def test_correlation_threshold_one_stops_immediately(cnn):
    x, y = data(2)
    res = bim_regression_attack(cnn, x, y, max_iter=5, corr_threshold=1.0)
    assert torch.equal(res.x_adv, x)


def test_per_sample_corr_matches_numpy():
    p, t = torch.randn(3, 8), torch.randn(3, 8)
    expected = [np.corrcoef(p[i].numpy(), t[i].numpy())[0, 1] for i in range(3)]
    np.testing.assert_allclose(per_sample_corr(p, t).numpy(), expected, rtol=1e-6)
    assert torch.isnan(per_sample_corr(torch.ones(1, 8), t[:1]))[0]


def test_unconstrained_reference_leaves_the_ball_with_adam_sign_steps(cnn):
    x, y = data(2)
    one = bim_regression_attack(cnn, x, y, eps=0.001, step_size=0.002, max_iter=1, unconstrained_reference=True)
    # Adam's first step on a sign gradient has length lr in every coordinate
    assert torch.allclose((one.x_adv - x).abs(), torch.full_like(x, 0.002), atol=1e-6)  # float32 ulps
    many = bim_regression_attack(cnn, x, y, eps=0.001, step_size=0.002, max_iter=20, unconstrained_reference=True)
    assert float((many.x_adv - x).abs().max()) > 0.01  # ten times eps: the clip is not applied


def test_model_mode_and_parameter_grads_untouched(cnn):
    x, y = data(2)
    cnn.train()
    try:
        bim_regression_attack(cnn, x, y, max_iter=2)
        assert cnn.training
        assert all(p.grad is None for p in cnn.parameters())
    finally:
        cnn.eval()


def test_snr_db_exact():
    s = torch.ones(2, 100, dtype=torch.float64)
    noisy = s + torch.tensor([[0.1], [0.01]], dtype=torch.float64)
    np.testing.assert_allclose(snr_db(s, noisy), [20.0, 40.0], rtol=1e-9)
    assert np.isinf(snr_db(s, s)).all()


def test_params_validate_with_option_names():
    with pytest.raises(ConfigError, match="--eps must be > 0"):
        BIMRegressionParams(eps=0)
    with pytest.raises(ConfigError, match="--corr-threshold"):
        BIMRegressionParams(corr_threshold=2)
    assert BIMRegressionParams(unconstrained_reference=True).tag() == "bim-regression_eps0.001_unconstrained"
