"""Saliency, Gradient x Input, SmoothGrad, Grad-CAM, LRP, LIME and KernelSHAP against Captum's
own calls, closed forms and direct computations (the registry loop in test_explain.py covers
per-sample seeding and batch-size independence for all of them)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain._common import seeded_global_rng
from xairobust.explain.base import reexplain_note, sample_seeds
from xairobust.explain.gradients import noise_stdev
from xairobust.explain.lrp import merge_batchnorm
from xairobust.explain.perturbation import patch_mask, slic_mask
from xairobust.models.base import NormalizedModel, create_model
from xairobust.registry import EXPLAINERS

CPU = torch.device("cpu")


def make(name, **params):
    cls = EXPLAINERS.get(name)
    return cls(cfg.build(cls.Params, params, name))


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=1, width=4, mean=[0.5], std=[0.3]).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 5, 7, 9])
    return model, x, t, sample_seeds(0, torch.arange(5) * 7)


@pytest.fixture(scope="module")
def cifar():
    """cifar_cnn-shaped (BatchNorm, max-pooling, 3 x 32 x 32) at width 4, with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = create_model("cifar_cnn", num_outputs=10, in_channels=3, width=4, mean=[0.5] * 3, std=[0.25] * 3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model.eval(), x, torch.tensor([1, 4, 8]), sample_seeds(0, torch.arange(3))


# --- equality with Captum's own calls -------------------------------------------------------


def test_saliency_and_input_x_gradient_equal_captum(conv):
    from captum.attr import InputXGradient, Saliency

    model, x, t, s = conv
    torch.testing.assert_close(make("saliency").attribute(model, x, t, s), Saliency(model).attribute(x, target=t.tolist(), abs=False))
    torch.testing.assert_close(make("saliency", abs=True).attribute(model, x, t, s), Saliency(model).attribute(x, target=t.tolist()))
    torch.testing.assert_close(make("input_x_gradient").attribute(model, x, t, s), InputXGradient(model).attribute(x, target=t.tolist()))
    # and the gradient itself, independently of Captum
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
    torch.testing.assert_close(make("saliency").attribute(model, x, t, s), g)


@pytest.mark.parametrize("name, params", [
    ("smoothgrad", {"n_samples": 7, "noise_level": 0.2}),
    ("smoothgrad", {"n_samples": 5, "nt_type": "vargrad"}),
    ("smoothgrad_ig", {"n_samples": 3, "n_steps": 6}),
])
def test_smoothgrad_equals_captum_noise_tunnel_per_sample(name, params, conv):
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    model, x, t, s = conv
    explainer = make(name, **params)
    attr = explainer.attribute(model, x, t, s)
    p = explainer.params
    for i in range(len(x)):
        inner = Saliency(model) if name == "smoothgrad" else IntegratedGradients(model)
        kw = {"abs": False} if name == "smoothgrad" else {"n_steps": p.n_steps, "method": "riemann_trapezoid"}
        with seeded_global_rng(int(s[i]), CPU):
            ref = NoiseTunnel(inner).attribute(x[i : i + 1], nt_type=p.nt_type, nt_samples=p.n_samples,
                                               stdevs=p.noise_level * float(x[i].max() - x[i].min()), target=int(t[i]), **kw)
        torch.testing.assert_close(attr[i : i + 1], ref, rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_the_mean_gradient_over_seeded_noise(conv):
    """Direct computation: noise drawn from a CPU generator seeded with the sample's seed
    (what NoiseTunnel draws after torch.manual_seed), sigma = level * (max - min) of the sample."""
    model, x, t, s = conv
    attr = make("smoothgrad", n_samples=4, noise_level=0.1).attribute(model, x, t, s)
    for i in range(len(x)):
        sigma = noise_stdev(x[i], 0.1)
        noise = torch.normal(0.0, torch.full((4, 1, 8, 8), sigma), generator=torch.Generator().manual_seed(int(s[i])))
        pts = (x[i : i + 1] + noise).requires_grad_()
        (g,) = torch.autograd.grad(model(pts)[:, t[i]].sum(), pts)
        torch.testing.assert_close(attr[i], g.mean(0), rtol=1e-5, atol=1e-7)
    # zero noise: SmoothGrad is the plain gradient
    torch.testing.assert_close(make("smoothgrad", n_samples=3, noise_level=0.0).attribute(model, x, t, s),
                               make("saliency").attribute(model, x, t, s), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", ["auto", "net.stage3"])
def test_gradcam_equals_captum_and_has_the_input_shape(layer, cifar):
    from captum.attr import LayerAttribution, LayerGradCam

    model, x, t, s = cifar
    attr = make("gradcam", layer=layer).attribute(model, x, t, s)
    assert attr.shape == x.shape
    module = model.net.stage4[0] if layer == "auto" else model.net.stage3  # auto: the last Conv2d
    cam = LayerGradCam(model, module).attribute(x, target=t.tolist(), relu_attributions=True)
    ref = LayerAttribution.interpolate(cam, (32, 32), interpolate_mode="bilinear")
    for c in range(3):  # the same map on every channel
        torch.testing.assert_close(attr[:, c : c + 1], ref)
    assert (attr >= 0).all() and attr.abs().sum() > 0


def test_gradcam_layer_errors(conv):
    model, x, t, s = conv
    with pytest.raises(ConfigError, match="Did you mean 'net.features'"):
        make("gradcam", layer="net.feature").attribute(model, x, t, s)
    mlp = create_model("tiny_mlp", num_outputs=10, in_channels=1)
    with pytest.raises(ConfigError, match="no Conv2d layer"):
        make("gradcam").attribute(mlp, x, t, s)
    with pytest.raises(ConfigError, match=r"needs a \(B, C, H, W\) feature map"):
        make("gradcam", layer="net.head.1").attribute(model, x, t, s)


def test_lrp_equals_captum_on_a_network_without_batchnorm(conv):
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    model, x, t, s = conv
    attr = make("lrp").attribute(model, x, t, s)
    model.normalize.rule = IdentityRule()
    model.net.head[0].rule = EpsilonRule()  # Flatten
    ref = LRP(model).attribute(x, target=t.tolist())  # Captum removes the rules afterwards
    torch.testing.assert_close(attr, ref)
    assert not any(hasattr(m, "rule") for m in model.modules())


# --- LRP: closed forms, BatchNorm merge, unsupported models ---------------------------------


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.4, 0.2)])
def test_lrp_on_a_bias_free_linear_model_is_w_times_x(mean, std):
    """Epsilon rule, eps -> 0, z = w . x': relevance of feature i is w_ti x'_i (x' = normalised x;
    the Normalize layer passes relevance through unchanged)."""
    torch.manual_seed(3)
    lin = nn.Linear(16, 4, bias=False)
    model = NormalizedModel(nn.Sequential(nn.Flatten(), lin), [mean], [std]).eval()
    x = torch.rand(6, 1, 4, 4)
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    attr = make("lrp", epsilon=1e-9).attribute(model, x, t, sample_seeds(0, torch.arange(6)))
    closed = lin.weight.detach()[t] * ((x - mean) / std).flatten(1)
    torch.testing.assert_close(attr.flatten(1), closed, rtol=1e-4, atol=1e-6)


