"""Explainers against exact or direct computations on a tiny network (registry-looped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS
from xairobust.stages.explain import resolve_targets, select_indices

# Small settings so every registered explainer runs in well under a second.
FAST = {
    "ig": {"n_steps": 16},
    "gradient_shap": {"n_samples": 8},
    "expected_gradients": {"n_samples": 8},
    "smoothgrad": {"n_samples": 6},
    "smoothgrad_ig": {"n_samples": 3, "n_steps": 8},
    "lime": {"n_samples": 40, "alpha": 1e-4},  # an untrained net: tiny output changes, Lasso 0.01 zeroes all
    "kernel_shap": {"n_samples": 40},
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("tiny_mlp", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3]).eval()
    x = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8])
    seeds = sample_seeds(0, torch.arange(9) * 3)
    background = torch.rand(25, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    return model, x, targets, seeds, background


@pytest.fixture(scope="module")
def conv():
    """A tiny ReLU CNN (digits_cnn, width 4) on 1 x 8 x 8 inputs: every explainer applies to it."""
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=1, width=4, mean=[0.5], std=[0.3]).eval()
    x = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8])
    seeds = sample_seeds(0, torch.arange(9) * 3)
    background = torch.rand(25, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    return model, x, targets, seeds, background


def make(name, background, **override):
    cls = EXPLAINERS.get(name)
    params = cfg.build(cls.Params, {**FAST.get(name, {}), **override}, name)
    return cls(params, background)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_batch_size_invariance_and_seeds(name, conv):
    model, x, t, seeds, bg = conv
    explainer = make(name, bg)
    full = explainer.attribute(model, x, t, seeds)
    assert full.shape == x.shape and torch.isfinite(full).all()
    assert full.abs().sum() > 0
    for size in (1, 4):
        if hasattr(explainer, "chunk_size"):
            explainer.chunk_size = size
        parts = torch.cat([explainer.attribute(model, x[s : s + size], t[s : s + size], seeds[s : s + size]) for s in range(0, 9, size)])
        torch.testing.assert_close(parts, full, rtol=1e-5, atol=1e-7)
    again = make(name, bg).attribute(model, x, t, seeds)
    assert torch.equal(again, full)
    other = make(name, bg).attribute(model, x, t, seeds + 1)
    if EXPLAINERS.get(name).stochastic:
        assert not torch.allclose(other, full)
    else:
        assert torch.equal(other, full)


@pytest.mark.parametrize("baseline", ["black", "blurred", "uniform"])
def test_ig_completeness_within_reported_delta(baseline, tiny):
    model, x, t, seeds, _ = tiny
    ig = make("ig", None, n_steps=64, baseline=baseline)
    attr = ig.attribute(model, x, t, seeds)
    delta = ig.extras()["convergence_delta"]
    base = ig.baselines(x, seeds)
    with torch.no_grad():
        gap = model(x)[torch.arange(9), t] - model(base)[torch.arange(9), t]
    err = attr.flatten(1).sum(1) - gap
    # Captum's delta is exactly this completeness error; and it is small with 64 steps.
    torch.testing.assert_close(err, delta, rtol=0, atol=1e-5)
    assert (err.abs() <= delta.abs() + 1e-5).all()
    assert delta.abs().max() < 0.02 * gap.abs().max()


def test_ig_uniform_baseline_depends_on_seed_only(tiny):
    _, x, _, seeds, _ = tiny
    ig = make("ig", None, baseline="uniform")
    b = ig.baselines(x, seeds)
    assert torch.equal(b[3:4], ig.baselines(x[3:4], seeds[3:4]))
    assert 0 <= b.min() and b.max() <= 1 and not torch.equal(b[0], b[1])


def test_expected_gradients_equals_direct_monte_carlo(tiny):
    """phi = mean_k (x - x'_k) * dF(x'_k + a_k (x - x'_k))/dx with Captum's draws for the seed."""
    model, x, t, seeds, bg = tiny
    eg = make("expected_gradients", bg, n_samples=7)
    attr = eg.attribute(model, x[:3], t[:3], seeds[:3])
    for i in range(3):
        rng = np.random.RandomState(int(seeds[i]) % 2**32)
        picks = rng.choice(len(bg), 7)
        alphas = rng.uniform(0.0, 1.0, 7)
        total = torch.zeros_like(x[:1])
        for j, a in zip(picks, alphas, strict=True):
            ref = bg[j : j + 1]
            point = (ref + float(a) * (x[i : i + 1] - ref)).requires_grad_()
            (grad,) = torch.autograd.grad(model(point)[0, t[i]], point)
            total += (x[i : i + 1] - ref) * grad
        torch.testing.assert_close(attr[i : i + 1], total / 7, rtol=1e-5, atol=1e-7)


def test_gradient_shap_without_noise_matches_direct_computation(tiny):
    """Black baseline, no input noise: the expectation reduces to IG's integrand at random alphas."""
    model, x, t, seeds, _ = tiny
    gs = make("gradient_shap", None, stdevs=0.0, n_samples=5)
    attr = gs.attribute(model, x[:2], t[:2], seeds[:2])
    for i in range(2):
        rng = np.random.RandomState(int(seeds[i]) % 2**32)
        rng.choice(1, 5)  # Captum draws baseline indices first (one baseline: all zero)
        alphas = rng.uniform(0.0, 1.0, 5)
        total = torch.zeros_like(x[:1])
        for a in alphas:
            point = (float(a) * x[i : i + 1]).requires_grad_()
            (grad,) = torch.autograd.grad(model(point)[0, t[i]], point)
            total += x[i : i + 1] * grad
        torch.testing.assert_close(attr[i : i + 1], total / 5, rtol=1e-5, atol=1e-7)


def test_params_are_validated():
    with pytest.raises(ConfigError, match="n_steps"):
        cfg.build(EXPLAINERS.get("ig").Params, {"n_step": 3}, "explainer 'ig'")
    with pytest.raises(ConfigError, match="--n-steps must be >= 2"):
        cfg.build(EXPLAINERS.get("ig").Params, {"n_steps": 1}, "explainer 'ig'")


def test_targets():
    out = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    labels = torch.tensor([0, 0])
    assert resolve_targets("pred", out, labels, "classification", 2).tolist() == [1, 0]
    assert resolve_targets("label", out, labels, "classification", 2).tolist() == [0, 0]
    assert resolve_targets("1", out, labels, "regression", 2).tolist() == [1, 1]
    assert resolve_targets("pred", out[:, :1], labels, "regression", 1).tolist() == [0, 0]
    with pytest.raises(ConfigError, match="--target INDEX"):
        resolve_targets("pred", out, labels, "regression", 2)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_targets("2", out, labels, "classification", 2)


def test_stratified_selection_is_round_robin_and_nested():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 1, 0, 2])
    assert select_indices(labels, 9, 3, "stratified", 0).tolist() == [0, 3, 4]
    assert select_indices(labels, 9, 6, "stratified", 0).tolist() == [0, 1, 3, 4, 5, 6]
    assert select_indices(labels, 9, 4, "first", 0).tolist() == [0, 1, 2, 3]
    r = select_indices(labels, 9, 4, "random", 5)
    assert torch.equal(r, select_indices(labels, 9, 4, "random", 5)) and len(set(r.tolist())) == 4


