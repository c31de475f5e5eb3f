"""timm architectures: ``vgg19``, ``vgg19_bn`` and any timm model as ``timm:<name>``.

Weights are always randomly initialised here (``pretrained=False``): nothing is fetched from
the network. Start from trained weights with the train stage's ``init:`` (another run).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xairobust.errors import ConfigError
from xairobust.registry import MODELS, did_you_mean


def build_timm(arch: str, num_outputs: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch)`` with our head size and input channels; unknown arch -> ConfigError."""
    import timm

    if not timm.is_model(arch):
        raise ConfigError(f"model 'timm:{arch}': timm has no architecture '{arch}'.{did_you_mean(arch, timm.list_models())}")
    return timm.create_model(arch, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **kwargs)


@MODELS.register("timm", input_size=None, source="timm", prefix="timm:")
def timm_model(num_outputs: int = 10, in_channels: int = 3, arch: str = "resnet18", **kwargs: Any) -> nn.Module:
    """Any timm architecture; ``model: timm:<arch>`` is the short form of ``model_kwargs: {arch: ...}``."""
    return build_timm(arch, num_outputs, in_channels, **kwargs)


@MODELS.register("vgg19", input_size=None, source="timm")
def vgg19(num_outputs: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """timm's VGG-19 (140M parameters, 102M of them in the 7x7 classifier conv); ``kwargs`` go
    to timm (e.g. ``mlp_ratio`` shrinks the 4096-wide classifier)."""
    return build_timm("vgg19", num_outputs, in_channels, **kwargs)


@MODELS.register("vgg19_bn", input_size=None, source="timm")
def vgg19_bn(num_outputs: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """VGG-19 with BatchNorm after every conv (timm)."""
    return build_timm("vgg19_bn", num_outputs, in_channels, **kwargs)