def test_lrp_epsilon_on_a_bias_free_relu_cnn_equals_gradient_times_input(cifar):
    """On a positively homogeneous network (ReLU, max-pooling, no biases) LRP-0 = gradient x input;
    with BatchNorm of zero shift (merged into the convs) the identity still holds."""
    model, x, t, s = cifar
    model = create_model("cifar_cnn", num_outputs=10, in_channels=3, width=4).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)  # running_mean and bias stay 0: no shift
        if isinstance(m, nn.Linear):
            m.bias.data.zero_()
    attr = make("lrp").attribute(model, x, t, s)
    gxi = make("input_x_gradient").attribute(model, x, t, s)
    torch.testing.assert_close(attr, gxi, rtol=1e-3, atol=1e-6)


def test_lrp_batchnorm_merge_keeps_the_forward_pass(cifar):
    model, x, t, s = cifar
    merged = merge_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in merged.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    lrp = make("lrp")
    attr = lrp.attribute(model, x, t, s)
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    # Captum's convergence delta: f_target(x) - sum of relevances
    with torch.no_grad():
        out = model(x)[torch.arange(3), t]
    torch.testing.assert_close(lrp.extras()["convergence_delta"], out - attr.flatten(1).sum(1), rtol=1e-4, atol=1e-4)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.parametrize("net, message", [
    (nn.Sequential(_Residual(), nn.Flatten(), nn.Linear(64, 10)), "lrp: module 'net.0' of type _Residual is not supported"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.GELU(), nn.Linear(10, 10)), "lrp: module 'net.2' of type GELU is not supported"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(inplace=True), nn.Linear(10, 10)), "in-place ReLU"),
])
def test_lrp_unsupported_models_raise_one_line(net, message, conv):
    _, x, t, s = conv
    model = NormalizedModel(net, [0.0], [1.0]).eval()
    with pytest.raises(ConfigError, match=message) as info:
        make("lrp").attribute(model, x, t, s)
    assert "\n" not in str(info.value)


