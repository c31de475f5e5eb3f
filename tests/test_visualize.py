"""Feature visualisation (xairobust/visualize): L2 PGD, the representation, the three kinds, the stage."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xairobust.data.base import DatasetInfo, DataSplit
from xairobust.errors import ConfigError
from xairobust.perturb import eval_mode
from xairobust.registry import VISUALISATIONS
from xairobust.visualize._core import Representation, l2_pgd, project_l2
from xairobust.visualize.base import Context, preset_values, resolve_params
from xairobust.visualize.generation import class_normal_draws


def synthetic_split(shape, n_per_class=6, classes=3, lo=0.0, hi=1.0, seed=0) -> DataSplit:
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand((n_per_class * classes, *shape), generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    info = DatasetInfo(name="synthetic", task="classification", num_outputs=classes, input_shape=tuple(shape),
                       mean=(0.5,) * shape[0], std=(0.25,) * shape[0])
    return DataSplit(x, y, info)


class TinyConv(nn.Module):
    """conv-BN-ReLU, global average pool, linear: any input size, BatchNorm to catch train mode."""

    def __init__(self, cin=3, classes=3, width=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def context(model, split, n=2, **kw) -> Context:
    model.eval()
    rep = Representation(model, split.inputs(torch.tensor([0])), kw.pop("layer", None))
    return Context(model=model, test=split, rep=rep, device=torch.device("cpu"), n=n, seed=kw.pop("seed", 0), **kw)


# -- L2 PGD -----------------------------------------------------------------------------------


def test_project_l2_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((5, 3, 4, 4), generator=g)
    x = x0 + 2 * torch.randn((5, 3, 4, 4), generator=g)
    eps = 1.5
    out = project_l2(x, x0, eps)
    for i in range(5):
        d = (x[i] - x0[i]).flatten()
        expect = x0[i].flatten() + (d if d.norm() <= eps else d * eps / d.norm())
        torch.testing.assert_close(out[i].flatten(), expect)
    inside = x0 + 0.01 * (x - x0)
    torch.testing.assert_close(project_l2(inside, x0, eps), inside)


@pytest.mark.parametrize("maximize", [True, False])
def test_every_pgd_step_stays_in_the_l2_ball_and_the_value_range(maximize):
    torch.manual_seed(0)
    model = TinyConv().eval()
    x0 = torch.rand((4, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    eps, step = 0.6, 0.25
    norms = []

    def check(t, x):
        d = (x - x0).flatten(1).norm(dim=1)
        assert bool((d <= eps * (1 + 1e-5)).all()), f"step {t}: {d.max()} > {eps}"
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        norms.append(float(d.max()))

    l2_pgd(lambda x: model(x)[:, 0], x0, eps=eps, step_size=step, steps=12, value_range=(0.0, 1.0),
           maximize=maximize, on_step=check)
    assert len(norms) == 12
    assert max(norms) > 0.9 * eps  # the ball was reached, so the projection did work


def test_pgd_refuses_a_start_outside_the_value_range():
    with pytest.raises(ValueError):
        l2_pgd(lambda x: x.sum((1, 2, 3)), torch.full((1, 1, 2, 2), 1.5), eps=1, step_size=0.1, steps=1,
               value_range=(0.0, 1.0), maximize=True)


# -- representation -----------------------------------------------------------------------------


def test_representation_is_the_input_of_the_final_linear_layer_or_a_named_module():
    torch.manual_seed(0)
    model = TinyConv().eval()
    x = torch.rand(3, 3, 8, 8)
    rep = Representation(model, x)
    assert rep.describe == "input of fc"
    r, logits = rep(x)
    expect = model.pool(model.features(x)).flatten(1)
    torch.testing.assert_close(r, expect)
    torch.testing.assert_close(logits, model(x))
    named = Representation(model, x, "features.2")
    torch.testing.assert_close(named(x)[0], model.features(x).flatten(1))
    torch.testing.assert_close(named.units(x), model.features(x).mean((2, 3)))
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        Representation(model, x, "feature.2")


# -- the three kinds -----------------------------------------------------------------------------


def test_inversion_with_an_identity_representation_recovers_the_target():
    """R(x) = x (a linear head on the flattened input): the inverse is the target itself; a
    fixed-step method ends within one step of it."""
    split = synthetic_split((1, 4, 4), n_per_class=3, lo=0.2, hi=0.8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    ctx = context(model, split, n=3)
    params = resolve_params(VISUALISATIONS.get("inversion"), "inversion", "quick", split.info,
                            {"steps": 400, "step_size": 0.01, "eps": 100})
    tensors, summary = VISUALISATIONS.get("inversion")().run(ctx, params)
    assert ctx.rep.describe == "input of 1"
    assert bool((tensors["source_indices"] >= 0).all())
    labels = split.y
    assert bool((labels[tensors["source_indices"]] != labels[tensors["indices"]]).all())  # other class
    dist = (tensors["results"] - tensors["targets"]).flatten(1).norm(dim=1)
    start = (tensors["sources"] - tensors["targets"]).flatten(1).norm(dim=1)
    assert bool((start > 0.5).all())
    assert bool((dist <= 0.01 + 1e-5).all()), dist
    torch.testing.assert_close(tensors["targets"], split.inputs(tensors["indices"]))


def test_generation_on_a_linear_model_moves_along_the_class_weight_vector():
    split = synthetic_split((1, 4, 4), n_per_class=40, lo=0.4, hi=0.6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    ctx = context(model, split, n=4)
    steps, step = 5, 0.01  # 0.05 in total: never reaches the [0, 1] bounds from [0.4, 0.6]
    params = resolve_params(VISUALISATIONS.get("generation"), "generation", "quick", split.info,
                            {"steps": steps, "step_size": step, "eps": 10})
    tensors, _ = VISUALISATIONS.get("generation")().run(ctx, params)
    w = model[1].weight.detach()
    assert tensors["classes"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for i, c in enumerate(tensors["classes"].tolist()):
        move = (tensors["results"][i] - tensors["sources"][i]).flatten()
        cos = float(move @ w[c] / (move.norm() * w[c].norm()))
        assert cos > 1 - 1e-5
        assert math.isclose(float(move.norm()), steps * step, rel_tol=1e-4)
    assert bool((tensors["logit"] > tensors["logit_start"]).all())


def test_class_normal_draws_have_the_class_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    base = 0.5 + 0.1 * torch.randn((50, 1, 2, 2), generator=g)
    base[:, 0, 0, 1] = base[:, 0, 0, 0] * 0.5 + 0.25  # a correlated pair
    draws = class_normal_draws(base, 20000, torch.Generator().manual_seed(1), 1e-6, 32, None)
    flat, ref = draws.flatten(1).double(), base.flatten(1).double()
    torch.testing.assert_close(flat.mean(0), ref.mean(0), atol=3e-3, rtol=0)
    cov_ref = (ref - ref.mean(0)).T @ (ref - ref.mean(0)) / len(ref)
    torch.testing.assert_close(torch.cov(flat.T, correction=0), cov_ref, atol=5e-4, rtol=0)


def test_class_normal_draws_above_fit_size_are_fitted_downsampled_and_upsampled():
    x = torch.rand((10, 3, 160, 160), generator=torch.Generator().manual_seed(0))
    draws = class_normal_draws(x, 3, torch.Generator().manual_seed(1), 1e-4, 32, (0.0, 1.0))
    assert draws.shape == (3, 3, 160, 160) and draws.dtype == torch.float32
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1


def test_feature_visualisation_raises_its_unit_and_lists_the_top_activating_images():
    torch.manual_seed(0)
    split = synthetic_split((3, 8, 8), n_per_class=5)
    model = TinyConv(width=6)
    ctx = context(model, split, n=3)
    params = resolve_params(VISUALISATIONS.get("feature"), "feature", "quick", split.info, {"steps": 20, "top_k": 4})
    tensors, summary = VISUALISATIONS.get("feature")().run(ctx, params)
    units = tensors["units"]
    assert len(units) == 3 and len(set(units.tolist())) == 3
    assert bool((tensors["activation"] >= tensors["activation_start"]).all())
    # top-k against a direct computation over the whole test split
    with torch.no_grad():
        acts = model.pool(model.features(split.inputs())).flatten(1)[:, units]
    for j in range(3):
        order = torch.sort(acts[:, j], descending=True, stable=True).indices[:4]
        assert tensors["topk_indices"][j].tolist() == order.tolist()
        torch.testing.assert_close(tensors["topk_activations"][j], acts[order, j])
        torch.testing.assert_close(tensors["topk_images"][j], split.inputs(order))


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 160, 160)], ids=["digits", "cifar", "imagenette"])
def test_every_kind_runs_on_each_input_size_and_keeps_the_model_in_eval_mode(shape):
    torch.manual_seed(0)
    split = synthetic_split(shape, n_per_class=4)
    model = TinyConv(cin=shape[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    model.features[1].register_forward_pre_hook(lambda m, i: seen.append(m.training))
    model.train()  # even a model handed over in train mode is run in eval mode, then restored
    for name in VISUALISATIONS.names():
        cls = VISUALISATIONS.get(name)
        ctx = context(model, split, n=2)
        model.train()
        params = resolve_params(cls, name, "quick", split.info, {"steps": 2})
        with eval_mode(model, freeze=True):
            tensors, _ = cls().run(ctx, params)
        assert model.training
        assert tensors["results"].shape[1:] == shape
        assert float(tensors["results"].min()) >= 0 and float(tensors["results"].max()) <= 1
    assert seen and not any(seen)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_presets_are_the_papers_settings_scaled_to_small_inputs():
    cifar = DatasetInfo("c", "classification", 10, (3, 32, 32), (0,) * 3, (1,) * 3)
    inet = DatasetInfo("i", "classification", 10, (3, 160, 160), (0,) * 3, (1,) * 3)
    digits = DatasetInfo("d", "classification", 10, (1, 8, 8), (0,), (1,))
    assert preset_values("inversion", "boychev", cifar) == {"steps": 10000, "eps": 1000.0, "step_size": 1.0}
    assert preset_values("generation", "boychev", cifar) == {"steps": 60, "eps": 30.0, "step_size": 0.5}
    assert preset_values("generation", "boychev", inet) == {"steps": 60, "eps": 40.0, "step_size": 1.0}
    assert preset_values("feature", "boychev", inet) == {"steps": 400, "eps": 1000.0, "step_size": 1.0}
    d = preset_values("generation", "boychev", digits)
    assert math.isclose(d["eps"], 30 * math.sqrt(64 / 3072)) and math.isclose(d["step_size"], 0.5 * math.sqrt(64 / 3072))
    with pytest.raises(ConfigError, match="preset"):
        preset_values("inversion", "boychv", cifar)


# -- the stage on a digits run ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inversion", "generation", "feature"])
def test_stage_is_seeded_byte_identical_and_skips_when_current(digits_run, tmp_path, kind):
    import shutil

    from xairobust.stages.visualize import VisualizeConfig, visual_paths, visualize

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    conf = VisualizeConfig(kind=kind, preset="quick", params={"steps": 3}, n=2, seed=5, device="cpu")
    path = visualize(run, conf, quiet=True)
    first = path.read_bytes()
    doc_mtime = visual_paths(run, kind)[1].stat().st_mtime_ns
    visualize(run, conf, quiet=True)  # current: nothing rewritten
    assert visual_paths(run, kind)[1].stat().st_mtime_ns == doc_mtime
    shutil.rmtree(run / "visualisations")
    assert visualize(run, conf, quiet=True).read_bytes() == first
    other = visualize(run, VisualizeConfig(kind=kind, preset="quick", params={"steps": 3}, n=2, seed=6, device="cpu"),
                      quiet=True)
    assert other.read_bytes() != first