@pytest.mark.parametrize(
    "name, override",
    [
        ("gradient_shap", {"stdevs": 0.1}),
        ("gradient_shap", {"baseline": "uniform", "n_baselines": 4}),
        ("gradient_shap", {"baseline": "train", "n_baselines": 6}),
        ("expected_gradients", {}),
    ],
)
def test_shap_explainers_equal_captum_gradient_shap_per_sample(name, override, tiny):
    """The batched implementation draws what Captum draws under the sample's seed."""
    from captum.attr import GradientShap

    from xairobust.explain._common import seeded_global_rng

    model, x, t, seeds, bg = tiny
    explainer = make(name, bg, n_samples=6, **override)
    attr = explainer.attribute(model, x[:4], t[:4], seeds[:4])
    for i in range(4):
        s = int(seeds[i])
        with seeded_global_rng(s, torch.device("cpu")):
            ref = GradientShap(model).attribute(
                x[i : i + 1], baselines=explainer.baseline_set(x[i : i + 1], s), n_samples=6,
                stdevs=explainer.stdevs(), target=int(t[i]),
            )
        torch.testing.assert_close(attr[i : i + 1], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre", "riemann_left"])
@pytest.mark.parametrize("baseline", ["black", "uniform"])
def test_ig_equals_captum_integrated_gradients(method, baseline, tiny):
    from captum.attr import IntegratedGradients

    model, x, t, seeds, _ = tiny
    ig = make("ig", None, n_steps=20, method=method, baseline=baseline)
    attr = ig.attribute(model, x, t, seeds)
    ref, delta = IntegratedGradients(model).attribute(
        x, baselines=ig.baselines(x, seeds), target=t.tolist(), n_steps=20, method=method, return_convergence_delta=True
    )
    torch.testing.assert_close(attr, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ig.extras()["convergence_delta"], delta.float(), rtol=1e-4, atol=1e-6)
