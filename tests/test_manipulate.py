"""Manipulation attacks, measures, the softplus copy and the registered explainers' create_graph path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from xairobust.explain.base import differentiable_explainer
from xairobust.manipulate import (
    MANIPULATIONS,
    AttackSettings,
    Pair,
    compute_measures,
    manipulate_batch,
    softplus_copy,
    to_map,
)
from xairobust.manipulate.measures import centre_of_mass, spearman_rows, topk_intersection
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS

INPUT_ATTACKS = [a for a in MANIPULATIONS.names() if not getattr(MANIPULATIONS.get(a), "model_level", False)]
# Every explainer the manipulate stage and fool training accept: the registry's differentiable ones.
DIFFERENTIABLE = [n for n in EXPLAINERS.names() if EXPLAINERS.get(n).differentiable]
# Non-default parameters whose create_graph branch differs (abs, noise-tunnel types, baselines).
VARIANTS = [(n, {}) for n in DIFFERENTIABLE] + [
    ("saliency", {"abs": True}),
    ("smoothgrad", {"nt_type": "smoothgrad_sq", "n_samples": 5}),
    ("smoothgrad", {"nt_type": "vargrad", "n_samples": 5, "abs": True}),
    ("smoothgrad_ig", {"nt_type": "vargrad", "n_samples": 3, "n_steps": 6}),
    ("ig", {"baseline": "blurred", "blur_sigma": 1.0, "n_steps": 8, "method": "gausslegendre"}),
    ("ig", {"baseline": "uniform", "n_steps": 8}),
]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("digits_cnn", num_outputs=10, in_channels=1, width=8).eval()


@pytest.fixture(scope="module")
def digits_x():
    from xairobust.data.base import get_dataset

    ds = get_dataset("digits", "test", None)
    return ds.inputs(torch.arange(24))


# -- one explainer stack: create_graph=True is the same map as explain's ----------------------


def test_the_manipulable_explainers_are_the_registered_gradient_ones():
    # a guard against the list shrinking silently (a new differentiable explainer is looped over
    # by every test below without being named here)
    assert set(DIFFERENTIABLE) >= {"ig", "saliency", "input_x_gradient", "smoothgrad", "smoothgrad_ig"}


@pytest.mark.parametrize("name,params", VARIANTS, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p in VARIANTS])
def test_create_graph_equals_the_explain_map_and_keeps_the_graph(name, params, cnn):
    """The attacked map (create_graph=True) is the map `explain` computes for that name and
    parameters (``build_explainer``, Captum's path), to 1e-6, and carries the graph to the input."""
    from xairobust.stages.explain import build_explainer

    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    t, seeds = torch.tensor([1, 2, 3]), torch.arange(3) + 17
    plain = build_explainer(name, params).attribute(cnn, x, t, seeds)
    ex = differentiable_explainer(name, params)
    xr = x.clone().requires_grad_()
    graph = ex.attribute(cnn, xr, t, seeds, create_graph=True)
    assert graph.requires_grad and not plain.requires_grad
    scale = float(plain.abs().max())
    assert scale > 0  # not trivially equal (all zero)
    # relative to the map's scale (an untrained net's squared gradients are ~1e-5); measured: 0, bit-identical
    assert float((graph.detach() - plain).abs().max()) <= 1e-6 * scale
    # through the softplus copy the explanation has a non-zero input gradient
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(to_map(ex.attribute(softplus_copy(cnn, 10.0), xr, t, seeds, create_graph=True)).sum(), xr)
    assert g.abs().sum() > 0


def test_create_graph_gradient_equals_finite_differences():
    """d(sum of the saliency map)/dx on a smooth tiny net, against central differences in float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Softplus(beta=2.0), nn.Linear(5, 3)).double()
    x = torch.rand(2, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t, seeds = torch.tensor([0, 2]), torch.arange(2)
    for name in ("saliency", "input_x_gradient", "ig"):
        ex = differentiable_explainer(name, {"n_steps": 4} if name == "ig" else {})

        def f(z, ex=ex):
            return ex.attribute(net, z, t, seeds, create_graph=True).pow(2).sum()

        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(f(xr), xr)
        fd = torch.zeros_like(x)
        for i in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=torch.float64)
            e[i] = 1e-6
            e = e.view_as(x)
            fd.view(-1)[i] = (f(x + e) - f(x - e)) / 2e-6
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-8)


def test_not_differentiable_is_refused_in_one_line():
    from xairobust.errors import ConfigError

    with pytest.raises(ConfigError, match="no differentiable version.*--transfer-to lime"):
        differentiable_explainer("lime")


# -- softplus copy ----------------------------------------------------------------------------


def test_softplus_copy_shares_weights_and_is_never_saved(cnn):
    smooth = softplus_copy(cnn, 5.0)
    assert smooth.replaced == 3
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert any(isinstance(m, nn.ReLU) for m in cnn.modules())  # the original is untouched
    for (n1, a), (n2, b) in zip(cnn.named_parameters(), smooth.net.named_parameters(), strict=True):
        assert n1 == n2 and a is b
    x = torch.rand(2, 1, 8, 8)
    before = smooth(x).detach()
    with torch.no_grad():
        w = cnn.net.head[-1].bias
        w += 1.0
    assert torch.allclose(smooth(x).detach(), before + 1.0, atol=1e-5)  # shared, not copied
    with torch.no_grad():
        w -= 1.0
    with pytest.raises(Exception, match="never saved"):
        smooth.state_dict()
    with pytest.raises(Exception, match="never saved"):
        torch.save(smooth, io.BytesIO())
    # large beta -> the copy approaches the ReLU network
    assert torch.allclose(softplus_copy(cnn, 1e4)(x), cnn(x), atol=1e-3)


# -- measures against independent computations --------------------------------------------------


def test_spearman_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.random((6, 30))
    b = a + rng.normal(0, 0.3, (6, 30))
    a[0, :10] = 0.0  # ties
    b[1] = 1.0  # constant row -> 0 by definition
    got = spearman_rows(a, b)
    for i in range(6):
        want = 0.0 if i == 1 else spearmanr(a[i], b[i]).statistic
        assert got[i] == pytest.approx(want, abs=1e-12)


def test_topk_intersection_equals_direct_sets():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(5, 40, generator=g)
    b = torch.rand(5, 40, generator=g)
    for frac in (0.01, 0.05, 0.1, 0.5):
        k = max(1, round(frac * 40))
        got = topk_intersection(a, b, frac)
        for i in range(5):
            sa = set(np.argsort(-a[i].numpy())[:k])
            sb = set(np.argsort(-b[i].numpy())[:k])
            assert float(got[i]) == pytest.approx(len(sa & sb) / k)
    assert torch.all(topk_intersection(a, a, 0.1) == 1)


def test_centre_of_mass_direct():
    m = torch.zeros(1, 5, 7)
    m[0, 1, 2] = 1.0
    m[0, 3, 6] = 3.0
    torch.testing.assert_close(centre_of_mass(m), torch.tensor([[(1 + 9) / 4, (2 + 18) / 4]]))


def test_fooled_needs_unchanged_prediction():
    m = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    other = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(9))
    x = torch.zeros(4, 1, 8, 8)
    p = Pair(m, other, x, x, torch.tensor([1, 1, 1, 1]), torch.tensor([1, 2, 1, 1]))
    r = compute_measures(p, "spearman", 0.5)
    assert r["fooled"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert r["pred_unchanged"].tolist() == [1.0, 0.0, 1.0, 1.0]
    same = compute_measures(Pair(m, m, x, x, torch.ones(4), torch.ones(4)))
    assert torch.all(same["topk_10"] == 1) and torch.all(same["fooled"] == 0)
    assert torch.allclose(same["ssim"], torch.ones(4, dtype=torch.float64))


# -- attacks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", INPUT_ATTACKS)
def test_linear_model_gradient_explanation_cannot_change(attack):
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = lin(x).argmax(1)
    sal = differentiable_explainer("saliency")
    s = AttackSettings(eps=0.1, steps=5)
    orig = to_map(sal.attribute(lin, x, t, torch.arange(6)))
    xa, _ = manipulate_batch(lin, softplus_copy(lin, 10.0), sal, attack, x, t, torch.arange(6), s,
                             target_map=orig.roll(1, 0))
    adv = to_map(sal.attribute(lin, xa, t, torch.arange(6)))
    r = compute_measures(Pair(orig, adv, x, xa, t, lin(xa).argmax(1)))
    assert float(r["fooled"].sum()) == 0
    assert torch.all(r["topk_10"] == 1) and torch.allclose(r["spearman"], torch.ones(6, dtype=torch.float64))


@pytest.fixture(scope="module")
def trained(digits_run):
    from xairobust.runs import load_run

    return load_run(digits_run)[0]


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.0)])
def test_topk_beats_random_of_same_norm_and_stays_in_budget(norm, eps, trained, digits_x):
    cnn, x = trained, digits_x
    t = cnn(x).argmax(1)
    seeds = torch.arange(len(x))
    sal = differentiable_explainer("saliency")
    orig = to_map(sal.attribute(cnn, x, t, seeds))
    out = {}
    for attack in ("topk", "random"):
        trace: list = []
        s = AttackSettings(norm=norm, eps=eps, steps=20, beta=10.0)
        xa, kept = manipulate_batch(cnn, softplus_copy(cnn, 10.0), sal, attack, x, t, seeds, s, trace=trace)
        for step in trace:  # every step inside the budget
            assert float(step[norm].max()) <= eps * (1 + 1e-5)
        d = (xa - x).flatten(1)
        assert float((d.abs().amax(1) if norm == "linf" else d.norm(dim=1)).max()) <= eps * (1 + 1e-5)
        assert xa.min() >= 0 and xa.max() <= 1
        assert torch.equal(cnn(xa).argmax(1), t)
        out[attack] = float(topk_intersection(orig, to_map(sal.attribute(cnn, xa, t, seeds)), 0.1).mean())
    # the top-k attack removes at least twice as much of the original top-10 % as random noise
    assert 1 - out["topk"] > 2 * (1 - out["random"]), out


def test_prediction_unchanged_is_enforced(cnn, digits_x):
    x, t = digits_x, cnn(digits_x).argmax(1)
    trace: list = []
    s = AttackSettings(eps=0.6, steps=8, step_size=0.2)  # large enough that steps flip predictions
    sal = differentiable_explainer("saliency")
    xa, kept = manipulate_batch(cnn, softplus_copy(cnn, 10.0), sal, "masscenter", x, t,
                                torch.arange(len(x)), s, trace=trace)
    assert any(not bool(step["pred_kept"].all()) for step in trace)  # some steps did flip
    assert torch.equal(cnn(xa).argmax(1), t)  # but never a returned input
    assert torch.all(xa[kept == 0] == x[kept == 0])


def test_attack_is_batch_independent(cnn, digits_x):
    x, t = digits_x[:6], cnn(digits_x[:6]).argmax(1)
    seeds = torch.arange(6) * 7
    ig = differentiable_explainer("ig", {"n_steps": 4})
    s = AttackSettings(eps=0.1, steps=3)
    sm = softplus_copy(cnn, 10.0)
    for attack in ("topk", "random"):
        full, _ = manipulate_batch(cnn, sm, ig, attack, x, t, seeds, s)
        parts = torch.cat([manipulate_batch(cnn, sm, ig, attack, x[i : i + 2], t[i : i + 2], seeds[i : i + 2], s)[0]
                           for i in range(0, 6, 2)])
        torch.testing.assert_close(parts, full, rtol=1e-5, atol=1e-6)


# -- stage, command, model manipulation ---------------------------------------------------------


def _conf(**kw):
    from xairobust import config as cfg
    from xairobust.stages.manipulate import ManipulateConfig

    base = {"attack": "topk", "explainer": "ig", "params": {"n_steps": 4}, "eps": "0.1", "steps": 2, "n": 6,
            "transfer_to": "saliency", "device": "cpu"}
    return cfg.build(ManipulateConfig, {**base, **kw}, "test")


def test_stage_outputs_provenance_and_batch_independence(digits_run, tmp_path):
    import shutil

    import pandas as pd

    from xairobust.runs import file_sha256, load_tensors, read_json
    from xairobust.stages.contract import verify_chain
    from xairobust.stages.manipulate import ManipulateStage, manipulate

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    weights = file_sha256(run / "model.safetensors")
    doc_path = manipulate(run, _conf(batch_size=6), quiet=True)
    files = sorted(p.name for p in (run / "manipulation").iterdir())
    assert files == ["topk_ig.csv", "topk_ig.json", "topk_ig.safetensors"]  # nothing else (no smooth copy)
    assert file_sha256(run / "model.safetensors") == weights
    doc = verify_chain(doc_path, run, "hint")
    assert doc["provenance"]["stage"] == "manipulate" and doc["softplus_replaced_relus"] == 3
    assert set(doc["means"]) == {"ig", "saliency"}
    t = load_tensors(run / "manipulation" / "topk_ig.safetensors")
    assert torch.equal(t["preds_adv"], t["targets"])
    assert float((t["inputs_adv"] - t["inputs"]).abs().max()) <= 0.1 + 1e-6
    df = pd.read_csv(run / "manipulation" / "topk_ig.csv")
    assert list(df.columns) == ["index", "target", "explainer", "metric", "value"]
    assert len(set(df["metric"])) == 10 and len(df) == 6 * 10 * 2
    mtime = doc_path.stat().st_mtime_ns
    assert ManipulateStage().is_current(run, _conf(batch_size=6))
    manipulate(run, _conf(batch_size=2), quiet=True)  # batch size is not part of the identity
    assert doc_path.stat().st_mtime_ns == mtime
    # recomputed with another batch size: same numbers
    doc_path.unlink()
    manipulate(run, _conf(batch_size=4), quiet=True)
    again = pd.read_csv(run / "manipulation" / "topk_ig.csv")
    np.testing.assert_allclose(again["value"].to_numpy(), df["value"].to_numpy(), rtol=1e-6, atol=1e-7)
    assert read_json(doc_path)["cost"]["attack_over_explain"] > 1


def test_cli_errors_are_one_line(digits_run):
    from click.testing import CliRunner

    from xairobust.cli import main

    r = CliRunner().invoke(main, ["manipulate", "--run", str(digits_run), "--explainer", "lime"])
    assert r.exception is not None and "no differentiable version" in str(r.exception)
    r = CliRunner().invoke(main, ["manipulate", "--run", str(digits_run), "--attack", "topkk"])
    assert "Did you mean 'topk'" in str(r.exception)
    r = CliRunner().invoke(main, ["manipulate", "--run", str(digits_run), "--attack", "model"])
    assert "--method fool" in str(r.exception)


@pytest.mark.parametrize("fool", ["location", "topk", "active"])
def test_fool_loss_decreases_with_training(fool, cnn, digits_x):
    import copy

    from xairobust.training.base import TrainContext
    from xairobust.training.fool import FoolParams, FoolTraining

    model = copy.deepcopy(cnn)
    y = torch.arange(len(digits_x)) % 2 if fool == "active" else model(digits_x).argmax(1)
    method = FoolTraining(FoolParams(fool=fool, lam=1.0, class_a=0, class_b=1))
    ctx = TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=10,
                       value_range=(0.0, 1.0), generator=torch.Generator(), device=torch.device("cpu"))
    method.prepare(model, ctx)
    assert all(a is not b for a, b in zip(model.parameters(), method.reference.parameters(), strict=True))
    start = float(method.fool_loss(model, digits_x, y))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss, logs = method.loss(model, digits_x, y, ctx)
        opt.zero_grad()
        (logs["fool_loss"] * 0 + method.fool_loss(model, digits_x, y)).backward()
        opt.step()
    end = float(method.fool_loss(model, digits_x, y))
    assert end < 0.8 * start, (start, end)
    # the reference (w0) did not move
    for a, b in zip(cnn.parameters(), method.reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fool_run_is_an_ordinary_run_and_model_attack_scores_it(digits_run, tmp_path):
    from xairobust.runs import load_run, read_json
    from xairobust.stages.train import TrainConfig, train

    out = train(TrainConfig(epochs=1, method="fool", method_params={"fool": "location", "lam": 5.0},
                            init=str(digits_run), lr=0.02, label="fooled"), tmp_path / "fool", quiet=True)
    load_run(out)
    doc = read_json(manipulate_model(out))
    assert doc["attack"] == "model" and doc["provenance"]["inputs"]["reference_weights"]
    assert set(doc["means"]["saliency"]) >= {"spearman", "topk_10", "fooled"}
    assert doc["means"]["saliency"]["norm_linf"] == 0.0  # the inputs are not perturbed


def manipulate_model(run):
    from xairobust.stages.manipulate import manipulate

    return manipulate(run, _conf(attack="model", explainer="saliency", transfer_to="", params={}), quiet=True)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_manipulate_stage_attributions_equal_the_explain_stage(name, digits_run, tmp_path):
    """A name means one map: the manipulate stage's stored original attributions equal the explain
    stage's on the same samples, with the same (registered default) parameters, to 1e-6."""
    import shutil

    from xairobust import config as cfg
    from xairobust.runs import load_tensors
    from xairobust.stages.explain import ExplainConfig, explain, load_attributions
    from xairobust.stages.manipulate import ManipulateConfig, manipulate

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    conf = cfg.build(ManipulateConfig, {"attack": "random", "explainer": name, "n": 5, "steps": 1, "device": "cpu"}, "t")
    manipulate(run, conf, quiet=True)
    explain(run, cfg.build(ExplainConfig, {"explainer": name, "n": 5, "device": "cpu"}, "t"), quiet=True)
    mine = load_tensors(run / "manipulation" / f"random_{name}.safetensors")
    theirs, meta = load_attributions(run, name)
    assert torch.equal(mine["indices"], theirs["indices"]) and torch.equal(mine["targets"], theirs["targets"])
    assert float((mine["attributions"] - theirs["attributions"]).abs().max()) <= 1e-6
    from xairobust.runs import read_json

    assert read_json(run / "manipulation" / f"random_{name}.json")["params"] == meta["params"]
