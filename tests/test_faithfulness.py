"""The removal-based faithfulness metrics of issue 18 (xairobust.metrics.faithfulness):
closed forms on linear models, Captum's infidelity as a second reference, the engines' equality
on a 3-channel 32x32 input for every registered explainer, padded patch grids, drawn baselines
and bad options.

tests/test_engines.py (1x8x8 and 3x8x8 tiny CNN, every explainer) and tests/test_metrics.py
(batch sizes, seeds) loop over every registered metric, these included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engines import fixed_draws, small_explainer  # noqa: E402  (tests/ is on sys.path under pytest)
from torch import nn

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics.base import MetricInput
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.stages.score import make_explain

NAMES = ("pixel_flipping", "region_perturbation", "region_perturbation_lerf", "region_perturbation_symmetric",
         "selectivity", "monotonicity_correlation", "infidelity")
SMALL = {"nr_samples": 3}


def metric(name: str, engine: str, **params):
    cls = METRICS.get(name)
    m = cls(cfg.build(cls.Params, {**{k: v for k, v in SMALL.items() if k in cls.Params.__dataclass_fields__}, **params}, name))
    m.engine, m.points_per_pass = engine, 32
    return m


def linear_model(d: int, w: np.ndarray, outputs: int = 3) -> nn.Module:
    """f(x) = w . x for class 0 (other classes: shifted copies); logits, no bias."""
    lin = nn.Linear(d, outputs, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(np.stack([w + k for k in range(outputs)]), dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), lin).eval()


def metric_input(model, x: np.ndarray, a: np.ndarray, y: np.ndarray, value_range=(0.0, 1.0)) -> MetricInput:
    return MetricInput(model=model, x=x.astype(np.float32), y=y, a=a.astype(np.float32), indices=np.arange(len(x)) * 3 + 1,
                       explain=None, seed=0, device=torch.device("cpu"), value_range=value_range)  # type: ignore[arg-type]


# --- closed forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["native", "quantus"])
def test_pixel_flipping_hand_computed_curve(engine):
    """w = (4, 3, 2, 1), x = (1, 1, 1, 0), a = w * x: the black baseline is 0, so removing features
    in order 4, 3, 2, 0 leaves f = 5, 2, 0, 0; the trapezoidal area is 3.5 + 1 + 0 = 4.5."""
    model = linear_model(4, np.array([4.0, 3.0, 2.0, 1.0]))
    x = np.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    inp = metric_input(model, x, np.array([4.0, 3.0, 2.0, 0.0]).reshape(1, 1, 2, 2), np.array([0]))
    got = metric("pixel_flipping", engine, features_in_step=1, softmax=False).score(inp)
    np.testing.assert_allclose(got, [4.5], rtol=1e-6)


@pytest.mark.parametrize("engine", ["native", "quantus"])
def test_pixel_flipping_of_ordered_contributions_on_a_linear_model(engine):
    """a = w * (x - min x) is perfectly ordered: step k's output is f(x) minus the k largest groups
    of contributions (independent numpy cumsum), for 2 features a step on 3x8x8."""
    rng = np.random.default_rng(0)
    d = 3 * 8 * 8
    w = rng.normal(size=d)
    x = rng.uniform(0.1, 1.0, size=(2, d))
    x[:, 0] = 0.05  # the minimum (black baseline)
    model = linear_model(d, w)
    contrib = w * (x - x.min(1, keepdims=True))
    inp = metric_input(model, x.reshape(2, 3, 8, 8), contrib.reshape(2, 3, 8, 8), np.array([0, 0]))
    got = metric("pixel_flipping", engine, features_in_step=2, softmax=False).score(inp)
    for i in range(2):
        removed = np.sort(contrib[i])[::-1].reshape(-1, 2).sum(1).cumsum()
        curve = w @ x[i] - removed
        np.testing.assert_allclose(got[i], np.trapezoid(curve), rtol=1e-4)


@pytest.mark.parametrize("engine", ["native", "quantus"])
def test_region_perturbation_morf_lerf_symmetric_on_a_linear_model(engine):
    """Patch contributions of a linear model: the MoRF curve is the cumsum of the patch sums of
    w * (x - min) in descending order of the attribution's patch sums, LeRF ascending."""
    rng = np.random.default_rng(1)
    shape = (3, 8, 8)
    d = int(np.prod(shape))
    w = rng.normal(size=d)
    x = rng.uniform(0.1, 1.0, size=(1, d))
    x[0, 5] = 0.0
    contrib = (w * (x - x.min())).reshape(1, *shape)
    inp = metric_input(linear_model(d, w), x.reshape(1, *shape), contrib, np.array([0]))
    patches = contrib[0].reshape(3, 4, 2, 4, 2).transpose(1, 3, 0, 2, 4).reshape(16, -1).sum(1)  # 2x2 patches, all channels
    morf, lerf = np.sort(patches)[::-1].cumsum(), np.sort(patches).cumsum()
    scores = {n: metric(n, engine, patch_size=2, softmax=False).score(inp)[0]
              for n in ("region_perturbation", "region_perturbation_lerf", "region_perturbation_symmetric")}
    np.testing.assert_allclose(scores["region_perturbation"], np.trapezoid(morf), rtol=1e-4)
    np.testing.assert_allclose(scores["region_perturbation_lerf"], np.trapezoid(lerf), rtol=1e-4)
    np.testing.assert_allclose(scores["region_perturbation_symmetric"], np.trapezoid(morf) - np.trapezoid(lerf), rtol=1e-4)
    sel = metric("selectivity", engine, patch_size=2, softmax=False).score(inp)[0]
    np.testing.assert_allclose(sel, np.trapezoid(w @ x[0] - morf), rtol=1e-4)


