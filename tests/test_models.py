"""Every registered model: forward, backward, output shape, finite values, inputs in [0, 1]."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xairobust.errors import ConfigError
from xairobust.models.base import create_model
from xairobust.registry import MODELS

# (in_channels, side) used for each model; the big ImageNet-style nets get small inputs to stay
# fast (timm's VGG pools its 1x1 feature map up to the 7x7 its classifier expects).
INPUTS = {"digits_cnn": (1, 8), "tiny_mlp": (1, 8), "resnet18_cifar": (3, 16), "resnet50_cifar": (3, 16), "preactresnet18": (3, 16), "preresnet10": (3, 32), "vgg19": (3, 32), "vgg19_bn": (3, 32),
          "wrn28_10": (3, 8), "preactresnet18_rb": (3, 16)}
DEFAULT_INPUT = (3, 32)
# VGG's 4096-wide classifier (119M parameters) is shrunk 64x here to keep the loop fast; the
# full model's structure is checked on the meta device below.
KWARGS = {"vgg19": {"mlp_ratio": 1 / 64}, "vgg19_bn": {"mlp_ratio": 1 / 64}, "wideresnet": {"depth": 10, "widen_factor": 2}}
EXTRA_NAMES = ["timm:resnet18"]  # the timm: prefix resolves through the registry too


@pytest.mark.parametrize("name", MODELS.names() + EXTRA_NAMES)
def test_every_model_trains_on_unit_range_inputs(name):
    torch.manual_seed(0)
    channels, side = INPUTS.get(name, DEFAULT_INPUT)
    mean, std = [0.5] * channels, [0.25] * channels
    model = create_model(name, num_outputs=7, in_channels=channels, mean=mean, std=std, **KWARGS.get(name, {}))
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor(mean))
    x = torch.rand(2, channels, side, side)  # [0, 1] like every dataset yields
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_resnet18_cifar_keeps_full_resolution_in_the_stem():
    net = create_model("resnet18_cifar").net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    feats = net.layer1(net.act1(net.bn1(net.conv1(torch.rand(1, 3, 32, 32)))))
    assert feats.shape == (1, 64, 32, 32)
    # 11.17M parameters: ResNet-18 (11.69M) minus the 7x7 stem (9,408) plus the 3x3 stem
    # (1,728) minus the 1000-class head plus a 10-class one.
    n = sum(p.numel() for p in net.parameters())
    assert n == 11_689_512 - 9_408 + 1_728 - (512 * 1000 + 1000) + (512 * 10 + 10)


def test_preact_resnets_have_the_paper_depths():
    def convs(net):
        return sum(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) for m in net.modules())

    # 18 / 10 weighted layers = stem conv + 2 convs per basic block + the linear head.
    assert convs(create_model("preactresnet18").net) + 1 == 18
    pre10 = create_model("preresnet10").net
    assert convs(pre10) + 1 == 10
    assert pre10.stem[0].kernel_size == (7, 7) and isinstance(pre10.stem[3], nn.MaxPool2d)


def test_cifar_cnn_is_a_few_hundred_thousand_parameters():
    n = sum(p.numel() for p in create_model("cifar_cnn").net.parameters())
    w = 32
    convs = 3 * w * 9 + w * 2 * w * 9 + 2 * w * 4 * w * 9 + 4 * w * 8 * w * 9
    bns = 2 * (w + 2 * w + 4 * w + 8 * w)
    assert n == convs + bns + 8 * w * 10 + 10 == 391_466


def test_timm_prefix_and_unknown_architectures():
    model = create_model("timm:resnet18", num_outputs=4)
    assert model.net.fc.out_features == 4
    with pytest.raises(ConfigError, match="Did you mean 'resnet18'"):
        create_model("timm:resnet81")


def test_vgg19_is_the_full_timm_vgg19():
    with torch.device("meta"):
        net = create_model("vgg19").net
        bn = create_model("vgg19_bn").net
    n = sum(p.numel() for p in net.parameters())
    # 16 conv layers (20,024,384) + 7x7x512->4096 conv + 4096->4096 + the 10-class head.
    assert n == 20_024_384 + (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 16
