"""Control explanations: maps that carry no information about the model (issue 18).

A metric that scores one of these as well as a real explainer cannot tell a model's explanation
from noise, from the image's own edges, or from "everything matters equally". Registered as
explainers so that every stage (explain, score, report) takes them like any other:

* ``random``: uniform noise U(0, 1) shaped like the input, from the sample's seed. It is
  ``stochastic``: every re-explanation inside a metric draws fresh noise (draw k of
  ``make_explain``), as Quantus' "Control Var. Random Uniform" does -- a random map that
  returned the same noise at a perturbed input would score a perfect, meaningless stability.
* ``sobel``: the Sobel edge magnitude of the input, per channel (Etmann et al. 2019: robust
  models' gradients look like the image; an edge detector "looks like the image" too and knows
  nothing of the model). Equal to ``hypot(scipy.ndimage.sobel(img, 0), scipy.ndimage.sobel(img, 1))``
  with scipy's default ``mode='reflect'`` on every channel image (tests/test_controls.py).
* ``constant``: all ones. Native engine only: Quantus refuses any batch of constant
  attributions as a likely bug (``asserts.assert_attributions``: "uniformly distributed"), so
  ``score --engine quantus`` refuses it with a one-line error; its native values are checked
  against closed forms instead (tests/test_controls.py). Correlation metrics are undefined for it (NaN: a constant attribution
  has no variance), Complexity is at its maximum log(d) and Sparseness at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.explain._common import uniform_like
from xairobust.explain.base import Explainer
from xairobust.explain.captum_explainers import _check_shapes
from xairobust.registry import EXPLAINERS


class _Control(Explainer):
    """Model-independent maps: the model is never called (no passes, nothing to cap)."""

    control = True  # reports put these in the control rows

    def points_per_input(self) -> int:
        return 1


@dataclass
class RandomParams:
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        require(self.high > self.low, f"random: --high must be above --low, got {self.low}, {self.high}")


@EXPLAINERS.register("random", label="Random", library="control: uniform noise, seeded per sample (no model)", control=True)
class RandomControl(_Control):
    """Uniform noise U(low, high) shaped like the input, drawn from the sample's own seed."""

    Params = RandomParams
    stochastic = True

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if not len(inputs):
            return torch.empty_like(inputs)
        return uniform_like(inputs, seeds, self.params.low, self.params.high)


_SOBEL_D = (-1.0, 0.0, 1.0)  # derivative taps (scipy.ndimage.sobel's correlate1d weights)
_SOBEL_S = (1.0, 2.0, 1.0)  # smoothing taps on the other axis


def sobel_magnitude(x: Tensor) -> Tensor:
    """Per-channel Sobel edge magnitude of (B, C, H, W) images, scipy's 'reflect' border.

    scipy's 'reflect' repeats the edge pixel (d c b a | a b c d), which for the one-pixel border
    of a 3 x 3 kernel is torch's 'replicate' padding.
    """
    b, c, h, w = x.shape
    d = torch.tensor(_SOBEL_D, dtype=torch.float64, device=x.device)
    s = torch.tensor(_SOBEL_S, dtype=torch.float64, device=x.device)
    k_rows = torch.outer(d, s)  # derivative along H (axis 0 of the image), smoothing along W
    k_cols = torch.outer(s, d)
    kernel = torch.stack([k_rows, k_cols]).unsqueeze(1)  # (2, 1, 3, 3)
    flat = x.reshape(b * c, 1, h, w).double()
    padded = nn.functional.pad(flat, (1, 1, 1, 1), mode="replicate")
    g = nn.functional.conv2d(padded, kernel)  # cross-correlation, as scipy's correlate1d
    return torch.hypot(g[:, 0], g[:, 1]).reshape(b, c, h, w).to(x.dtype)


@EXPLAINERS.register("sobel", label="Sobel", library="control: Sobel edge magnitude of the input (scipy.ndimage.sobel), no model", control=True)
class SobelControl(_Control):
    """The input's edge magnitude per channel: an explanation that knows nothing of the model."""

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        if inputs.dim() != 4:
            raise ConfigError(f"sobel: needs image inputs (N, C, H, W), got shape {tuple(inputs.shape)}")
        return sobel_magnitude(inputs.detach())


@EXPLAINERS.register("constant", label="Const", library="control: all-equal map (no model)", control=True,
                    quantus_refuses="Quantus refuses constant attributions (asserts.assert_attributions); use --engine native")
class ConstantControl(_Control):
    """Every feature gets attribution 1."""

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        return torch.ones_like(inputs)
