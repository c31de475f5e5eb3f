"""PGD attack and PGD adversarial training: distributions, projections, clamping, mode handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from xairobust.attacks.pgd import pgd_attack, pgd_worst_of_restarts
from xairobust.perturb import project, uniform_in_ball
from xairobust.training.base import TrainContext
from xairobust.training.pgd import PGDParams, PGDTraining


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))


def _data(n: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_l2_start_is_uniform_in_the_ball():
    # Uniform in the d-ball: r/eps has CDF s**d, i.e. (r/eps)**d ~ U(0, 1); direction is isotropic.
    d, n, eps = 6, 4000, 0.7
    x = torch.zeros(n, 1, 2, 3)
    delta = uniform_in_ball(x, "l2", eps, torch.Generator().manual_seed(0)).double()
    r = delta.flatten(1).norm(dim=1)
    assert float(r.max()) <= eps + 1e-6
    assert stats.kstest(((r / eps) ** d).numpy(), "uniform").pvalue > 1e-3
    # A renormalised-cube sampler fails the same test (the test can fail).
    cube = (torch.rand(n, d, generator=torch.Generator().manual_seed(0)) * 2 - 1).double()
    cube_r = cube.norm(dim=1) / math.sqrt(d) * eps
    assert stats.kstest(((cube_r / eps) ** d).numpy(), "uniform").pvalue < 1e-6
    # Isotropy: the mean direction is 0 within 4 standard errors (each coordinate has variance 1/d).
    u = delta.flatten(1) / r.unsqueeze(1)
    assert float(u.mean(0).abs().max()) < 4 * math.sqrt(1 / d / n)


def test_linf_start_is_uniform_in_the_cube():
    x = torch.zeros(3000, 4)
    delta = uniform_in_ball(x, "linf", 0.25, torch.Generator().manual_seed(0))
    assert float(delta.abs().max()) <= 0.25
    assert stats.kstest((delta.flatten().numpy() + 0.25) / 0.5, "uniform").pvalue > 1e-3


def test_projection_is_onto_the_ball():
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4], [-2.0, 0.1]])
    assert torch.allclose(project(delta, "l2", 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4], [-2.0 / np.hypot(2.0, 0.1), 0.1 / np.hypot(2.0, 0.1)]], dtype=torch.float32))
    assert torch.equal(project(delta, "linf", 0.5), delta.clamp(-0.5, 0.5))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_stays_in_budget_and_range_and_increases_the_loss(norm, eps):
    model = _net().eval()
    x, y = _data()
    adv = pgd_attack(model, x, y, norm=norm, eps=eps, step_size=eps / 4, steps=10, random_start=True,
                     loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    d = (adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        per = lambda inp: nn.functional.cross_entropy(model(inp), y, reduction="none")  # noqa: E731
        # PGD beats the best of 20 random points of the same ball on every sample.
        g = torch.Generator().manual_seed(1)
        best_random = torch.stack([per((x + uniform_in_ball(x, norm, eps, g)).clamp(0, 1)) for _ in range(20)]).max(0).values
        assert bool((per(adv) >= best_random).all())


def test_pgd_linf_on_a_linear_model_reaches_the_analytic_optimum():
    # For logits w.x (two classes) the worst L-inf perturbation of the margin is -eps*sign(w_y - w_other).
    torch.manual_seed(0)
    lin = nn.Linear(8, 2, bias=False)
    x = torch.rand(5, 8) * 0.5 + 0.25
    y = torch.zeros(5, dtype=torch.long)
    adv = pgd_attack(lin, x, y, norm="linf", eps=0.1, step_size=0.05, steps=5, random_start=False,
                     loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0), generator=None)
    w = lin.weight.detach()
    expected = x - 0.1 * torch.sign(w[0] - w[1])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_pgd_l2_on_a_linear_model_reaches_the_analytic_optimum():
    torch.manual_seed(0)
    lin = nn.Linear(8, 2, bias=False)
    x = torch.rand(5, 8) * 0.2 + 0.4
    y = torch.zeros(5, dtype=torch.long)
    adv = pgd_attack(lin, x, y, norm="l2", eps=0.2, step_size=0.1, steps=4, random_start=False,
                     loss_fn=nn.functional.cross_entropy, value_range=None, generator=None)
    w = (lin.weight[0] - lin.weight[1]).detach()
    assert torch.allclose(adv, x - 0.2 * w / w.norm(), atol=1e-6)


def test_no_clamp_when_value_range_is_none():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    x = torch.tensor([[0.0, 0.5]])
    y = torch.tensor([0])
    kw = dict(norm="linf", eps=0.3, step_size=0.3, steps=1, random_start=False, loss_fn=nn.functional.cross_entropy, generator=None)
    assert float(pgd_attack(lin, x, y, value_range=None, **kw)[0, 0]) == pytest.approx(-0.3)
    assert float(pgd_attack(lin, x, y, value_range=(0.0, 1.0), **kw)[0, 0]) == 0.0


def test_attack_runs_in_eval_mode_and_restores_train_mode_even_on_error():
    model = _net().train()
    seen = []

    def loss_fn(out, y):
        seen.append(model.training)
        return nn.functional.cross_entropy(out, y)

    x, y = _data(8)
    bn = model[2]
    running = bn.running_mean.clone()
    pgd_attack(model, x, y, norm="linf", eps=0.1, step_size=0.05, steps=2, random_start=True, loss_fn=loss_fn,
               value_range=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert seen == [False, False] and model.training
    assert torch.equal(bn.running_mean, running)  # eval mode: BN statistics untouched
    assert all(p.grad is None for p in model.parameters())

    def failing(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd_attack(model, x, y, norm="l2", eps=0.1, step_size=0.05, steps=2, random_start=True, loss_fn=failing,
                   value_range=(0.0, 1.0), generator=None)
    assert model.training
    model.eval()
    pgd_attack(model, x, y, norm="l2", eps=0.1, step_size=0.05, steps=1, random_start=False,
               loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0), generator=None)
    assert not model.training


def test_pgd_maximises_mse_for_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    x, y = torch.rand(16, 5), torch.rand(16, 2)
    adv = pgd_attack(model, x, y, norm="l2", eps=0.3, step_size=0.1, steps=8, random_start=False,
                     loss_fn=nn.functional.mse_loss, value_range=None, generator=None)
    with torch.no_grad():
        assert float(nn.functional.mse_loss(model(adv), y)) > float(nn.functional.mse_loss(model(x), y))


def test_restarts_keep_any_successful_restart():
    model = _net().eval()
    x, y = _data(64)
    kw = dict(norm="linf", eps=0.15, step_size=0.05, steps=3, random_start=True, loss_fn=nn.functional.cross_entropy,
              value_range=(0.0, 1.0))
    one = pgd_worst_of_restarts(model, x, y, restarts=1, generator=torch.Generator().manual_seed(3), **kw)
    many = pgd_worst_of_restarts(model, x, y, restarts=4, generator=torch.Generator().manual_seed(3), **kw)
    with torch.no_grad():
        wrong_one = model(one).argmax(1) != y
        wrong_many = model(many).argmax(1) != y
    assert bool((wrong_many | ~wrong_one).all())  # the first restart is the same draw: never worse
    assert int(wrong_many.sum()) >= int(wrong_one.sum())


def _ctx(epoch: int = 0, value_range=(0.0, 1.0)) -> TrainContext:
    return TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=3,
                        value_range=value_range, generator=torch.Generator().manual_seed(0),
                        device=torch.device("cpu"), epoch=epoch, total_epochs=4)


def test_training_loss_uses_the_attack_and_adv_every():
    model = _net().eval()  # eval: no dropout noise, so the loss can be recomputed exactly
    x, y = _data(16)
    method = PGDTraining(PGDParams(norm="linf", eps=0.2, steps=3, adv_every=2, random_start=False))
    loss0, logs0 = method.loss(model, x, y, _ctx(epoch=0))
    adv = pgd_attack(model, x, y, norm="linf", eps=0.2, step_size=2.5 * 0.2 / 3, steps=3, random_start=False,
                     loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0), generator=None)
    with torch.no_grad():
        adv_loss = float(nn.functional.cross_entropy(model(adv), y))
        clean_loss = float(nn.functional.cross_entropy(model(x), y))
    assert float(loss0.detach()) == pytest.approx(adv_loss, rel=1e-6) and adv_loss > clean_loss
    assert method.is_adversarial_epoch(0) and not method.is_adversarial_epoch(1) and method.is_adversarial_epoch(2)
    loss1, logs1 = method.loss(model, x, y, _ctx(epoch=1))  # a clean epoch
    assert float(loss1.detach()) == pytest.approx(clean_loss, rel=1e-6) and "adv_loss" not in logs1
    train_model = _net().train()
    method.loss(train_model, x, y, _ctx(epoch=0))
    assert train_model.training  # the attack handed train mode back


def test_adv_mix_averages_clean_and_adversarial_rows():
    model = _net()
    model.eval()  # deterministic forward so the value can be recomputed exactly
    x, y = _data(8)
    method = PGDTraining(PGDParams(norm="l2", eps=0.5, steps=2, adv_mix=True, random_start=False))
    loss, logs = method.loss(model, x, y, _ctx())
    adv = pgd_attack(model, x, y, norm="l2", eps=0.5, step_size=2.5 * 0.5 / 2, steps=2, random_start=False,
                     loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0), generator=None)
    with torch.no_grad():
        expected = 0.5 * (nn.functional.cross_entropy(model(x), y) + nn.functional.cross_entropy(model(adv), y))
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-6)
    assert logs["clean_loss"] == pytest.approx(float(nn.functional.cross_entropy(model(x), y)), abs=1e-6)


def test_eps_zero_is_clean_training_through_the_same_method():
    # The bottom rung of a robustness ladder: the loss is exactly the clean cross-entropy, every epoch.
    model = _net().eval()
    x, y = _data(16)
    method = PGDTraining(PGDParams(norm="l2", eps=0.0, steps=3, random_start=True))
    with torch.no_grad():
        clean_loss = float(nn.functional.cross_entropy(model(x), y))
    for epoch in (0, 1):
        loss, logs = method.loss(model, x, y, _ctx(epoch=epoch))
        assert float(loss.detach()) == pytest.approx(clean_loss, rel=1e-6) and "adv_loss" not in logs


@pytest.mark.parametrize("bad,match", [({"eps": -0.01}, "--eps"), ({"eps": -1}, "--eps"), ({"steps": 0}, "--steps"),
                                       ({"step_size": 0}, "--step-size"), ({"adv_every": 0}, "--adv-every")])
def test_bad_params_name_the_option(bad, match):
    from xairobust.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        PGDParams(**bad)


def test_presets_are_valid_train_configs():
    from pathlib import Path

    from xairobust import config as cfg
    from xairobust.stages.train import TrainConfig, build_method

    presets = sorted((Path(__file__).resolve().parents[1] / "configs" / "presets").glob("digits_*.yaml"))
    assert [p.stem for p in presets] == ["digits_jacobian", "digits_nsloss", "digits_pgd"]
    for path in presets:
        conf = cfg.build(TrainConfig, cfg.load_yaml(path), str(path))
        method = build_method(conf.method, conf.method_params)
        assert conf.dataset == "digits" and conf.method == path.stem.split("_")[1]
        if conf.method == "pgd":
            assert method.params.eps == pytest.approx(0.1) and method.params.resolved_step_size() == pytest.approx(0.025)