def test_lrp_rejects_a_registered_resnet():
    model = create_model("preresnet10", num_outputs=10, in_channels=3).eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="lrp: module .* is not supported"):
        make("lrp").attribute(model, x, torch.tensor([0]), sample_seeds(0, torch.arange(1)))


# --- LIME / KernelSHAP -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_surrogates_equal_captum_per_sample_and_are_seeded(name, cifar):
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import KernelShap, Lime
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    model, x, t, s = cifar
    alpha = 1e-4  # an untrained net: tiny output changes, Lasso 0.01 would zero every coefficient
    explainer = make(name, n_samples=30, **({"alpha": alpha} if name == "lime" else {}))
    attr = explainer.attribute(model, x, t, s)
    assert attr.abs().sum() > 0
    mask = patch_mask((3, 32, 32), 0).expand(1, 3, 32, 32)
    assert mask.unique().numel() == 64 and (mask[0, 0, :4, :4] == 0).all()  # auto: 8 x 8 grid of 4 px patches
    for i in range(len(x)):
        method = (Lime(model, interpretable_model=SkLearnLasso(alpha=alpha),
                       similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=1.0))
                  if name == "lime" else KernelShap(model))
        with seeded_global_rng(int(s[i]), CPU):
            ref = method.attribute(x[i : i + 1], baselines=0.0, target=int(t[i]), feature_mask=mask, n_samples=30)
        torch.testing.assert_close(attr[i : i + 1], ref, rtol=1e-5, atol=1e-6)
    again = explainer.attribute(model, x, t, s)
    other = explainer.attribute(model, x, t, s + 1)
    assert torch.equal(again, attr) and not torch.allclose(other, attr)


def test_kernel_shap_is_efficient_over_segments(cifar):
    """KernelSHAP's all-on / all-off constraints: the segment values sum to f(x) - f(baseline)."""
    model, x, t, s = cifar
    attr = make("kernel_shap", n_samples=80, patch_size=16).attribute(model, x, t, s)
    per_segment = attr[:, 0, ::16, ::16].flatten(1)  # one pixel of each of the 4 segments, channel 0
    with torch.no_grad():
        gap = model(x)[torch.arange(3), t] - model(torch.zeros_like(x))[torch.arange(3), t]
    torch.testing.assert_close(per_segment.sum(1), gap, rtol=1e-3, atol=1e-3)
    assert (attr[:, :, :16, :16] == attr[:, :, :1, :1]).all()  # constant over a segment and channels