@pytest.mark.parametrize("baseline", ["black", "uniform"])
@pytest.mark.parametrize("engine", ["native", "quantus"])
def test_infidelity_of_a_linear_models_gradient_is_zero(engine, baseline):
    """With I = x - x', f(x) - f(x') = w . I = a . I exactly when a = w: Infidelity 0 (up to float32);
    twice the gradient is not faithful (infidelity = mean (w . I)^2 > 0)."""
    rng = np.random.default_rng(2)
    shape = (3, 32, 32)
    d = int(np.prod(shape))
    w = rng.normal(size=d) * 0.1
    x = rng.uniform(0, 1, size=(3, *shape))
    model = linear_model(d, w)
    grad = np.broadcast_to(w.reshape(1, *shape), x.shape)
    exact = metric("infidelity", engine, baseline=baseline).score(metric_input(model, x, grad, np.zeros(3, dtype=int)))
    off = metric("infidelity", engine, baseline=baseline).score(metric_input(model, x, 2 * grad, np.zeros(3, dtype=int)))
    assert (off > 0.1).all()
    assert (exact < 1e-9 * off).all(), exact


# --- Captum's infidelity: the second reference --------------------------------------------------


def cumulative_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(M, C, H, W): x with raster patches 0..k replaced by x.min(), k = 0..M-1 (Quantus' perturbations)."""
    c, h, w = x.shape
    out, cur = [], x.clone()
    for i in range(h // patch):
        for j in range(w // patch):
            cur = cur.clone()
            cur[:, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = x.min()
            out.append(cur)
    return torch.stack(out)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("cifar_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3, width=4).eval()


def cnn_input(model, explainer: str, n: int = 3) -> MetricInput:
    shape = (3, 32, 32)
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    indices = torch.arange(n) * 7 + 1
    ex = small_explainer(explainer, torch.rand(8, *shape, generator=torch.Generator().manual_seed(4)))
    a = ex.attribute(model, x, y, sample_seeds(0, indices)).detach()
    return MetricInput(model=model, x=x.numpy(), y=y.numpy(), a=a.numpy(), indices=indices.numpy(),
                       explain=make_explain(torch.device("cpu"), ex, 0, 0), seed=0, device=torch.device("cpu"), value_range=(0.0, 1.0))


@pytest.mark.parametrize("explainer", ["saliency", "ig"])
def test_infidelity_equals_captum_normalize_false(cnn, explainer):
    from captum.metrics import infidelity

    inp = cnn_input(cnn, explainer)
    patch = 4
    m = (32 // patch) ** 2
    x = torch.as_tensor(inp.x)

    def perturb(inputs: torch.Tensor):
        # Captum hands each input repeated m times in a row: copy k gets Quantus' k-th perturbation
        per = torch.cat([cumulative_patches(inputs[s], patch) for s in range(0, len(inputs), m)])
        return inputs - per, per

    ref = infidelity(cnn, perturb, x, torch.as_tensor(inp.a), target=torch.as_tensor(inp.y), n_perturb_samples=m, normalize=False)
    got = metric("infidelity", "native", patch_size=patch).score(inp)
    np.testing.assert_allclose(got, ref.double().numpy(), rtol=1e-5)
    # Captum's normalize=True rescales a by the least-squares beta first: scale-free, and lower.
    # It is pinned off here (module doc): our value depends on the attribution's scale, as Quantus'.
    norm = infidelity(cnn, perturb, x, torch.as_tensor(inp.a), target=torch.as_tensor(inp.y), n_perturb_samples=m, normalize=True)
    norm3 = infidelity(cnn, perturb, x, 3 * torch.as_tensor(inp.a), target=torch.as_tensor(inp.y), n_perturb_samples=m, normalize=True)
    np.testing.assert_allclose(norm3.numpy(), norm.numpy(), rtol=1e-4)
    assert (norm.double().numpy() <= got * (1 + 1e-6)).all()
    inp3 = MetricInput(**{**inp.__dict__, "a": 3 * inp.a})
    assert not np.allclose(metric("infidelity", "native", patch_size=patch).score(inp3), got)


# --- engines on a 3-channel 32x32 input, every explainer --------------------------------------------


@pytest.mark.parametrize("explainer", EXPLAINERS.names())
def test_engines_agree_on_3x32x32(cnn, explainer):
    if EXPLAINERS.meta(explainer).get("quantus_refuses"):
        pytest.skip(EXPLAINERS.meta(explainer)["quantus_refuses"])
    inp = cnn_input(cnn, explainer, n=2)
    for name in NAMES:
        ref, new = metric(name, "quantus"), metric(name, "native")
        fixed_draws(ref, inp)
        new.draws_override = getattr(ref, "draws_override", None)
        expected, got = ref.score(inp), new.score(inp)
        assert np.isfinite(expected).all(), name
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()), err_msg=name)


@pytest.mark.parametrize("name", ["region_perturbation", "region_perturbation_symmetric", "selectivity"])
def test_padded_patch_grid_matches_quantus(cnn, name):
    """patch 3 on 32x32: Quantus pads the grid by (1, 1) and perturbs an edge-padded copy."""
    inp = cnn_input(cnn, "saliency", n=2)
    expected = metric(name, "quantus", patch_size=3, regions_evaluation=20).score(inp) if name != "selectivity" else \
        metric(name, "quantus", patch_size=3).score(inp)
    kw = {"regions_evaluation": 20} if name != "selectivity" else {}
    np.testing.assert_allclose(metric(name, "native", patch_size=3, **kw).score(inp), expected, rtol=1e-5)


@pytest.mark.parametrize("params", [{"baseline": "uniform", "nr_samples": 3}, {"baseline": "white"}])
def test_infidelity_and_monotonicity_other_baselines_match_quantus(cnn, params):
    inp = cnn_input(cnn, "saliency", n=2)
    for name in ("infidelity", "monotonicity_correlation"):
        if name == "monotonicity_correlation" and params["baseline"] == "uniform":
            continue  # its default, covered above
        ref, new = metric(name, "quantus", **params), metric(name, "native", **params)
        fixed_draws(ref, inp)
        new.draws_override = getattr(ref, "draws_override", None)
        np.testing.assert_allclose(new.score(inp), ref.score(inp), rtol=1e-5, err_msg=name)


def test_native_uniform_draws_are_per_sample(cnn):
    """The native stream of a sample does not depend on which other samples are scored."""
    inp = cnn_input(cnn, "saliency", n=3)
    both = metric("infidelity", "native", baseline="uniform").score(inp)
    one = MetricInput(**{**inp.__dict__, "x": inp.x[1:2], "y": inp.y[1:2], "a": inp.a[1:2], "indices": inp.indices[1:2]})
    # rtol 1e-5: the squared difference of float32 outputs of different batch sizes (2.9e-6 measured)
    np.testing.assert_allclose(metric("infidelity", "native", baseline="uniform").score(one), both[1:2], rtol=1e-5)
    black = metric("infidelity", "native").score(inp)
    assert not np.allclose(both, black)


# --- options --------------------------------------------------------------------------------------


def test_bad_options_are_one_line_config_errors(cnn):
    inp = cnn_input(cnn, "saliency", n=1)
    with pytest.raises(ConfigError, match="infidelity: --patch-size 5 must divide the 32x32 image"):
        metric("infidelity", "native", patch_size=5).score(inp)
    with pytest.raises(ConfigError, match="--baseline must be black or white"):
        metric("pixel_flipping", "native", baseline="mean")
    with pytest.raises(ConfigError, match="--patch-size 40 is larger"):
        metric("region_perturbation", "native", patch_size=40).score(inp)
    with pytest.raises(ConfigError, match="--features-in-step 5 must divide"):
        metric("pixel_flipping", "native", features_in_step=5).score(inp)


def test_registry_metadata_names_the_source():
    for name in NAMES:
        meta = METRICS.meta(name)
        assert meta["category"] == "faithfulness" and "quantus." in meta["source"], name
    assert METRICS.meta("region_perturbation")["direction"] == "higher"
    assert METRICS.meta("region_perturbation_lerf")["direction"] == "lower"


def test_extended_preset_adds_the_symmetric_region_perturbation():
    from xairobust.metrics.presets import PAPER_METRICS, resolve_metrics

    _, paper = resolve_metrics("paper")
    _, extended = resolve_metrics("extended")
    assert set(paper) == set(PAPER_METRICS) and "region_perturbation_symmetric" in extended
