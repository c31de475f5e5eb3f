"""Randomisation metrics (MPRT, eMPRT, Random Logit), Effective Complexity and alignment:
closed forms, direct loops with scipy/skimage, and the run's weights left alone.

The engine equality on identical draws (every registered explainer) is in tests/test_engines.py;
batch-size and seed invariance in tests/test_engines.py and tests/test_metrics.py.
"""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import scipy.stats
import skimage.metrics
import torch
from test_engines import make_input, make_metric

from xairobust.metrics._quantus import sample_global_seed
from xairobust.metrics.alignment import alignment_numpy, alignment_torch
from xairobust.metrics.randomisation import (
    discrete_entropy_rows,
    other_classes,
    randomisable_layers,
    randomisation_seed,
    rank_average,
    spearman_rows,
    ssim_rows,
)
from xairobust.models.base import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()


SHAPE = (3, 8, 8)


# --- similarity functions against scipy / skimage ---------------------------------------------------


def test_ranks_and_spearman_equal_scipy_with_ties():
    g = np.random.default_rng(0)
    a = g.integers(0, 5, (6, 40)).astype(np.float32)  # many ties
    b = g.normal(size=(6, 40)).astype(np.float32)
    b[:, :10] = 0.0
    np.testing.assert_array_equal(rank_average(torch.as_tensor(a)).numpy(), scipy.stats.rankdata(a, axis=1))
    expected = [scipy.stats.spearmanr(a[i], b[i])[0] for i in range(6)]
    np.testing.assert_allclose(spearman_rows(torch.as_tensor(a), torch.as_tensor(b)), expected, rtol=1e-12)
    const = np.ones((1, 40), dtype=np.float32)
    assert np.isnan(spearman_rows(torch.as_tensor(const), torch.as_tensor(b[:1])))[0]


def test_ssim_equals_skimage_on_flattened_maps():
    g = np.random.default_rng(1)
    a = g.normal(size=(5, 64))
    b = a + g.normal(scale=0.5, size=(5, 64))
    for i in range(5):
        rng = float(np.abs(max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min())))
        expected = skimage.metrics.structural_similarity(a[i], b[i], win_size=None, data_range=rng)
        assert ssim_rows(torch.as_tensor(a[i : i + 1]), torch.as_tensor(b[i : i + 1]))[0] == pytest.approx(expected, rel=1e-10)
    assert ssim_rows(torch.as_tensor(a), torch.as_tensor(a)) == pytest.approx(np.ones(5))


def test_discrete_entropy_of_a_uniform_histogram_is_log_bins():
    a = np.arange(100, dtype=np.float64).reshape(1, 100)  # one value per bin of 100
    assert discrete_entropy_rows(a, 100)[0] == pytest.approx(np.log(100))
    assert discrete_entropy_rows(a, 10)[0] == pytest.approx(np.log(10))


# --- MPRT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["native", "quantus"])
@pytest.mark.parametrize("explainer", ["sobel", "random"])
def test_mprt_of_a_model_independent_explainer_is_one_at_every_layer(engine, explainer, model):
    # sobel ignores the weights; random too, and MPRT re-explains with the stored draws (module doc)
    inp = make_input(model, SHAPE, explainer)
    m = make_metric("mprt", engine)
    np.testing.assert_array_equal(m.score(inp), 1.0)
    diag = m.diagnostics()
    assert diag["layer_order"] == randomisable_layers(model)[::-1]  # top layer first
    assert diag["per_layer_mean"] == [1.0] * len(diag["layer_order"])
    e = make_metric("efficient_mprt", engine).score(inp)  # the entropy does not change either
    np.testing.assert_array_equal(e, 0.0)


