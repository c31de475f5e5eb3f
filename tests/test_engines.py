"""The native engine against the Quantus reference path, and both engines' invariances.

Equality: both engines get identical perturbations (``noise_override``), identical Faithfulness
Correlation subsets (``subsets_override``: the ones Quantus draws under the sample's seed) and the
same explainer draws (both use make_explain's seeds); every metric must then agree to 1e-5
relative, for every registered explainer (new explainers are picked up from the registry; one
that declares ``reexplain_cost = "expensive"`` is skipped for the sensitivity metrics only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.metrics import native
from xairobust.metrics._quantus import sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.randomisation import QuantusRefused
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.stages.score import make_explain

N = 6
# ROAD: 5 percentages instead of 50, and noise 0.3 instead of 0.01 so that its draws visibly change
# predictions of an untrained net (the seed tests), and batch-size dependence would show
SMALL = {"nr_samples": 4, "nr_runs": 6, "percentages": "10,30,50,70,90", "noise": 0.3}
# every metric that re-explains perturbed inputs (the seven's three, Relative Input/Output/Representation Stability)
SENSITIVITY = tuple(n for n in METRICS.names() if METRICS.meta(n).get("category") == "sensitivity")
# A small configuration of each explainer where it has one (keeps the test at seconds).
FAST_EXPLAINER = {"n_steps": 6, "n_samples": 5, "alpha": 1e-4}  # alpha: LIME's Lasso keeps features on a tiny untrained net


def small_explainer(name: str, background: torch.Tensor):
    cls = EXPLAINERS.get(name)
    fields = getattr(cls.Params, "__dataclass_fields__", {})
    params = {k: v for k, v in FAST_EXPLAINER.items() if k in fields}
    return cls(cfg.build(cls.Params, params, name), background)


def make_metric(name: str, engine: str, batch_size: int = 64, points_per_pass: int = 0, **override):
    cls = METRICS.get(name)
    fields = cls.Params.__dataclass_fields__
    params = {**{k: v for k, v in SMALL.items() if k in fields}, **override}
    metric = cls(cfg.build(cls.Params, params, name))
    metric.engine, metric.batch_size, metric.points_per_pass = engine, batch_size, points_per_pass
    return metric


@pytest.fixture(scope="module", params=[(1, 8, 8), (3, 8, 8)], ids=["1x8x8", "3x8x8"])
def setup(request):
    shape = request.param
    torch.manual_seed(0)
    # a conv net, so that every registered explainer applies (Grad-CAM needs a Conv2d, LRP a supported stack)
    model = create_model("digits_cnn", num_outputs=10, in_channels=shape[0], mean=[0.5] * shape[0], std=[0.3] * shape[0]).eval()
    return model, shape


def make_input(model, shape, explainer_name: str, seed: int = 0) -> MetricInput:
    x = torch.rand(N, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    indices = torch.arange(N) * 5 + 2
    background = torch.rand(12, *shape, generator=torch.Generator().manual_seed(4))
    explainer = small_explainer(explainer_name, background)
    a = explainer.attribute(model, x, y, sample_seeds(0, indices))
    return MetricInput(
        model=model, x=x.numpy(), y=y.numpy(), a=a.detach().numpy(), indices=indices.numpy(),
        explain=make_explain(torch.device("cpu"), explainer, 0, seed), seed=seed,
        device=torch.device("cpu"), value_range=(0.0, 1.0),
    )


def quantus_subsets(inp: MetricInput, runs: int, size: int) -> np.ndarray:
    """The subsets Quantus draws for each sample under that sample's global seed."""
    d = int(np.prod(inp.x.shape[1:]))
    out = []
    for i in range(len(inp.x)):
        rng = np.random.RandomState(sample_global_seed(inp.seed, "faithfulness_correlation", inp.indices[i]))
        rows = []
        for _ in range(runs):
            rows.append(rng.choice(d, size, replace=False))
            rng.uniform(0.0, 1.0, 1)  # Quantus' baseline table draws its 'uniform' entry every run
        out.append(np.stack(rows))
    return np.stack(out)


