"""The blur control: scipy's Gaussian filter, the roughness definition, the sigma choice on
synthetic maps, and blur through explain -> score with sigma matched to another run's maps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.ndimage
import torch

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.explain.blurred import choose_sigma, gaussian_blur, roughness, set_roughness
from xairobust.registry import EXPLAINERS


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 5, 7), (2, 3, 32, 32)])
@pytest.mark.parametrize("sigma", [0.5, 1.3, 6.0])  # 6: the kernel radius (24) exceeds the image
def test_gaussian_blur_is_scipy_gaussian_filter(shape, sigma):
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = scipy.ndimage.gaussian_filter(a.double().numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=4.0)
    got = gaussian_blur(a, sigma)
    assert got.dtype == a.dtype
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(gaussian_blur(a, 0.0), a)


def test_roughness_closed_forms():
    const = torch.full((1, 1, 4, 4), 3.0)
    assert roughness(const).item() == 0.0
    # one channel, 4 x 4, left half 0, right half 2: TV = 4 rows x one jump of 2 = 8; mean |a| = 1
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 2.0
    assert roughness(step).item() == pytest.approx(8 / 16 / 1.0)
    assert roughness(-5 * step).item() == pytest.approx(8 / 16)  # |a|, scale-free
    assert torch.isnan(roughness(torch.zeros(1, 1, 4, 4))).all()


@pytest.mark.parametrize("true_sigma", [0.8, 1.7, 3.2])
def test_choose_sigma_recovers_the_blur_of_synthetic_maps(true_sigma):
    g = torch.Generator().manual_seed(1)
    standard = torch.randn(12, 3, 32, 32, generator=g)  # rough, like a standard model's gradients
    robust = gaussian_blur(standard, true_sigma)  # the "robust" maps: the same maps, smoothed
    sigma = choose_sigma(standard, set_roughness(robust))
    assert sigma == pytest.approx(true_sigma, abs=2e-3)
    assert set_roughness(gaussian_blur(standard, sigma)) == pytest.approx(set_roughness(robust), rel=1e-3)
    # different maps of the same smoothness: roughness matched, not the maps
    other = gaussian_blur(torch.randn(12, 3, 32, 32, generator=g), true_sigma)
    s2 = choose_sigma(standard, set_roughness(other))
    assert set_roughness(gaussian_blur(standard, s2)) == pytest.approx(set_roughness(other), rel=1e-3)
    # already smoother than the target: no blur
    assert choose_sigma(robust, set_roughness(standard)) == 0.0


def test_blur_params_are_checked():
    cls = EXPLAINERS.get("blur")
    with pytest.raises(ConfigError, match="stochastic"):
        cfg.build(cls.Params, {"base": "smoothgrad"}, "blur")
    with pytest.raises(ConfigError, match="either --sigma or --match"):
        cfg.build(cls.Params, {"sigma": 2.0, "match": "x"}, "blur")
    with pytest.raises(ConfigError, match="--sigma must be >= 0"):
        cfg.build(cls.Params, {"sigma": -1}, "blur")


def test_blur_is_the_blurred_base_explanation():
    from xairobust.models.base import create_model

    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t, s = torch.arange(4), sample_seeds(0, torch.arange(4))
    cls, ig = EXPLAINERS.get("blur"), EXPLAINERS.get("ig")
    blur = cls(cfg.build(cls.Params, {"base_params": {"n_steps": 8}, "sigma": 1.5}, "blur"))
    base = ig(cfg.build(ig.Params, {"n_steps": 8}, "ig")).attribute(model, x, t, s)
    expected = scipy.ndimage.gaussian_filter(base.double().numpy(), sigma=(0, 0, 1.5, 1.5), mode="reflect")
    np.testing.assert_allclose(blur.attribute(model, x, t, s).double().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_blur_matched_to_another_run_through_explain_and_score(digits_run, tmp_path):
    from xairobust.runs import load_tensors, save_tensors
    from xairobust.stages.explain import ExplainConfig, attribution_paths, explain
    from xairobust.stages.score import ScoreConfig, score

    std, rob = tmp_path / "standard", tmp_path / "robust"
    for run in (std, rob):
        shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
        explain(run, ExplainConfig(explainer="saliency", n=6), quiet=True)
    # the "robust" run's maps: the same maps blurred by 1.2 px (a file the test writes itself)
    path = attribution_paths(rob, "saliency")[0]
    tensors = load_tensors(path)
    tensors["attributions"] = gaussian_blur(tensors["attributions"], 1.2)
    save_tensors(path, tensors)

    conf = ExplainConfig(explainer="blur", n=6, params={"base": "saliency", "match": str(rob)})
    out = explain(std, conf, quiet=True)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["params"]["match"] == "" and doc["params"]["sigma"] == pytest.approx(1.2, abs=0.05)
    assert doc["details"]["roughness_blurred"] == pytest.approx(doc["details"]["roughness_match"], rel=1e-3)
    assert set(doc["provenance"]["inputs"]) == {"weights", "blur_base", "blur_match"}
    stored = load_tensors(out)["attributions"]
    base = load_tensors(attribution_paths(std, "saliency")[0])["attributions"]
    torch.testing.assert_close(stored, gaussian_blur(base, doc["params"]["sigma"]), rtol=1e-5, atol=1e-7)

    csv_path = score(std, ScoreConfig(explainer="blur", metrics="complexity,sparseness,max_sensitivity",
                                      metric_params={"max_sensitivity": {"nr_samples": 2}}), quiet=True)
    sdoc = json.loads(csv_path.with_suffix(".json").read_text())
    assert sdoc["explainer_params"]["sigma"] == doc["params"]["sigma"]
    assert np.isfinite(sdoc["metrics"]["max_sensitivity"]["mean"])

    # the match run's maps are an input: changing them makes the blur attributions stale
    from xairobust.stages.explain import ExplainStage

    assert ExplainStage().is_current(std, conf)
    tensors["attributions"] = gaussian_blur(tensors["attributions"], 0.5)
    save_tensors(path, tensors)
    assert not ExplainStage().is_current(std, conf)


def test_blur_match_without_the_base_maps_is_one_line(digits_run, tmp_path):
    from xairobust.stages.explain import ExplainConfig, explain

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    with pytest.raises(ConfigError, match=r"blur: --match needs .*saliency.safetensors .*xairobust explain --run"):
        explain(run, ExplainConfig(explainer="blur", n=2, params={"base": "saliency", "match": str(run)}), quiet=True)