def direct_mprt(model, inp, order_names):
    """Quantus' cascade written out: deepcopy, torch.manual_seed(seed + 1) before each reset,
    scipy Spearman of |max-normalised| maps."""
    seed = randomisation_seed(inp.seed, "mprt")
    work = copy.deepcopy(model)
    mods = dict(work.named_modules())
    a = np.abs(inp.a.reshape(len(inp.a), -1) / np.abs(inp.a.reshape(len(inp.a), -1)).max(1, keepdims=True))
    out = {}
    state = torch.random.get_rng_state()
    for name in order_names:
        torch.manual_seed(seed + 1)
        mods[name].reset_parameters()
        ar = inp.explain(work, inp.x, inp.y, inp.indices, draw=0).reshape(len(inp.a), -1)
        ar = np.abs(ar / np.abs(ar).max(1, keepdims=True))
        out[name] = [scipy.stats.spearmanr(a[i], ar[i])[0] for i in range(len(a))]
    torch.random.set_rng_state(state)
    return out


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
def test_mprt_per_layer_against_a_direct_cascade_and_between_engines(order, model):
    inp = make_input(model, SHAPE, "saliency")
    names = randomisable_layers(model)
    if order == "top_down":
        names = names[::-1]
    if order == "independent":
        expected = {}
        for n in names:  # each layer alone on the trained weights
            expected.update(direct_mprt(model, inp, [n]))
    else:
        expected = direct_mprt(model, inp, names)
    for engine in ("native", "quantus"):
        m = make_metric("mprt", engine, layer_order=order)
        scores = m.score(inp)
        diag = m.diagnostics()
        assert diag["layer_order"] == names
        for n in names:
            np.testing.assert_allclose(diag["per_layer"][n], expected[n], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(scores, expected[names[-1]], rtol=1e-6, atol=1e-9)
    # a trained-vs-random check that can fail: a gradient explanation does change
    assert np.nanmean(expected[names[-1]]) < 0.9


@pytest.mark.parametrize("engine", ["native", "quantus"])
@pytest.mark.parametrize("name", ["mprt", "efficient_mprt", "random_logit"])
def test_randomisation_leaves_the_model_and_the_global_rngs_alone(name, engine, model):
    inp = make_input(model, SHAPE, "smoothgrad")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    np.random.seed(7)
    t_expected, n_expected = torch.rand(1), np.random.rand()
    torch.manual_seed(7)
    np.random.seed(7)
    make_metric(name, engine).score(inp)
    assert torch.rand(1) == t_expected and np.random.rand() == n_expected
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mprt_weights_file_unchanged_and_nothing_saved(digits_run, tmp_path):
    import shutil

    from xairobust.runs import WEIGHTS
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    explain(run, ExplainConfig(explainer="saliency", n=4), quiet=True)
    weights = next(run.rglob(WEIGHTS))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    files = {p for p in run.rglob("*") if p.is_file()}
    csv_path = score(run, ScoreConfig(explainer="saliency", metrics="mprt,efficient_mprt,random_logit"), quiet=True)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == sha
    new = {p for p in run.rglob("*") if p.is_file()} - files
    assert new == {csv_path, csv_path.with_suffix(".json")}  # the scores only: no randomised model saved
    doc = json.loads(csv_path.with_suffix(".json").read_text())
    diag = doc["metrics"]["mprt"]["diagnostics"]
    assert len(diag["layer_order"]) == len(diag["per_layer_mean"]) >= 2


# --- Random Logit -----------------------------------------------------------------------------------


def test_random_logit_other_class_is_quantus_draw_and_never_the_target(model):
    inp = make_input(model, SHAPE, "saliency")
    off = other_classes(inp, 10, "random_logit")
    assert (off != inp.y).all() and ((0 <= off) & (off < 10)).all()
    for i in range(len(off)):  # what Quantus' evaluate_batch draws for a batch of one
        np.random.seed(sample_global_seed(inp.seed, "random_logit", inp.indices[i]))
        k = np.random.randint(0, 9, 1)[0]
        assert off[i] == [c for c in range(10) if c != inp.y[i]][k]


def test_random_logit_against_skimage_directly(model):
    inp = make_input(model, SHAPE, "saliency")
    off = other_classes(inp, 10, "random_logit")
    ao = inp.explain(model, inp.x, off, inp.indices, draw=0)
    got = make_metric("random_logit", "native").score(inp)
    for i in range(len(off)):
        a = inp.a[i].ravel() / np.abs(inp.a[i]).max()
        b = ao[i].ravel() / np.abs(ao[i]).max()
        rng = float(max(a.max(), b.max()) - min(a.min(), b.min()))
        assert got[i] == pytest.approx(skimage.metrics.structural_similarity(a, b, data_range=rng), rel=1e-5)


# --- Effective Complexity and alignment -------------------------------------------------------------


def test_effective_complexity_counts_features_above_eps(model):
    inp = make_input(model, SHAPE, "saliency")
    a = np.zeros((2, *SHAPE), dtype=np.float32)
    a[0, 0, 0, :5] = [1.0, -0.5, 2e-5, 1e-5, 0.0]  # |n(a)| > 1e-5: 1, 0.5, 2e-5 -> 3
    a[1, 2, 3, 4] = -3.0
    inp.a, inp.x, inp.y, inp.indices = a, inp.x[:2], inp.y[:2], inp.indices[:2]
    for engine in ("native", "quantus"):
        np.testing.assert_array_equal(make_metric("effective_complexity", engine).score(inp), [3, 1])


def test_alignment_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=g)
    for centered in (False, True):
        assert alignment_torch(x, x, centered) == pytest.approx(np.ones(4))
        assert alignment_torch(x, -2.5 * x, centered) == pytest.approx(np.ones(4))
    # orthogonal to x: a = y - proj_x(y)
    y = torch.rand(4, 3, 6, 6, generator=g)
    xf, yf = x.reshape(4, -1).double(), y.reshape(4, -1).double()
    orth = (yf - (yf * xf).sum(1, keepdim=True) / (xf * xf).sum(1, keepdim=True) * xf).reshape(x.shape)
    assert alignment_torch(x, orth, False) == pytest.approx(np.zeros(4), abs=1e-12)
    # a constant map: raw alignment |sum x| / (sqrt(d) ||x||), the bias the centred variant removes
    ones = torch.ones_like(x)
    expected = (xf.sum(1) / (np.sqrt(xf.shape[1]) * xf.norm(dim=1))).numpy()
    assert alignment_torch(x, ones, False) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(alignment_torch(x, ones, True)).all()
    # one channel: the centred variant is |Pearson r|
    x1, a1 = x[:, :1], y[:, :1]
    r = [abs(scipy.stats.pearsonr(x1[i].ravel().numpy(), a1[i].ravel().numpy())[0]) for i in range(4)]
    assert alignment_torch(x1, a1, True) == pytest.approx(r, rel=1e-6)
    # the numpy reference agrees
    np.testing.assert_allclose(alignment_numpy(x.numpy(), y.numpy(), True), alignment_torch(x, y, True), rtol=1e-12)


def test_alignment_through_the_metric_registry(model):
    inp = make_input(model, SHAPE, "saliency")
    inp.a = inp.x * 3.0  # the map is the image
    for engine in ("native", "quantus"):
        np.testing.assert_allclose(make_metric("alignment", engine).score(inp), 1.0, rtol=1e-12)
        np.testing.assert_allclose(make_metric("alignment_centered", engine).score(inp), 1.0, rtol=1e-12)


def test_mprt_native_progress_sums_to_the_sample_count(model):
    inp = make_input(model, SHAPE, "saliency")
    m = make_metric("mprt", "native")
    done = []
    m.on_chunk = done.append
    m.score(inp)
    assert sum(done) == pytest.approx(len(inp.x))