def test_slic_segments_and_mean_baseline(cifar):
    model, _, t, s = cifar
    # blocky images (SLIC merges pure noise into one segment)
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(5)).repeat_interleave(8, 2).repeat_interleave(8, 3)
    mask = slic_mask(x[:1], n_segments=20, compactness=10.0)
    ids = mask.unique()
    assert mask.shape == (1, 1, 32, 32) and torch.equal(ids, torch.arange(len(ids))) and 5 < len(ids) <= 40
    a = make("lime", n_samples=30, segmentation="slic", n_segments=20, baseline="mean").attribute(model, x, t, s)
    assert a.shape == x.shape and torch.isfinite(a).all()
    for i in range(len(x)):  # one value per superpixel
        m = slic_mask(x[i : i + 1], 20, 10.0)[0, 0]
        for k in m.unique():
            assert a[i, :, m == k].unique().numel() == 1


def test_class_attributes_and_reexplain_note():
    grads = {n for n in EXPLAINERS.names() if EXPLAINERS.get(n).differentiable}
    assert grads == {"ig", "saliency", "input_x_gradient", "smoothgrad", "smoothgrad_ig"}
    expensive = {n for n in EXPLAINERS.names() if EXPLAINERS.get(n).reexplain_cost == "expensive"}
    assert expensive == {"lime", "kernel_shap"}
    assert reexplain_note("ig", ["max_sensitivity"]) is None
    assert reexplain_note("lime", []) is None
    note = reexplain_note("lime", ["max_sensitivity", "avg_sensitivity"])
    assert "\n" not in note and "max_sensitivity, avg_sensitivity" in note and "slow" in note


def test_score_warns_once_for_expensive_reexplanation(digits_run, tmp_path, capsys):
    import json
    import shutil

    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    explain(run, ExplainConfig(explainer="lime", n=3, params={"n_samples": 20}), quiet=True)
    path = score(run, ScoreConfig(explainer="lime", metrics="max_sensitivity,sparseness",
                                  metric_params={"max_sensitivity": {"nr_samples": 2}}), quiet=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: lime") and "max_sensitivity" in err
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["notes"] == [err.strip()] and doc["explainer_stochastic"] is True
    score(run, ScoreConfig(explainer="lime", metrics="sparseness"), quiet=True)
    assert capsys.readouterr().err == ""  # no sensitivity metric: no warning


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_same_attributions_on_cpu_and_cuda(name, conv):
    """Seeded draws are made on the CPU (NoiseTunnel gets CPU inputs; Captum's LIME/KernelSHAP
    draw on the CPU), so a stochastic explainer gives the same attributions on a GPU."""
    model, x, t, s = conv
    params = {"smoothgrad": {"n_samples": 4}, "smoothgrad_ig": {"n_samples": 2, "n_steps": 8},
              "lime": {"n_samples": 30, "alpha": 1e-4}, "kernel_shap": {"n_samples": 30},
              "gradient_shap": {"n_samples": 4}, "expected_gradients": {"n_samples": 4}}.get(name, {})
    bg = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    cls = EXPLAINERS.get(name)
    cpu = cls(cfg.build(cls.Params, params, name), bg).attribute(model, x, t, s)
    gpu_model = create_model("digits_cnn", num_outputs=10, in_channels=1, width=4, mean=[0.5], std=[0.3]).eval().cuda()
    gpu_model.load_state_dict(model.state_dict())
    gpu = cls(cfg.build(cls.Params, params, name), bg.cuda()).attribute(gpu_model, x.cuda(), t.cuda(), s)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


def test_explain_warns_about_all_zero_attributions(digits_run, tmp_path, capsys):
    import json
    import shutil

    from xairobust.stages.explain import ExplainConfig, explain

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    path = explain(run, ExplainConfig(explainer="lime", n=2, params={"n_samples": 10, "alpha": 1e3}), quiet=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: lime: 2 of 2 samples have all-zero") and "--alpha" in err
    assert json.loads(path.with_suffix(".json").read_text())["all_zero_attributions"] == 2
    path = explain(run, ExplainConfig(explainer="saliency", n=2), quiet=True)
    assert capsys.readouterr().err == "" and json.loads(path.with_suffix(".json").read_text())["all_zero_attributions"] == 0
