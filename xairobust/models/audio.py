"""The VGG-style emotion-recognition CNN of Chowdhury et al. (2019) and its three heads.

Trunk (input (1, 313, 149) -> 256 features); every conv is followed by BatchNorm and ReLU::

    conv 5x5 stride 2 -> 64, conv 3x3 -> 64, max-pool 2 + Dropout2d(0.3),
    conv 3x3 -> 128 (x2), max-pool 2 + Dropout2d(0.3),
    conv 3x3 -> 256 (x2), conv 3x3 -> 384, conv 3x3 -> 512, conv 1x1 -> 256,
    global average pool.

Heads: ``a2e`` Linear(256, 8); ``a2b2e`` and ``a2m2e`` Linear(256, 7) -> Linear(7, 8) with no
nonlinearity (the 7 units are the mid-level concept bottleneck). ``a2b2e`` and ``a2m2e`` are
the same network; they differ in training (``a2m2e`` with the ``a2m2e_joint`` method, which
also fits the bottleneck to the mid-level annotations). Every model returns (B, 8) emotions;
``outputs_and_concepts`` also returns the bottleneck.

Weights: Kaiming-normal (fan_in, ReLU gain) for conv and linear weights, zero biases,
BatchNorm weight 1 / bias 0 -- as the reference. ``width`` scales every channel count (1.0 is
the reference network; CPU-scale configs use 0.25).
"""

from __future__ import annotations

from torch import Tensor, nn

from xairobust.registry import MODELS

NUM_CONCEPTS = 7
# (out_channels, kernel, stride) of the convs; "M" is max-pool 2 + Dropout2d.
_TRUNK: tuple = ((64, 5, 2), (64, 3, 1), "M", (128, 3, 1), (128, 3, 1), "M", (256, 3, 1), (256, 3, 1),
                 (384, 3, 1), (512, 3, 1), (256, 1, 1))


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGGTrunk(nn.Module):
    """Conv trunk up to global average pooling: (B, C, T, F) -> (B, features)."""

    def __init__(self, in_channels: int = 1, width: float = 1.0, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in _TRUNK:
            if spec == "M":
                layers += [nn.MaxPool2d(2), nn.Dropout2d(dropout)]
                continue
            out, kernel, stride = spec
            out = _scaled(out, width)
            layers += [
                nn.Conv2d(channels, out, kernel, stride=stride, padding=kernel // 2),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=False),  # in-place ReLUs break some attribution hooks
            ]
            channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layers(x)).flatten(1)


class EmotionCNN(nn.Module):
    """Trunk + head. ``bottleneck`` None: Linear(256, 8); else Linear(256, 7) -> Linear(7, 8)."""

    def __init__(self, num_outputs: int = 8, in_channels: int = 1, width: float = 1.0,
                 bottleneck: int | None = None, dropout: float = 0.3) -> None:
        super().__init__()
        self.trunk = VGGTrunk(in_channels, width, dropout)
        feats = self.trunk.out_features
        if bottleneck:
            self.concepts: nn.Linear | None = nn.Linear(feats, bottleneck)
            self.head = nn.Linear(bottleneck, num_outputs)
        else:
            self.concepts = None
            self.head = nn.Linear(feats, num_outputs)
        self.apply(_init)

    def forward_with_concepts(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(emotions (B, outputs), bottleneck (B, 7) or None)."""
        h = self.trunk(x)
        if self.concepts is None:
            return self.head(h), None
        c = self.concepts(h)
        return self.head(c), c

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_concepts(x)[0]


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def outputs_and_concepts(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """(outputs, bottleneck) of a (possibly Normalize-wrapped) EmotionCNN on inputs ``x``."""
    net = getattr(model, "net", model)
    if not isinstance(net, EmotionCNN):
        return model(x), None
    normalize = getattr(model, "normalize", None)
    return net.forward_with_concepts(normalize(x) if normalize is not None else x)


def has_concepts(model: nn.Module) -> bool:
    net = getattr(model, "net", model)
    return isinstance(net, EmotionCNN) and net.concepts is not None


@MODELS.register("a2e", input_size=(313, 149), task="regression")
def a2e(num_outputs: int = 8, in_channels: int = 1, width: float = 1.0, dropout: float = 0.3) -> nn.Module:
    """Black-box A2E: trunk + Linear(256, num_outputs)."""
    return EmotionCNN(num_outputs, in_channels, width, None, dropout)


@MODELS.register("a2b2e", input_size=(313, 149), task="regression")
def a2b2e(num_outputs: int = 8, in_channels: int = 1, width: float = 1.0, dropout: float = 0.3) -> nn.Module:
    """Bottleneck architecture trained on emotions only (black box with A2M2E's shape)."""
    return EmotionCNN(num_outputs, in_channels, width, NUM_CONCEPTS, dropout)


@MODELS.register("a2m2e", input_size=(313, 149), task="regression")
def a2m2e(num_outputs: int = 8, in_channels: int = 1, width: float = 1.0, dropout: float = 0.3) -> nn.Module:
    """Concept-bottleneck A2M2E (train with method a2m2e_joint so the 7 units learn mid-level features)."""
    return EmotionCNN(num_outputs, in_channels, width, NUM_CONCEPTS, dropout)