def fixed_draws(metric, inp: MetricInput) -> None:
    if hasattr(metric, "reference_draws"):  # its Quantus path draws from the global RNG: those values
        metric.draws_override = metric.reference_draws(inp)
        return
    p = metric.params
    if hasattr(p, "nr_samples"):
        g = np.random.default_rng(11)
        shape = (len(inp.x), p.nr_samples, *inp.x.shape[1:])
        noise = g.uniform(-p.radius, p.radius, shape) if hasattr(p, "radius") else g.normal(0.0, p.perturb_std, shape)
        metric.noise_override = noise.astype(np.float32)
    if hasattr(p, "nr_runs"):
        metric.subsets_override = quantus_subsets(inp, p.nr_runs, metric.size(inp))


def score_or_skip(metric, inp: MetricInput) -> np.ndarray:
    """The metric's scores; a skip where the Quantus path cannot score this input (ROAD on 3 channels)."""
    try:
        return metric.score(inp)
    except QuantusRefused as err:
        pytest.skip(str(err))


def reexplainable(name: str) -> bool:
    """Explainers that declare re-explaining expensive (LIME, KernelSHAP) are left out of the sensitivity metrics."""
    return getattr(EXPLAINERS.get(name), "reexplain_cost", "cheap") != "expensive"


@pytest.mark.parametrize("explainer", EXPLAINERS.names())
@pytest.mark.parametrize("name", METRICS.names())
def test_engines_agree_on_identical_draws(name, explainer, setup):
    if name in SENSITIVITY and not reexplainable(explainer):
        pytest.skip(f"{explainer} declares it cannot re-explain perturbed inputs")
    if EXPLAINERS.meta(explainer).get("quantus_refuses"):  # the constant control: closed forms in test_controls.py
        pytest.skip(EXPLAINERS.meta(explainer)["quantus_refuses"])
    model, shape = setup
    inp = make_input(model, shape, explainer)
    ref, new = make_metric(name, "quantus"), make_metric(name, "native", points_per_pass=16)
    fixed_draws(ref, inp)
    new.noise_override, new.subsets_override = ref.noise_override, ref.subsets_override
    if hasattr(ref, "reference_draws"):
        new.draws_override = ref.draws_override
    try:
        expected = ref.score(inp)
    except QuantusRefused as err:  # e.g. an all-negative KernelSHAP map at Random Logit's other class
        pytest.skip(str(err))
    got = new.score(inp)
    assert np.isfinite(expected).all()
    # 1e-5 relative to the scale of the metric's values: a correlation near 0 (one sample at -0.002
    # here) differs in float32 summation order by ~3e-7 absolute, which is not a relative error.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.nanmax(np.abs(expected))))
    floor_ref = ref.diagnostics().get("noise_floor")
    floor_new = new.diagnostics().get("noise_floor")
    assert (floor_ref is None) == (floor_new is None)
    if floor_ref is not None:
        np.testing.assert_allclose(floor_new["per_sample"], floor_ref["per_sample"], rtol=1e-5)


