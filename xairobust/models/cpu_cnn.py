"""A small, fast CNN for CPU-scale CIFAR experiments (the cpu_*.yaml configs)."""

from __future__ import annotations

from torch import Tensor, nn

from xairobust.registry import MODELS


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class CifarCNN(nn.Module):
    """Four conv-BN-ReLU stages of width w, 2w, 4w, 8w, each followed by 2x2 max-pooling
    (32 -> 16 -> 8 -> 4 px), a global average pool and a linear head: ~390k parameters at w=32.

    One conv per resolution keeps the compute at ~15M multiply-adds per image (CPU epochs of
    about a minute on 2 cores); BatchNorm lets it train with a large learning rate, so three
    epochs reach useful accuracy. The global pool is an average: with a global max-pool the
    first SGD steps at lr 0.05-0.1 blew the loss up to 8-15 (measured), with the average not.
    """

    # forward calls the children once each, in registration order, with no residual adds:
    # layer-by-layer explainers (LRP, xairobust/explain/lrp.py) rely on it.
    sequential_forward = True

    def __init__(self, num_outputs: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(_conv_bn(in_channels, w), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(_conv_bn(w, 2 * w), nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2))
        self.stage4 = _conv_bn(4 * w, 8 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("cifar_cnn", input_size=32, source="xairobust")
def cifar_cnn(num_outputs: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    return CifarCNN(num_outputs, in_channels, width)
