"""The one perturbation core: the attack radius and the step rule are defined once and every
budget uses them; one projected-gradient step/loop and one eval_mode serve every caller."""

import pytest
import torch
from torch import nn

from xairobust.manipulate.attacks import AttackSettings
from xairobust.perturb import (
    DEFAULT_EPS,
    ThreatModel,
    default_step_size,
    eval_mode,
    flat_norm,
    project,
    projected_ascent,
)
from xairobust.stages.attack import AttackConfig
from xairobust.stages.manipulate import ManipulateConfig
from xairobust.training.pgd import PGDParams


def test_default_eps_is_8_over_255_everywhere():
    assert DEFAULT_EPS == 8 / 255
    for budget in (AttackSettings(), AttackConfig(), ManipulateConfig(), PGDParams()):
        assert budget.eps == DEFAULT_EPS, type(budget).__name__


def test_step_rule_is_madry_and_bit_identical():
    # The expression the three budgets used before; equality is exact, not approximate.
    for eps, steps in ((8 / 255, 10), (0.5, 7), (0.0, 3)):
        assert default_step_size(eps, steps) == 2.5 * eps / steps
    for budget in (AttackSettings(steps=7), AttackConfig(steps=7)):
        assert budget.resolved_step_size() == 2.5 * budget.eps / 7


# -- the one projected-gradient core ------------------------------------------------------------


def _old_pgd(model, x, y, norm, eps, step_size, steps, delta0, value_range):
    """The loop attacks/pgd.py had before the core (commit 2f8a105), written out: the reference
    for bit-identity where a value range is set (its `clamp(x + project(delta)) - x`)."""
    delta = delta0.clone()
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
        direction = grad.sign() if norm == "linf" else grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + step_size * direction
        if norm == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1.0)
        delta = (x + delta).clamp(*value_range) - x
    return (x + delta).detach()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5)).eval()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_is_bit_identical_to_the_old_loop(net, norm, eps, random_start):
    from xairobust.attacks.pgd import pgd_attack

    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 5
    threat = ThreatModel(norm, eps, eps / 4, (0.0, 1.0))
    delta0 = threat.random_start(x, torch.Generator().manual_seed(3)) if random_start else torch.zeros_like(x)
    want = _old_pgd(net, x, y, norm, eps, eps / 4, 6, delta0, (0.0, 1.0))
    got = pgd_attack(net, x, y, norm=norm, eps=eps, step_size=eps / 4, steps=6, random_start=random_start,
                     generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_bim_step_is_bit_identical_to_the_old_inline_clip():
    g = torch.Generator().manual_seed(0)
    x, delta, grad = (torch.randn(5, 3, 4, generator=g) for _ in range(3))
    active = torch.tensor([True, False, True, True, False])
    mask = active.view(-1, 1, 1).to(x.dtype)
    want = (delta + 0.002 * grad.sign() * mask).clamp(-0.001, 0.001)  # bim_regression.py before the core
    assert torch.equal(ThreatModel("linf", 0.001, 0.002, None).step(x, delta, grad, active=active), want)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_objective_reaches_the_closed_form_maximiser(norm):
    """max w.z over the ball around x (no value range): x + eps sign(w) (L-inf), x + eps w/||w|| (L2)."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    eps = 0.3
    threat = ThreatModel(norm, eps, eps / 3, None)
    seen = []
    got = projected_ascent(lambda z: (z * w).sum(1), x, threat, 5, on_step=lambda t, d: seen.append(d.clone()))
    want = x + eps * (w.sign() if norm == "linf" else w / w.norm(dim=1, keepdim=True))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len(seen) == 5  # every iterate, after projection
    lo = projected_ascent(lambda z: (z * w).sum(1), x, threat, 5, maximize=False)
    torch.testing.assert_close(lo, 2 * x - want, rtol=0, atol=1e-6)


def test_steps_stay_in_the_ball_and_the_value_range():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 6, 6, generator=g)
    for norm, eps in (("linf", 0.2), ("l2", 1.5)):
        threat = ThreatModel(norm, eps, eps, (0.0, 1.0))  # long steps: every one has to be projected
        delta = threat.random_start(x, g)
        for _ in range(5):
            delta = threat.step(x, delta, torch.randn(x.shape, generator=g))
            size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
            assert float(size.max()) <= eps * (1 + 1e-6)
            assert float((x + delta).min()) >= 0 and float((x + delta).max()) <= 1


def test_zero_gradient_and_an_input_free_objective_do_not_move():
    x = torch.rand(3, 4)
    threat = ThreatModel("l2", 1.0, 0.5, None)
    assert torch.equal(projected_ascent(lambda z: z.sum(1) * 0, x, threat, 3), x)
    assert torch.equal(projected_ascent(lambda z: torch.ones(3, requires_grad=True), x, threat, 3), x)
    assert torch.equal(project(torch.zeros(2, 3), "l2", 1.0), torch.zeros(2, 3))
    assert float(flat_norm(torch.zeros(2, 3)).min()) > 0  # no division by zero


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        ThreatModel("l1", 0.1, 0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("freeze", [False, True])
def test_eval_mode_restores_mode_and_flags_even_on_error(net, freeze):
    net.train()
    net[0].weight.requires_grad_(False)  # a caller's own flag survives
    with pytest.raises(RuntimeError):
        with eval_mode(net, freeze=freeze):
            assert not net.training
            assert all(not p.requires_grad for p in net.parameters()) if freeze else net[4].weight.requires_grad
            raise RuntimeError("boom")
    assert net.training and not net[0].weight.requires_grad and net[4].weight.requires_grad
    net[0].weight.requires_grad_(True)
    net.eval()


def test_every_caller_steps_through_the_core(monkeypatch, net):
    """PGD, BIM, the manipulation attacks and the visualisations all take ThreatModel.step."""
    from xairobust.attacks.bim_regression import bim_regression_attack
    from xairobust.attacks.pgd import pgd_attack
    from xairobust.explain.base import differentiable_explainer
    from xairobust.manipulate import AttackSettings, manipulate_batch, softplus_copy
    from xairobust.visualize._core import l2_pgd

    calls: list[str] = []
    original = ThreatModel.step

    def counted(self, *a, **k):
        calls.append(self.norm)
        return original(self, *a, **k)

    monkeypatch.setattr(ThreatModel, "step", counted)
    x = torch.rand(2, 1, 8, 8)
    y = net(x).argmax(1)
    pgd_attack(net, x, y, norm="linf", eps=0.1, step_size=0.05, steps=2)
    assert len(calls) == 2
    bim_regression_attack(net, x, torch.randn(2, 5), eps=0.01, step_size=0.002, max_iter=2)
    assert len(calls) == 4
    manipulate_batch(net, softplus_copy(net, 10.0), differentiable_explainer("saliency"), "topk", x, y,
                     torch.arange(2), AttackSettings(eps=0.1, steps=2))
    assert len(calls) == 6
    l2_pgd(lambda z: net(z)[:, 0], x, eps=1.0, step_size=0.2, steps=2, value_range=(0.0, 1.0), maximize=True)
    assert calls == ["linf"] * 6 + ["l2"] * 2