@pytest.mark.parametrize("engine", ["native", "quantus"])
@pytest.mark.parametrize("name", METRICS.names())
def test_batch_size_and_pass_size_do_not_change_scores(name, engine, setup):
    model, shape = setup
    inp = make_input(model, shape, "expected_gradients")
    ref = score_or_skip(make_metric(name, engine, 64, 4096), inp)
    assert np.isfinite(ref).all()
    for size, ppp in ((1, 8), (4, 33)):
        # float32 batched forwards: 1e-5 relative to the scale of the values (see above)
        np.testing.assert_allclose(make_metric(name, engine, size, ppp).score(inp), ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


@pytest.mark.parametrize("engine", ["native", "quantus"])
@pytest.mark.parametrize("name", METRICS.names())
def test_same_seed_same_scores_other_seed_other_draws(name, engine, setup):
    model, shape = setup
    first = score_or_skip(make_metric(name, engine), make_input(model, shape, "ig", seed=5))
    np.testing.assert_array_equal(make_metric(name, engine).score(make_input(model, shape, "ig", seed=5)), first)
    other = make_metric(name, engine).score(make_input(model, shape, "ig", seed=6))
    random_metric = name in (*SENSITIVITY, "faithfulness_correlation") or bool(METRICS.meta(name).get("draws"))
    assert (not np.allclose(other, first)) == random_metric


def test_max_and_avg_share_one_set_of_perturbed_explanations(setup):
    model, shape = setup
    inp = make_input(model, shape, "gradient_shap")
    shared: dict = {}
    calls = []
    real = native.perturbed_ratios

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    native.perturbed_ratios = counting
    try:
        m1, m2 = make_metric("max_sensitivity", "native"), make_metric("avg_sensitivity", "native")
        m1.shared = m2.shared = shared
        s1, s2 = m1.score(inp), m2.score(inp)
    finally:
        native.perturbed_ratios = real
    assert len(calls) == 1 and (s1 >= s2).all() and (s1 > s2).any()
    # the same values as each metric computed alone (no dependence on what else was requested)
    np.testing.assert_array_equal(make_metric("avg_sensitivity", "native").score(inp), s2)
    assert m1.diagnostics()["noise_floor"]["mean"] >= m2.diagnostics()["noise_floor"]["mean"] > 0


def test_lle_floor_is_finite_and_below_lle_for_a_noisy_explainer(setup):
    model, shape = setup
    inp = make_input(model, shape, "gradient_shap")
    m = make_metric("local_lipschitz_estimate", "native")
    scores = m.score(inp)
    floor = np.array(m.diagnostics()["noise_floor"]["per_sample"])
    assert np.isfinite(floor).all() and (floor > 0).all()
    # direct: the floor numerator re-explains x itself with draws 1_000_001 + k
    rex = native.Reexplainer(inp.explain, model, 64)
    k = SMALL["nr_samples"]
    for i in range(N):
        x = torch.as_tensor(inp.x[i : i + 1]).repeat(k, 1, 1, 1)
        ak = rex(x, torch.as_tensor(inp.y[i : i + 1]).repeat(k), np.repeat(inp.indices[i], k), 1_000_001 + np.arange(k))
        num = [float(torch.linalg.vector_norm(native.normalise(torch.as_tensor(inp.a[i : i + 1])) - native.normalise(ak[j : j + 1]))) for j in range(k)]
        g = native.generator(torch.device("cpu"), inp.seed, native.NATIVE_TAGS["local_lipschitz_estimate"], int(inp.indices[i]))
        noise = torch.randn((k, *shape), generator=g) * m.params.perturb_std
        xp = (torch.as_tensor(inp.x[i]) + noise).clamp(0, 1)
        dist = torch.linalg.vector_norm((torch.as_tensor(inp.x[i]) - xp).reshape(k, -1).double(), dim=1).numpy()
        np.testing.assert_allclose(floor[i], max(n / (d + 1e-10) for n, d in zip(num, dist, strict=True)), rtol=1e-5)
    assert np.isfinite(scores).all()


def test_points_per_pass_caps_every_explainer_pass(setup):
    model, shape = setup
    inp = make_input(model, shape, "ig")
    sizes = []
    hook = model.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    try:
        make_metric("max_sensitivity", "native", points_per_pass=12).score(inp)
        make_metric("faithfulness_estimate", "native", points_per_pass=12).score(inp)
    finally:
        hook.remove()
    assert sizes and max(sizes) <= 12


def test_default_points_per_pass_from_the_memory_budget():
    small = create_model("digits_cnn", num_outputs=10, in_channels=1)
    big = create_model("cifar_cnn", num_outputs=10, in_channels=3)
    p_small = native.default_points_per_pass(small, (1, 8, 8), torch.device("cpu"), tune=False)
    p_big = native.default_points_per_pass(big, (3, 32, 32), torch.device("cpu"), tune=False)
    assert native.MIN_POINTS <= p_big < p_small <= native.MAX_POINTS
    assert p_big & (p_big - 1) == 0  # a power of two
