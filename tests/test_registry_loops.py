"""Registry-looped tests for training methods and attacks (issue 12 item 6): every registered
entry is exercised on a tiny model, so a new one is tested without editing this file.

Methods: one training step on a small batch gives a finite loss with gradients, finite float
logs and finite extra steps -- or ``prepare`` refuses the setting with a one-line ConfigError
(e.g. a method that needs annotations the batch does not have). Attacks: for every norm the
attack declares, the adversarial inputs stay in the eps-ball (measured independently here) and
in the value range, and the loss does not go down.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from torch import nn

from xairobust import config as cfg
from xairobust.data.base import get_dataset
from xairobust.errors import ConfigError
from xairobust.models.base import create_model
from xairobust.registry import ATTACKS, METHODS
from xairobust.training.base import TrainContext

torch.set_num_threads(1)


def _tiny(task: str, outputs: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    split = get_dataset("digits", "train")
    idx = torch.arange(16)
    x = split.inputs(idx)
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=outputs, in_channels=x.shape[1], mean=[0.5], std=[0.5], width=4)
    if task == "classification":
        y = split.targets(idx)
    else:  # a regression target: 4 seeded random outputs per sample in [1, 7] (rating-like)
        y = 1 + 6 * torch.rand(len(idx), outputs, generator=torch.Generator().manual_seed(1))
    return model, x, y


@pytest.mark.parametrize("name", METHODS.names())
def test_every_training_method_takes_a_finite_step_or_refuses_cleanly(name):
    cls = METHODS.get(name)
    task = METHODS.meta(name).get("task", "classification")
    outputs = 10 if task == "classification" else 4
    model, x, y = _tiny(task, outputs)
    method = cls(cfg.build(cls.Params, {}, f"method '{name}'"))  # defaults must be valid
    ctx = TrainContext(task=task, criterion=nn.functional.cross_entropy if task == "classification" else nn.functional.mse_loss,
                       num_outputs=outputs, value_range=(0.0, 1.0), generator=torch.Generator().manual_seed(0),
                       device=torch.device("cpu"), total_epochs=1, extras={})
    try:
        method.prepare(model, ctx)
    except ConfigError as exc:  # a clean refusal of this setting is fine; a crash is not
        assert str(exc) and "\n" not in str(exc)
        return
    model.train()
    loss, logs = method.loss(model, x, y, ctx)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), f"{name}: no gradient reaches the weights"
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values()), logs
    for extra_loss, extra_logs in method.extra_steps(model, x, y, ctx):
        assert torch.isfinite(extra_loss) and all(math.isfinite(v) for v in extra_logs.values())
    json.dumps(method.describe())  # recorded in run.json
    assert METHODS.meta(name).get("label"), f"{name}: register it with a label (report rows)"


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().max(1).values if norm == "linf" else flat.pow(2).sum(1).sqrt()


# Values for whatever parameters an attack function takes (looked up by name in its signature).
POOL = {"steps": 5, "max_iter": 5, "random_start": False, "seed": 0, "batch_size": 16, "device": "cpu",
        "value_range": (0.0, 1.0), "num_classes": 10, "corr_threshold": None}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_its_ball_and_does_not_lower_the_loss(name):
    fn = ATTACKS.get(name)
    meta = ATTACKS.meta(name)
    task = meta.get("task", "classification")
    model, x, y = _tiny(task, 10 if task == "classification" else 4)
    model.eval()
    loss_fn = nn.functional.cross_entropy if task == "classification" else nn.functional.mse_loss
    params = inspect.signature(fn).parameters
    for norm in meta["norms"]:
        eps = 0.1 if norm == "linf" else 1.0
        kwargs = {k: v for k, v in {**POOL, "norm": norm, "eps": eps, "step_size": 2.5 * eps / 5}.items()
                  if k in params}
        if "loss_fn" in params:
            kwargs["loss_fn"] = loss_fn
        adv = fn(model, x, y, **kwargs)
        assert adv.shape == x.shape
        assert float(_norm(adv - x, norm).max()) <= eps * (1 + 1e-4) + 1e-6, f"{name} {norm}: left the eps-ball"
        if task == "classification":
            assert float(adv.min()) >= 0 and float(adv.max()) <= 1, f"{name}: left the value range"
        with torch.no_grad():
            before, after = loss_fn(model(x), y), loss_fn(model(adv), y)
        assert float(after) >= float(before) - 1e-6, f"{name} {norm}: the loss went down ({before} -> {after})"
