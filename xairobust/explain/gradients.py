"""Gradient explainers from Captum: Saliency, Gradient x Input, SmoothGrad (NoiseTunnel over
Saliency and over Integrated Gradients) and Grad-CAM.

Each one calls the Captum class itself (tests/test_explain.py checks equality with a direct
Captum call on the same inputs and, for SmoothGrad, the same seeds). Attributions are raw
(signed) and shaped like the inputs, as for IG: Ghorbani et al. and Dombrowski et al. take the
absolute value / channel sum only when they turn an attribution into a map, and so do
xairobust's metrics and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.explain._common import DEFAULT_CHUNK, captum_quiet, chunks, seeded_global_rng, target_grad
from xairobust.explain.base import Explainer
from xairobust.explain.captum_explainers import _check_shapes, integrate
from xairobust.registry import EXPLAINERS, did_you_mean


def _targets(t: Tensor) -> list[int]:
    return [int(v) for v in t]


@dataclass
class SaliencyParams:
    # Captum's Saliency defaults to abs=True (|gradient|). Ours is False: the raw gradient, signed,
    # like every other xairobust attribution; maps take |.| where they need it (Simonyan et al.
    # plot max_c |grad|, Ghorbani et al. sum |grad| over channels). --abs gives Captum's default.
    abs: bool = False


@EXPLAINERS.register("saliency", label="Grad", library="captum.attr.Saliency")
class SaliencyExplainer(Explainer):
    """Saliency / "simple gradient" (Simonyan et al. 2014): dF_target/dx."""

    Params = SaliencyParams
    differentiable = True
    chunk_size = DEFAULT_CHUNK

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor,
                  create_graph: bool = False) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if create_graph:  # the same gradient, kept differentiable (Captum's is detached)
            g = target_grad(model, inputs, targets.to(inputs.device), create_graph=True)
            return g.abs() if self.params.abs else g
        explainer = Saliency(model)
        with captum_quiet():
            outs = [explainer.attribute(inputs[sl], target=_targets(targets[sl]), abs=self.params.abs).detach()
                    for sl in chunks(len(inputs), self.chunk_size)]
        return torch.cat(outs) if outs else torch.empty_like(inputs)


@EXPLAINERS.register("input_x_gradient", label="GxI", library="captum.attr.InputXGradient")
class InputXGradientExplainer(Explainer):
    """Gradient x Input (Shrikumar et al. 2016): x * dF_target/dx."""

    differentiable = True
    chunk_size = DEFAULT_CHUNK

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor,
                  create_graph: bool = False) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if create_graph:
            return inputs * target_grad(model, inputs, targets.to(inputs.device), create_graph=True)
        explainer = InputXGradient(model)
        with captum_quiet():
            outs = [explainer.attribute(inputs[sl], target=_targets(targets[sl])).detach()
                    for sl in chunks(len(inputs), self.chunk_size)]
        return torch.cat(outs) if outs else torch.empty_like(inputs)


def noise_stdev(x: Tensor, noise_level: float) -> float:
    """SmoothGrad's sigma for one sample: ``noise_level * (max(x) - min(x))``.

    Smilkov et al. (2017) state the noise level as sigma / (x_max - x_min) and recommend 10-20 %;
    their code (PAIR-code/saliency, ``stdev_spread``) takes the range of the sample itself, and
    so does this, so no dataset value range is needed (inputs without a fixed range work too).
    """
    return float(noise_level) * float(x.max() - x.min())


def on_device(model: nn.Module, device: torch.device):
    """``model`` as a function of CPU inputs: Captum's NoiseTunnel draws its noise on the input's
    device, so giving it CPU inputs makes the draws the same on every device (like GradientShap's)."""

    def forward(z: Tensor) -> Tensor:
        return model(z.to(device))

    return forward


class _NoiseTunnelBase(Explainer):
    """``captum.attr.NoiseTunnel`` over an inner Captum method, one call per sample under that
    sample's seed (``seeded_global_rng``): the noise depends on (sample, seed) only, never on the
    batch, and is drawn on the CPU whatever device the model is on."""

    stochastic = True
    differentiable = True

    def inner(self, forward) -> object:
        raise NotImplementedError

    def inner_kwargs(self) -> dict:
        return {}

    def inner_graph(self, model: nn.Module, noisy: Tensor, targets: Tensor) -> Tensor:
        """The inner method's attributions of the noisy copies, keeping the graph (create_graph)."""
        raise NotImplementedError

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor,
                  create_graph: bool = False) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if create_graph:
            return self._attribute_graph(model, inputs, targets, seeds)
        p = self.params
        tunnel = NoiseTunnel(self.inner(on_device(model, inputs.device)))
        outs = []
        for i in range(len(inputs)):
            x = inputs[i : i + 1].detach().cpu()
            with seeded_global_rng(int(seeds[i]), inputs.device), captum_quiet():  # forks (restores) the CUDA RNG too
                a = tunnel.attribute(x, nt_type=p.nt_type, nt_samples=p.n_samples, stdevs=noise_stdev(x, p.noise_level),
                                     target=int(targets[i]), **self.inner_kwargs())
            outs.append(a.detach())
        return torch.cat(outs).to(inputs.device) if outs else torch.empty_like(inputs)

    def _attribute_graph(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        """The same estimate with its graph to ``inputs``: the same noise as the Captum path
        (drawn per sample under its seed exactly as NoiseTunnel draws it), all samples' noisy
        copies in one batch, combined as NoiseTunnel combines them (``nt_type``). The noise is
        a constant of the graph: the attack differentiates the Monte-Carlo estimate."""
        p = self.params
        n = p.n_samples
        noise = []
        for i in range(len(inputs)):
            x = inputs[i : i + 1].detach().cpu()
            with seeded_global_rng(int(seeds[i]), inputs.device):
                noise.append(captum_noise(x, noise_stdev(x, p.noise_level), n))
        if not noise:
            return torch.empty_like(inputs)
        noisy = inputs.repeat_interleave(n, 0) + torch.cat(noise).to(inputs.device, inputs.dtype)
        attr = self.inner_graph(model, noisy, targets.to(inputs.device).repeat_interleave(n))
        attr = attr.view(len(inputs), n, *inputs.shape[1:])
        mean = attr.sum(1) / n
        if p.nt_type == "smoothgrad":
            return mean
        mean_sq = attr.pow(2).sum(1) / n
        return mean_sq if p.nt_type == "smoothgrad_sq" else mean_sq - mean * mean


def captum_noise(x: Tensor, stdev: float, n: int) -> Tensor:
    """(n * B, ...) Gaussian noise drawn from the global RNG as ``captum.attr.NoiseTunnel`` draws it
    (``torch.normal(0, stdev tensor)`` on the input's device); the caller seeds the RNG."""
    std = torch.tensor(stdev, device=x.device).repeat((len(x) * n, *x.shape[1:]))
    return torch.normal(0, std)


@dataclass
class SmoothGradParams:
    n_samples: int = 50  # Smilkov et al.: "n = 50" noisy copies, beyond which maps hardly change
    noise_level: float = 0.15  # sigma / (x_max - x_min) of the sample; the paper recommends 10-20 %
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"  # Captum's NoiseTunnel types
    abs: bool = False  # of the inner Saliency (see SaliencyParams)

    def __post_init__(self) -> None:
        require(self.n_samples >= 1, f"smoothgrad: --n-samples must be >= 1, got {self.n_samples}")
        require(self.noise_level >= 0, f"smoothgrad: --noise-level must be >= 0, got {self.noise_level}")


@EXPLAINERS.register("smoothgrad", label="SG", library="captum.attr.NoiseTunnel(Saliency) (per-sample seeds)")
class SmoothGradExplainer(_NoiseTunnelBase):
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n_samples`` Gaussian-noised copies."""

    Params = SmoothGradParams

    def inner(self, forward) -> object:
        return Saliency(forward)

    def inner_kwargs(self) -> dict:
        return {"abs": self.params.abs}

    def inner_graph(self, model: nn.Module, noisy: Tensor, targets: Tensor) -> Tensor:
        g = target_grad(model, noisy, targets, create_graph=True)
        return g.abs() if self.params.abs else g


@dataclass
class SmoothGradIGParams:
    # 10 x 50 = 500 model evaluations per sample, ten times IG's (our choice: Smilkov et al. pair
    # SmoothGrad with IG without giving counts; lower --n-steps for speed).
    n_samples: int = 10
    noise_level: float = 0.15
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"
    n_steps: int = 50
    method: Literal["riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre"] = (
        "riemann_trapezoid"  # as for ig
    )

    def __post_init__(self) -> None:
        require(self.n_samples >= 1, f"smoothgrad_ig: --n-samples must be >= 1, got {self.n_samples}")
        require(self.noise_level >= 0, f"smoothgrad_ig: --noise-level must be >= 0, got {self.noise_level}")
        require(self.n_steps >= 2, f"smoothgrad_ig: --n-steps must be >= 2, got {self.n_steps}")


@EXPLAINERS.register("smoothgrad_ig", label="SG-IG",
                     library="captum.attr.NoiseTunnel(IntegratedGradients) (black baseline; per-sample seeds)")
class SmoothGradIGExplainer(_NoiseTunnelBase):
    """SmoothGrad over Integrated Gradients (black baseline): IG averaged over noisy copies."""

    Params = SmoothGradIGParams

    def inner(self, forward) -> object:
        return IntegratedGradients(forward)

    def inner_kwargs(self) -> dict:
        return {"n_steps": self.params.n_steps, "method": self.params.method}

    def inner_graph(self, model: nn.Module, noisy: Tensor, targets: Tensor) -> Tensor:
        # NoiseTunnel's IG has Captum's default baseline, zeros (black)
        return integrate(model, noisy, torch.zeros_like(noisy), targets, self.params.n_steps, self.params.method,
                         create_graph=True)


@dataclass
class GradCAMParams:
    # A module name of the model as in `model.named_modules()` (e.g. net.stage4 for cifar_cnn's
    # last conv-BN-ReLU block); "auto" = the last nn.Conv2d in registration order.
    layer: str = "auto"
    relu: bool = True  # Selvaraju et al. keep the positive part (Captum's relu_attributions)
    # Selvaraju et al. upsample the coarse map bilinearly; Captum's interpolate defaults to nearest.
    interpolate_mode: Literal["bilinear", "nearest", "bicubic", "area"] = "bilinear"


def find_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """(name, module) of the Grad-CAM layer: ``name``, or the last Conv2d for ``auto``."""
    modules = dict(model.named_modules())
    if name == "auto":
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError("gradcam: the model has no Conv2d layer; give --layer NAME (see the model's named_modules())")
        return convs[-1], modules[convs[-1]]
    if name not in modules or not name:
        raise ConfigError(f"gradcam: --layer '{name}' is not a module of the model.{did_you_mean(name, list(modules)[1:])}")
    return name, modules[name]


@EXPLAINERS.register("gradcam", label="GradCAM", library="captum.attr.LayerGradCam + LayerAttribution.interpolate")
class GradCAMExplainer(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) on a named layer, upsampled to the input's height and width
    and repeated over its channels (so it has the input's shape like every attribution here)."""

    Params = GradCAMParams
    chunk_size = DEFAULT_CHUNK
    zero_hint = "Grad-CAM's ReLU removed only-negative evidence: --no-relu keeps it, or choose another --layer"

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        p = self.params
        if inputs.dim() != 4:
            raise ConfigError(f"gradcam: needs image-shaped inputs (B, C, H, W), got shape {tuple(inputs.shape)}")
        name, layer = find_layer(model, p.layer)
        cam = LayerGradCam(model, layer)
        outs = []
        for sl in chunks(len(inputs), self.chunk_size):
            with captum_quiet():
                a = cam.attribute(inputs[sl], target=_targets(targets[sl]), relu_attributions=p.relu)
            if a.dim() != 4:
                raise ConfigError(
                    f"gradcam: layer '{name}' outputs shape {tuple(a.shape)}; Grad-CAM needs a (B, C, H, W) feature map"
                )
            a = LayerAttribution.interpolate(a, tuple(inputs.shape[-2:]), interpolate_mode=p.interpolate_mode)
            outs.append(a.detach().expand(-1, inputs.shape[1], -1, -1).contiguous())
        return torch.cat(outs) if outs else torch.empty_like(inputs)
