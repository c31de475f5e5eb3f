"""Small networks for the embedded dataset, tests and CPU runs."""

from __future__ import annotations

from torch import Tensor, nn

from xairobust.registry import MODELS


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers + a linear head for 8x8 inputs (~20k parameters).

    Smooth enough (ReLU, no pooling tricks) that gradient explanations are meaningful, small
    enough that the whole demo zoo trains on 2 CPU cores in a few minutes.
    """

    # forward calls the children once each, in registration order, with no residual adds:
    # layer-by-layer explainers (LRP, xairobust/explain/lrp.py) rely on it.
    sequential_forward = True

    def __init__(self, num_outputs: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@MODELS.register("digits_cnn", input_size=8)
def digits_cnn(num_outputs: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    return DigitsCNN(num_outputs, in_channels, width)


@MODELS.register("tiny_mlp", input_size=None)
def tiny_mlp(num_outputs: int = 10, in_channels: int = 1, input_size: int = 8, hidden: int = 32, input_width: int | None = None) -> nn.Module:
    """A two-layer MLP for tests where exact values are computed by hand (``input_width`` for
    non-square inputs such as spectrograms; default square)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * input_size * (input_width or input_size), hidden),
        nn.Tanh(),
        nn.Linear(hidden, num_outputs),
    )
