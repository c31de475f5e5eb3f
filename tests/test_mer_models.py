"""The VGG-style MER network and its heads a2e / a2b2e / a2m2e."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xairobust.models.audio import EmotionCNN, outputs_and_concepts
from xairobust.models.base import create_model


@pytest.mark.parametrize("name,bottleneck", [("a2e", False), ("a2b2e", True), ("a2m2e", True)])
def test_heads_give_8_outputs(name, bottleneck):
    torch.manual_seed(0)
    model = create_model(name, num_outputs=8, in_channels=1, width=0.125).eval()
    x = torch.randn(3, 1, 313, 149)
    out = model(x)
    assert out.shape == (3, 8)
    net = model.net
    if not bottleneck:
        assert net.concepts is None and net.head.in_features == net.trunk.out_features
        return
    assert (net.concepts.in_features, net.concepts.out_features) == (net.trunk.out_features, 7)
    assert (net.head.in_features, net.head.out_features) == (7, 8)
    # no nonlinearity between bottleneck and output: out = W2 c + b2 exactly
    out2, concepts = outputs_and_concepts(model, x)
    assert concepts.shape == (3, 7)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(out, concepts @ net.head.weight.T + net.head.bias)


def test_trunk_is_the_reference_architecture():
    net = EmotionCNN(8, 1, width=1.0)
    convs = [m for m in net.trunk.layers if isinstance(m, nn.Conv2d)]
    spec = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs]
    assert spec == [(1, 64, 5, 2), (64, 64, 3, 1), (64, 128, 3, 1), (128, 128, 3, 1), (128, 256, 3, 1),
                    (256, 256, 3, 1), (256, 384, 3, 1), (384, 512, 3, 1), (512, 256, 1, 1)]
    layers = list(net.trunk.layers)
    for conv in convs:  # every conv followed by batch-norm and ReLU
        i = layers.index(conv)
        assert isinstance(layers[i + 1], nn.BatchNorm2d) and isinstance(layers[i + 2], nn.ReLU)
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(layers[i + 1], nn.Dropout2d) and layers[i + 1].p == 0.3 for i in pools)
    assert pools[0] == layers.index(convs[1]) + 3 and pools[1] == layers.index(convs[3]) + 3
    assert net.head.in_features == 256
    # the reference's intermediate size after the strided conv: 313 x 149 -> 157 x 75
    assert convs[0](torch.zeros(1, 1, 313, 149)).shape[-2:] == (157, 75)


def test_kaiming_normal_init():
    torch.manual_seed(0)
    net = EmotionCNN(8, 1, width=1.0, bottleneck=7)
    big = [m for m in net.modules() if isinstance(m, nn.Conv2d)][7]  # 384 -> 512, 3x3: 1.77M weights
    fan_in = big.in_channels * 9
    w = big.weight.detach().double()
    assert float(w.mean()) == pytest.approx(0.0, abs=2e-4)
    assert float(w.std()) == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.01)  # sd of the estimate: 0.05%
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_width_scales_channels():
    net = EmotionCNN(8, 1, width=0.25)
    convs = [m.out_channels for m in net.trunk.layers if isinstance(m, nn.Conv2d)]
    assert convs == [16, 16, 32, 32, 64, 64, 96, 128, 64]
