"""Relative Input / Output / Representation Stability (issue 18) against a direct loop of the
Agarwal et al. formulas, and the shared perturbation pass with Max/Avg-Sensitivity.

The engines' equality on identical draws (Quantus reference) is in tests/test_engines.py, which
loops over every registered metric and explainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engines import make_input, make_metric  # noqa: E402  (tests/ is on sys.path under pytest)

from xairobust.metrics import native
from xairobust.metrics.stability import EPS_MIN, hidden_modules
from xairobust.stages.score import ScoreConfig, build_metrics

NAMES = ("relative_input_stability", "relative_output_stability", "relative_representation_stability")


@pytest.fixture(scope="module")
def model():
    from xairobust.models.base import create_model

    torch.manual_seed(0)
    return create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.where(a == 0, EPS_MIN, a)


def _reps(model, x: torch.Tensor) -> np.ndarray:
    """Hidden outputs of the modules named explicitly (what Quantus collects on digits_cnn)."""
    names = ["normalize", "net", "net.features.0", "net.features.1", "net.features.2", "net.features.3",
             "net.head.0", "net.head.1", "net.head.2", "net.head.3"]
    mods = dict(model.named_modules())
    outs = []
    hs = [mods[n].register_forward_hook(lambda m, i, o: outs.append(o.detach().reshape(len(x), -1).clone())) for n in names]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return torch.cat(outs, 1).double().numpy()


@pytest.mark.parametrize("explainer", ["saliency", "smoothgrad"])
def test_direct_loop_of_the_formulas(model, explainer):
    inp = make_input(model, (3, 8, 8), explainer)
    k = 4
    assert {id(m) for m in hidden_modules(model)} == {id(dict(model.named_modules())[n]) for n in
                                                       ["normalize", "net", "net.features.0", "net.features.1", "net.features.2",
                                                        "net.features.3", "net.head.0", "net.head.1", "net.head.2", "net.head.3"]}
    scores = {n: make_metric(n, "native", nr_samples=k).score(inp) for n in NAMES}
    radius = make_metric(NAMES[0], "native").params.radius
    for i in range(len(inp.x)):
        g = native.generator(torch.device("cpu"), inp.seed, native.NATIVE_TAGS["sensitivity"], int(inp.indices[i]))
        noise = torch.rand((k, *inp.x.shape[1:]), generator=g) * (2 * radius) - radius
        x = torch.as_tensor(inp.x[i : i + 1])
        xp = (x + noise).clamp(0, 1)
        ap = inp.explain(model, xp.numpy(), np.repeat(inp.y[i], k), np.repeat(inp.indices[i], k), draw=0)
        if explainer == "smoothgrad":  # draw j + 1 for perturbation j
            ap = np.concatenate([inp.explain(model, xp[j : j + 1].numpy(), inp.y[i : i + 1], inp.indices[i : i + 1], draw=j + 1) for j in range(k)])
        a = inp.a[i].astype(np.float64).reshape(1, -1)
        num = np.linalg.norm(_rel(a, ap.reshape(k, -1).astype(np.float64)), axis=1)
        x64 = x.double().numpy().reshape(1, -1)
        ris = num / np.linalg.norm(_rel(x64, xp.double().numpy().reshape(k, -1)), axis=1)
        with torch.no_grad():
            h, hp = model(x).double().numpy(), model(xp).double().numpy()
        ros = num / np.linalg.norm(h - hp, axis=1)
        r, rp = _reps(model, x), _reps(model, xp)
        rrs = num / np.linalg.norm(_rel(r, rp), axis=1)
        for name, direct in zip(NAMES, (ris, ros, rrs), strict=True):
            np.testing.assert_allclose(scores[name][i], direct.max(), rtol=1e-5, err_msg=name)


def test_one_perturbation_pass_for_max_avg_and_the_three(model, monkeypatch):
    inp = make_input(model, (3, 8, 8), "gradient_shap")
    calls = []
    real = native.perturbed_ratios
    monkeypatch.setattr(native, "perturbed_ratios", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    _, metrics = build_metrics(ScoreConfig(metrics=",".join(("max_sensitivity", *NAMES, "avg_sensitivity")),
                                           metric_params={n: {"nr_samples": 4} for n in ("max_sensitivity", "avg_sensitivity", *NAMES)}))
    together = {}
    for name, m in metrics.items():
        m.points_per_pass = 16
        together[name] = m.score(inp)
    assert len(calls) == 1  # one set of perturbed explanations for all five
    for name in NAMES:  # the same values as each computed alone
        np.testing.assert_array_equal(make_metric(name, "native", nr_samples=4, points_per_pass=16).score(inp), together[name])
    assert len(calls) == 4


def test_drop_changed_makes_a_sample_nan_as_quantus(model):
    inp = make_input(model, (3, 8, 8), "saliency")
    big = make_metric("relative_input_stability", "native", nr_samples=8, radius=0.5, drop_changed=True).score(inp)
    ref = make_metric("relative_input_stability", "quantus", nr_samples=8, radius=0.5, drop_changed=True)
    # identical draws: the native engine's own noise fed to the Quantus path
    spec = make_metric("relative_input_stability", "native", nr_samples=8, radius=0.5, drop_changed=True).perturb_spec()
    ref.noise_override = torch.stack([native.draw_noise(spec, inp.seed, int(j), inp.x.shape[1:], torch.device("cpu")) for j in inp.indices]).numpy()
    expected = ref.score(inp)
    assert np.isnan(big).any() and np.isfinite(big).any()
    np.testing.assert_allclose(big, expected, rtol=1e-5)
    assert ref.diagnostics()["dropped_prediction_changed"] == int(np.isnan(expected).sum())


def test_extended_and_all_presets():
    from xairobust.metrics.presets import PAPER_METRICS, resolve_metrics
    from xairobust.registry import METRICS

    preset, chosen = resolve_metrics("extended")
    assert preset == "extended" and set(PAPER_METRICS) < set(chosen) and set(NAMES) <= set(chosen)
    preset, chosen = resolve_metrics("all")
    assert preset == "all" and set(chosen) == set(METRICS.names())
    from xairobust.errors import ConfigError

    with pytest.raises(ConfigError, match="preset 'all' cannot be combined"):
        resolve_metrics("all,complexity")
    # the three share Max/Avg-Sensitivity's draws at the preset's (default) parameters
    specs = {make_metric(n, "native", nr_samples=200).perturb_spec() for n in ("max_sensitivity", *NAMES)}
    assert len(specs) == 1
