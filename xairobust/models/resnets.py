"""ResNets of the CIFAR and NsLoss studies.

``resnet18_cifar`` is timm's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no
max-pool), the architecture of Boychev's CIFAR-10 experiments. ``preactresnet18`` (CIFAR stem)
and ``preresnet10`` (ImageNet stem: 7x7 stride-2 conv + max-pool, one block per stage, the
PreResNet10 of Moshe et al.) are pre-activation ResNets (He et al. 2016, "Identity mappings"),
defined here because timm has no pre-activation basic-block ResNet.
"""

from __future__ import annotations

from torch import Tensor, nn

from xairobust.registry import MODELS


@MODELS.register("resnet18_cifar", input_size=32, source="timm resnet18, CIFAR stem")
def resnet18_cifar(num_outputs: int = 10, in_channels: int = 3) -> nn.Module:
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=num_outputs, in_chans=in_channels)
    # 32x32 inputs: keep full resolution in the stem (the ImageNet stem would shrink 32 -> 8).
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@MODELS.register("resnet50_cifar", input_size=32, source="timm resnet50, CIFAR stem (MadryLab robustness' CIFAR ResNet-50)")
def resnet50_cifar(num_outputs: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-50 with the CIFAR stem, the architecture of ``robustness.cifar_models.ResNet50``
    (MadryLab's CIFAR-10 checkpoints): bottleneck blocks with the stride on the 3x3 conv, 3x3
    stride-1 first conv, no max-pool, global average pool over the 4x4 map."""
    import timm

    net = timm.create_model("resnet50", pretrained=False, num_classes=num_outputs, in_chans=in_channels)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; the shortcut takes the first pre-activation when it must project."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet with basic blocks; ``stem`` 'cifar' (3x3) or 'imagenet' (7x7 + pool)."""

    def __init__(
        self, blocks: tuple[int, ...], num_outputs: int, in_channels: int, stem: str = "cifar", width: int = 64
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        stages = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            layers = [PreActBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(cin)  # the final pre-activation before pooling
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("preactresnet18", input_size=32, source="xairobust")
def preactresnet18(num_outputs: int = 10, in_channels: int = 3) -> nn.Module:
    return PreActResNet((2, 2, 2, 2), num_outputs, in_channels, stem="cifar")


@MODELS.register("preresnet10", input_size=None, source="xairobust")
def preresnet10(num_outputs: int = 10, in_channels: int = 3) -> nn.Module:
    return PreActResNet((1, 1, 1, 1), num_outputs, in_channels, stem="imagenet")
