"""A2M2E's joint loss and the BIM adversarial-training schedule."""

from __future__ import annotations

import csv

import pytest
import torch
from mer_fixtures import make_midlevel, make_soundtracks

from xairobust.errors import ConfigError
from xairobust.models.base import create_model
from xairobust.stages.train import TrainConfig, build_method, train
from xairobust.training.base import TrainContext
from xairobust.training.mer import is_adversarial_epoch


def ctx(extras=None, epoch=0):
    return TrainContext(task="regression", criterion=torch.nn.functional.mse_loss, num_outputs=8, value_range=None,
                        generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), epoch=epoch,
                        extras=extras or {})


def test_joint_loss_is_half_emotion_mse_plus_half_midlevel_mse():
    torch.manual_seed(0)
    model = create_model("a2m2e", num_outputs=8, in_channels=1, width=0.125).eval()
    x, y, mid = torch.randn(3, 1, 313, 149), torch.rand(3, 8), torch.rand(3, 7)
    method = build_method("a2m2e_joint", {})
    method.prepare(model, ctx({"midlevel": mid[:0]}))
    loss, logs = method.loss(model, x, y, ctx({"midlevel": mid}))
    net = model.net
    h = net.trunk(x)  # the Normalize layer is the identity (mean 0, std 1)
    concepts = h @ net.concepts.weight.T + net.concepts.bias
    emotions = concepts @ net.head.weight.T + net.head.bias
    expected = 0.5 * ((emotions - y) ** 2).mean() + 0.5 * ((concepts - mid) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"emotion_loss", "midlevel_loss"}


def test_joint_method_refuses_a_model_without_bottleneck_and_missing_targets():
    method = build_method("a2m2e_joint", {})
    with pytest.raises(ConfigError, match="--model a2m2e"):
        method.prepare(create_model("a2e", num_outputs=8, in_channels=1, width=0.125), ctx())
    model = create_model("a2m2e", num_outputs=8, in_channels=1, width=0.125)
    with pytest.raises(ConfigError, match="midlevel: true"):
        method.prepare(model, ctx())
    with pytest.raises(ConfigError, match="midlevel: true"):
        method.loss(model, torch.randn(2, 1, 313, 149), torch.rand(2, 8), ctx())
    with pytest.raises(ConfigError, match="--midlevel-weight must be > 0"):
        build_method("a2m2e_joint", {"midlevel_weight": 0})


def test_adversarial_epochs_are_every_nth_counted_from_one():
    assert [e + 1 for e in range(20) if is_adversarial_epoch(e, 5)] == [5, 10, 15, 20]
    assert [e + 1 for e in range(4) if is_adversarial_epoch(e, 1)] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="--every must be >= 1"):
        build_method("bim_adv", {"every": 0})


@pytest.fixture(scope="module")
def mer_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mertrain")
    make_soundtracks(root, n=20, seconds=0.6)
    make_midlevel(root / "midlevel", list(range(1, 21)))
    return root


def tiny_conf(root, **kw):
    base = dict(dataset="soundtracks", dataset_kwargs={"cache_dir": str(root / "cache")}, model="a2e",
                model_kwargs={"width": 0.125}, epochs=2, batch_size=8, optimizer="adam", lr=5e-4,
                weight_decay=0.0, schedule="constant", data_dir=str(root))
    base.update(kw)
    return TrainConfig(**base)


def test_bim_adv_takes_an_extra_step_after_the_clean_one_on_adversarial_epochs(mer_root, tmp_path, monkeypatch):
    """16 training excerpts, batch 8: epoch 1 = 2 clean steps; epoch 2 (every=2) = 2 x (clean + adversarial).

    The adversarial batch must be computed with the weights *after* that batch's clean step.
    """
    import xairobust.attacks.bim_regression as bim

    events: list[tuple[str, torch.Tensor]] = []
    first_conv = {}
    real_step = torch.optim.Adam.step
    real_attack = bim.bim_regression_attack

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        events.append(("step", first_conv["w"].detach().clone()))
        return out

    def attack(model, x, y, **k):
        events.append(("attack", first_conv["w"].detach().clone()))
        assert k["max_iter"] == 3 and k["eps"] == 0.001
        return real_attack(model, x, y, **k)

    real_create = create_model

    def create(name, **kw):
        model = real_create(name, **kw)
        first_conv["w"] = model.net.trunk.layers[0].weight
        return model

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(bim, "bim_regression_attack", attack)
    monkeypatch.setattr("xairobust.stages.train.create_model", create)
    run = train(tiny_conf(mer_root, method="bim_adv", method_params={"every": 2, "attack_iter": 3}), tmp_path / "r", quiet=True)
    kinds = [k for k, _ in events]
    assert kinds == ["step", "step", "step", "attack", "step", "step", "attack", "step"]
    for i, (kind, w) in enumerate(events):
        if kind == "attack":
            assert torch.equal(w, events[i - 1][1])  # attacked the model as left by the clean step
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert rows[0]["train_adv_loss"] == "" and float(rows[1]["train_adv_loss"]) > 0


def test_a2m2e_trains_end_to_end_with_midlevel_extras(mer_root, tmp_path):
    conf = tiny_conf(mer_root, model="a2m2e", method="a2m2e_joint", epochs=1,
                     dataset_kwargs={"cache_dir": str(mer_root / "cache"), "midlevel": True})
    run = train(conf, tmp_path / "a2m2e", quiet=True)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert float(rows[0]["train_midlevel_loss"]) > 0
    assert abs(0.5 * float(rows[0]["train_emotion_loss"]) + 0.5 * float(rows[0]["train_midlevel_loss"])
               - float(rows[0]["train_loss"])) < 1e-5


def test_a2m2e_without_annotations_fails_before_writing_anything(mer_root, tmp_path):
    conf = tiny_conf(mer_root, model="a2m2e", method="a2m2e_joint", epochs=1)
    with pytest.raises(ConfigError, match="mid-level targets"):
        train(conf, tmp_path / "nothing", quiet=True)
    assert not (tmp_path / "nothing").exists()
