"""Focus (Arias-Duart et al.): the mosaics against Quantus' mosaic_creation / build_single_mosaic, the
score against quantus.Focus and closed forms. The registry loops in test_engines.py / test_metrics.py
add native == Quantus for every explainer on 1x8x8 and 3x8x8, batch sizes and seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.mosaic_func import mosaic_creation

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics._quantus import normalise_per_sample, sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.localisation import focus_scores, mosaic_plan
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.stages.score import make_explain

Y = np.array([3, 1, 3, 0, 1, 3, 2, 1, 0, 3])
INDICES = np.array([40, 12, 7, 33, 2, 19, 25, 8, 11, 30])


def metric(engine: str = "native", **params):
    cls = METRICS.get("focus")
    m = cls(cfg.build(cls.Params, params, "focus"))
    m.engine = engine
    return m


def make_input(model, shape, y: np.ndarray, explainer: str = "saliency", seed: int = 0, **explainer_params) -> MetricInput:
    x = torch.rand(len(y), *shape, generator=torch.Generator().manual_seed(3))
    idx = torch.as_tensor(INDICES[: len(y)])
    cls = EXPLAINERS.get(explainer)
    ex = cls(cfg.build(cls.Params, explainer_params, explainer), None)
    yt = torch.as_tensor(y)
    a = ex.attribute(model, x, yt, sample_seeds(0, idx))
    return MetricInput(model=model, x=x.numpy(), y=np.asarray(y), a=a.detach().numpy(), indices=idx.numpy(),
                       explain=make_explain(torch.device("cpu"), ex, 0, seed), seed=seed, device=torch.device("cpu"),
                       value_range=(0.0, 1.0))


def test_each_mosaic_holds_the_sample_one_more_of_its_class_and_two_of_two_other_classes():
    tiles, same = mosaic_plan(Y, INDICES, seed=4)
    for i in range(len(Y)):
        assert i in tiles[i]
        np.testing.assert_array_equal(same[i], (Y[tiles[i]] == Y[i]).astype(int))
        assert same[i].sum() == 2
        partner = [j for j, s in zip(tiles[i], same[i], strict=True) if s and j != i]
        if (Y == Y[i]).sum() > 1:
            assert len(partner) == 1 and Y[partner[0]] == Y[i]
        else:  # class 2 has one sample: it fills both tiles of its class (Quantus repeats images the same way)
            assert partner == [] and list(tiles[i]).count(i) == 2
        outer = tiles[i][same[i] == 0]
        assert len(set(Y[outer])) == 2 and Y[i] not in Y[outer]  # one image from each of two other classes


def test_mosaics_do_not_depend_on_the_order_or_the_seed_stream_of_other_samples():
    tiles, same = mosaic_plan(Y, INDICES, seed=4)
    perm = np.array([3, 9, 0, 5, 1, 8, 2, 7, 6, 4])
    t2, s2 = mosaic_plan(Y[perm], INDICES[perm], seed=4)
    for k, i in enumerate(perm):  # the same test images in the same places
        np.testing.assert_array_equal(INDICES[perm][t2[k]], INDICES[tiles[i]])
        np.testing.assert_array_equal(s2[k], same[i])
    other, _ = mosaic_plan(Y, INDICES, seed=5)
    assert (other != tiles).any()


def test_a_mosaic_is_what_quantus_mosaic_creation_builds_from_the_real_images():
    """The index trick (Quantus lays out pool positions) equals Quantus laying out the pixels."""
    rng = np.random.default_rng(0)
    x = rng.random((len(Y), 3, 4, 4)).astype(np.float32)
    tiles, same = mosaic_plan(Y, INDICES, seed=4)
    m = metric(mosaic="full")
    ours = m.mosaics(torch.as_tensor(x), torch.as_tensor(tiles)).numpy()
    order = [int(j) for j in np.argsort(INDICES, kind="stable")]
    for i in range(len(Y)):
        r = random.Random(sample_global_seed(4, "focus", INDICES[i]))
        partners = [j for j in order if Y[j] == Y[i] and j != i]
        pool = [i] + ([r.choice(partners)] if partners else []) + [j for j in order if Y[j] != Y[i]]
        images, _, _, p_list, targets = mosaic_creation(x[pool], Y[pool], 1, seed=r.getrandbits(32) or 1)
        k = list(targets).index(Y[i])
        np.testing.assert_array_equal(ours[i], images[k])
        assert tuple(same[i]) == tuple(p_list[k])
    # the reference path's layout (Quantus' build_single_mosaic) equals the native one, pooled or not
    inp = MetricInput(model=None, x=x, y=Y, a=x, indices=INDICES, explain=None, seed=4, device=torch.device("cpu"), value_range=None)
    for mode in ("full", "half"):
        mm = metric(mosaic=mode)
        np.testing.assert_allclose(mm.mosaics(torch.as_tensor(x), torch.as_tensor(tiles)).numpy(), mm.mosaics_np(inp, tiles), rtol=0, atol=1e-7)


def test_focus_closed_forms_equal_quantus():
    """All positive relevance on the class tiles: 1; on the other tiles: 0; uniform: 0.5; negative
    relevance does not count."""
    same = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    a = np.full((4, 2, 8, 8), -0.5, dtype=np.float32)  # negative everywhere, then positive blocks
    quad = {0: (slice(0, 4), slice(0, 4)), 1: (slice(0, 4), slice(4, 8)), 2: (slice(4, 8), slice(0, 4)), 3: (slice(4, 8), slice(4, 8))}
    for k in range(4):
        a[0][(slice(None), *quad[k])] = 2.0 if same[0, k] else -1.0  # on the class tiles only
        a[1][(slice(None), *quad[k])] = -1.0 if same[1, k] else 3.0  # on the other tiles only
    a[2] = 1.0  # uniform
    a[3] = np.arange(128, dtype=np.float32).reshape(2, 8, 8)
    want3 = a[3][:, 4:, :].sum() / a[3].sum()  # the bottom half holds the class tiles
    got = focus_scores(torch.as_tensor(a), torch.as_tensor(same))
    np.testing.assert_allclose(got, [1.0, 0.0, 0.5, want3], rtol=1e-7)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 4))
    ref = quantus.Focus(normalise_func=normalise_per_sample, disable_warnings=True)(
        model=model, x_batch=np.zeros_like(a[2:]), y_batch=np.zeros(2, dtype=int), a_batch=a[2:], custom_batch=[tuple(r) for r in same[2:]],
        device="cpu", channel_first=True)
    np.testing.assert_allclose(got[2:], ref, rtol=1e-6)


@pytest.fixture(scope="module")
def cifar_small():
    torch.manual_seed(0)
    return create_model("cifar_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3, width=4).eval()


@pytest.mark.parametrize("mode", ["half", "full"])
@pytest.mark.parametrize("explainer", ["saliency", "ig", "gradcam"])
def test_native_equals_quantus_on_3x32x32(mode, explainer, cifar_small):
    """Full 64 x 64 mosaics need global pooling (cifar_cnn has it); identical mosaics, maps and masks."""
    inp = make_input(cifar_small, (3, 32, 32), Y, explainer, **({"n_steps": 8} if explainer == "ig" else {}))
    ref, new = metric("quantus", mosaic=mode), metric(mosaic=mode)
    expected = ref.score(inp)
    got = new.score(inp)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert new.diagnostics()["no_mosaic"] == 0


def test_no_other_class_gives_nan_and_is_counted(cifar_small):
    y = np.array([2, 2, 2, 2, 5])
    inp = make_input(cifar_small, (3, 32, 32), y)
    for engine in ("native", "quantus"):
        m = metric(engine)
        got = m.score(inp)
        assert np.isfinite(got).all()  # the 5 is the other class of every 2, and the 2s are the 5's
        same_class = make_input(cifar_small, (3, 32, 32), np.array([2, 2, 2]))
        got = m.score(same_class)
        assert np.isnan(got).all() and m.diagnostics()["no_mosaic"] == 3


def test_a_fixed_size_model_refuses_full_mosaics_in_one_line():
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3]).eval()
    inp = make_input(model, (1, 8, 8), Y)
    for engine in ("native", "quantus"):
        with pytest.raises(ConfigError, match=r"cannot take the mosaic of 1x16x16.*--mosaic half") as err:
            metric(engine, mosaic="full").score(inp)
        assert "\n" not in str(err.value)
    assert np.isfinite(metric(mosaic="half").score(inp)).all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="--mosaic must be half or full"):
        cfg.build(METRICS.get("focus").Params, {"mosaic": "quarter"}, "focus")
    odd = MetricInput(model=None, x=np.zeros((2, 1, 7, 8), np.float32), y=np.array([0, 1]), a=np.zeros((2, 1, 7, 8), np.float32),
                      indices=np.arange(2), explain=None, seed=0, device=torch.device("cpu"), value_range=None)
    with pytest.raises(ConfigError, match="even image size"):
        metric().score(odd)
