"""ROAD (noisy linear imputation): the imputation against Quantus' own function and a naive dense
solve, the score against Quantus' ROAD (1 channel; Quantus 0.6 fails on 3) and against a direct
per-sample loop (3 channels). The registry loops in test_engines.py / test_metrics.py add the
engine equality on 1x8x8 for every explainer, batch sizes and seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quantus.functions.perturb_func import noisy_linear_imputation

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics.base import MetricInput
from xairobust.metrics.randomisation import QuantusRefused
from xairobust.metrics.road import NEIGHBOURS, impute, impute_groups, pixel_relevance
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.stages.score import make_explain

ROADS = ("road", "road_lerf", "road_symmetric")


def naive_impute(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Straight from the definition, one dense system: each removed pixel equals the weighted mean of
    its in-image 8 neighbours (direct 1/6, diagonal 1/12), removed neighbours at their own value."""
    x = x.astype(np.float64)
    c, h, w = x.shape
    unknown = [(r, q) for r in range(h) for q in range(w) if removed[r, q]]
    num = {p: k for k, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for k, (r, q) in enumerate(unknown):
        total = 0.0
        for dr in (-1, 0, 1):
            for dq in (-1, 0, 1):
                if (dr, dq) == (0, 0) or not (0 <= r + dr < h and 0 <= q + dq < w):
                    continue
                wt = 1 / 12 if dr and dq else 1 / 6
                total += wt
                if (r + dr, q + dq) in num:
                    a[k, num[(r + dr, q + dq)]] -= wt
                else:
                    b[k] += wt * x[:, r + dr, q + dq]
        a[k, k] += total
    out = x.copy()
    sol = np.linalg.solve(a, b)
    for k, (r, q) in enumerate(unknown):
        out[:, r, q] = sol[k]
    return out


def neighbour_mean(v: np.ndarray) -> np.ndarray:
    """(C, H, W) weighted mean of each pixel's in-image neighbours."""
    c, h, w = v.shape
    pad = np.pad(v, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((h, w)), 1)
    num, den = np.zeros_like(v), np.zeros((h, w))
    for (dr, dq), wt in NEIGHBOURS:
        num += wt * pad[:, 1 + dr : 1 + dr + h, 1 + dq : 1 + dq + w]
        den += wt * ones[1 + dr : 1 + dr + h, 1 + dq : 1 + dq + w]
    return num / den


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("share", [0.1, 0.6, 0.99])
def test_imputation_equals_quantus_and_a_naive_dense_solve(channels, share):
    rng = np.random.default_rng(int(share * 100) + channels)
    x = rng.random((channels, 7, 6)).astype(np.float32)
    idx = rng.choice(42, max(1, int(42 * share)), replace=False)
    removed = np.zeros(42, dtype=bool)
    removed[idx] = True
    removed = removed.reshape(7, 6)
    ours = impute(x[None], removed[None])[0]
    # Quantus' own imputation (noise 0) takes pixel indices and imputes every channel: it works for 3
    # channels when called with pixel indices (its ROAD passes C*H*W positions instead)
    np.testing.assert_allclose(ours.astype(np.float32), noisy_linear_imputation(x, idx, noise=0.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, naive_impute(x, removed), rtol=1e-10, atol=1e-12)
    # the defining property: every removed pixel is the weighted mean of its neighbours; kept pixels unchanged
    np.testing.assert_allclose(ours[:, removed], neighbour_mean(ours)[:, removed], atol=1e-12)
    np.testing.assert_array_equal(ours[:, ~removed], x[:, ~removed])


def test_constant_image_stays_constant_and_groups_do_not_change_the_solution():
    x = np.full((5, 3, 6, 6), 0.3)
    rng = np.random.default_rng(0)
    removed = rng.random((5, 6, 6)) < 0.7
    np.testing.assert_allclose(impute(x, removed), x, atol=1e-14)
    y = rng.random((5, 3, 6, 6))
    one = impute(y, removed)
    np.testing.assert_allclose(impute_groups(y, removed, max_unknowns=40), one, atol=1e-13)  # 1 system per solve
    np.testing.assert_allclose(np.stack([impute(y[i : i + 1], removed[i : i + 1])[0] for i in range(5)]), one, atol=1e-13)


def make_input(model, shape, explainer: str = "saliency", n: int = 6, seed: int = 0) -> MetricInput:
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    idx = torch.arange(n) * 5 + 2
    cls = EXPLAINERS.get(explainer)
    ex = cls(cfg.build(cls.Params, {}, explainer), None)
    a = ex.attribute(model, x, y, sample_seeds(0, idx))
    return MetricInput(model=model, x=x.numpy(), y=y.numpy(), a=a.detach().numpy(), indices=idx.numpy(),
                       explain=make_explain(torch.device("cpu"), ex, 0, seed), seed=seed, device=torch.device("cpu"),
                       value_range=(0.0, 1.0))


def metric(name: str, engine: str = "native", **params):
    cls = METRICS.get(name)
    m = cls(cfg.build(cls.Params, params, name))
    m.engine = engine
    return m


@pytest.fixture(scope="module")
def cnn16():
    """A 1-channel net on 16 x 16 (global pooling): 256 pixels, so even 1 % removes 2 of them."""
    torch.manual_seed(1)
    return create_model("cifar_cnn", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3], width=4).eval()


@pytest.mark.parametrize("name", ROADS)
def test_native_equals_quantus_road_on_one_channel(name, cnn16):
    inp = make_input(cnn16, (1, 16, 16), "ig")
    ref, new = metric(name, "quantus", percentages="5,20,40,60,80,95"), metric(name, percentages="5,20,40,60,80,95")
    new.draws_override = ref.reference_draws(inp)
    expected = ref.score(inp)
    np.testing.assert_array_equal(new.score(inp), expected)
    assert ref.diagnostics()["per_percentage"] == new.diagnostics()["per_percentage"]
    assert list(new.diagnostics()["per_percentage"]) == list(METRICS.get(name).orders)


def test_three_channels_against_a_direct_loop():
    """Native ROAD on 3 x 8 x 8 = per sample and percentage: Quantus' imputation of the top-k pixels of the
    channel-summed map in every channel, plus the native noise, then argmax == y."""
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    inp = make_input(model, (3, 8, 8), "saliency")
    pcts = (10.0, 30.0, 50.0, 70.0, 90.0)
    for name in ROADS:
        m = metric(name, percentages=",".join(map(str, pcts)), noise=0.05)
        got = m.score(inp)
        rel = pixel_relevance(inp.a)
        ks = [int(64 * p / 100) for p in pcts]
        orders = [np.argsort(-rel, 1) if o == "morf" else np.argsort(rel, 1) for o in m.orders]
        noise = m.noise(inp, np.arange(len(inp.x)), ks, orders)
        expected = np.zeros((len(m.orders), len(inp.x)))
        for i in range(len(inp.x)):
            for o, order in enumerate(orders):
                for p, k in enumerate(ks):
                    xi = noisy_linear_imputation(inp.x[i], order[i, :k], noise=0.0).reshape(3, -1)
                    xi[:, order[i, :k]] += (0.05 * noise[i, o, p][:, order[i, :k]]).astype(np.float32)
                    with torch.no_grad():
                        pred = int(model(torch.as_tensor(xi.reshape(1, 3, 8, 8))).argmax())
                    expected[o, i] += (pred == inp.y[i]) / len(ks)
        want = expected[0] if len(m.orders) == 1 else expected[0] - expected[1]
        np.testing.assert_allclose(got, want, atol=1e-12)
        # the noise is the sample's own: a subset of the samples gets the same values
        sub = np.array([4, 1])
        part = MetricInput(**{**inp.__dict__, "x": inp.x[sub], "y": inp.y[sub], "a": inp.a[sub], "indices": inp.indices[sub]})
        np.testing.assert_array_equal(metric(name, percentages=",".join(map(str, pcts)), noise=0.05).score(part), got[sub])


def test_quantus_path_refuses_three_channels_in_one_line():
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    with pytest.raises(QuantusRefused, match="3-channel input.*--engine native"):
        metric("road", "quantus").score(make_input(model, (3, 8, 8)))


def test_a_perfect_lerf_keeps_and_morf_breaks_a_linear_model():
    """A linear 1-channel model whose only evidence is the top-left block: removing it (MoRF, imputed from
    zeros around it) flips the prediction; removing the rest first (LeRF) keeps it."""
    w = torch.zeros(2, 1, 8, 8)
    w[0, 0, :3, :3] = 1.0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2, bias=True)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w.reshape(2, 64))
        model[1].bias.copy_(torch.tensor([0.0, 2.0]))
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, :3, :3] = 1.0  # class 0 logit 9 > 2
    a = (w[0:1] * x).numpy() + 1e-3 * np.arange(64).reshape(1, 1, 8, 8)[..., ::-1, ::-1].copy()  # ties broken
    inp = MetricInput(model=model, x=x.numpy(), y=np.array([0]), a=a.astype(np.float32), indices=np.array([0]),
                      explain=None, seed=0, device=torch.device("cpu"), value_range=(0.0, 1.0))
    pcts = "10,50,85,95"
    # MoRF: 6, 32, 54, 60 pixels removed; the 9 block pixels are the first 9: from 32 on the block is gone
    # and imputed from zeros -> logit ~0 < 2; at 6 removed, 3 block pixels remain plus imputed neighbours
    morf = metric("road", percentages=pcts, noise=0.0)
    lerf = metric("road_lerf", percentages=pcts, noise=0.0)
    curve_m = morf.score(inp)
    curve_l = lerf.score(inp)
    assert morf.diagnostics()["per_percentage"]["morf"] == {"10.0": 1.0, "50.0": 0.0, "85.0": 0.0, "95.0": 0.0}
    # LeRF: the block's 9 pixels are the last 9 of 64; at 95 % (60 removed) the 4 kept pixels are block
    # pixels at 1, and the imputation of everything else from them is exactly 1 (constant data): still class 0
    assert lerf.diagnostics()["per_percentage"]["lerf"] == {"10.0": 1.0, "50.0": 1.0, "85.0": 1.0, "95.0": 1.0}
    assert curve_m[0] == 0.25 and curve_l[0] == 1.0


@pytest.mark.parametrize("bad, match", [
    ({"percentages": "0,50"}, "lie in"), ({"percentages": "50,20"}, "increasing"), ({"percentages": "120"}, "lie in"),
    ({"noise": -1}, "--noise"),
])
def test_bad_options_are_one_line_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        cfg.build(METRICS.get("road").Params, bad, "road")
