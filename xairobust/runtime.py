"""How a stage runs the model: its memory layout (speed only) and its precision (changes numbers).

Layout: a model with ``Conv2d`` layers on (C, H, W) inputs is converted once, in place, to
``torch.channels_last`` (oneDNN on CPU and cuDNN on CUDA pick NHWC kernels when the weights are
NHWC, and every later activation keeps that layout, so inputs need no conversion: an NCHW input
costs one reorder inside the first convolution). Attributions come back through ``usual_layout``
as plain contiguous NCHW tensors. Values agree with NCHW within float32 re-association (≤ 1e-5
relative; ``tests/test_runtime.py`` checks every registered explainer and metric), so the layout
is *not* part of a stage's identity.

Precision: ``bf16`` runs every forward of the model under ``torch.autocast(..., bfloat16)`` (CPU
and CUDA) and casts the model's output back to float32, so the code around the model (metrics,
Quantus, numpy) sees float32 and only the model's own matmuls/convolutions run in bf16. bf16
changes the numbers, so it *is* part of the identity -- added only when it is not the default,
so that every fp32 identity hash stays what it was (``identity_part``) -- and is recorded in the
outputs; ``report`` refuses to compare fp32 with bf16 scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xairobust.config import require

PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"


def check_precision(value: str, stage: str) -> str:
    """The value, or a one-line ConfigError naming ``--precision``."""
    require(value in PRECISIONS, f"{stage}: --precision must be one of {', '.join(PRECISIONS)}, got '{value}'")
    return value


def identity_part(precision: str) -> dict[str, Any]:
    """What precision adds to a stage's identity: nothing for fp32 (old hashes stay valid)."""
    return {} if precision == DEFAULT_PRECISION else {"precision": precision}


def wants_channels_last(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """A 4-D image model: (C, H, W) inputs and at least one 2-D convolution."""
    return len(tuple(input_shape)) == 3 and any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, input_shape: tuple[int, ...], precision: str = DEFAULT_PRECISION,
                  channels_last: bool = True) -> nn.Module:
    """``model`` (in place, already on its device): channels_last where it applies, bf16 autocast if asked."""
    check_precision(precision, "model")
    if channels_last and wants_channels_last(model, input_shape):
        model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        _autocast_forward(model)
    return model


def usual_layout(t: Tensor) -> Tensor:
    """A plain contiguous (NCHW) tensor, whatever layout the model's gradients came back in."""
    return t.contiguous()


def model_precision(model: nn.Module) -> str:
    return getattr(type(model), "xairobust_precision", DEFAULT_PRECISION)


_BF16_CLASSES: dict[type, type] = {}


def _autocast_forward(model: nn.Module) -> None:
    """Make ``model``'s forward run under bf16 autocast and return float32.

    Done by giving the instance a subclass whose ``forward`` wraps the original: module names,
    hooks, ``state_dict`` and ``isinstance`` stay as they were (Grad-CAM finds its layer), and a
    ``copy.deepcopy`` (randomisation metrics, the manipulation's softplus copy) keeps the wrapper
    and binds it to the copy -- a closure assigned to ``model.forward`` would keep the original.
    """
    cls = type(model)
    if getattr(cls, "xairobust_precision", None) == "bf16":
        return
    if cls not in _BF16_CLASSES:

        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
            with torch.autocast(device, dtype=torch.bfloat16):
                out = cls.forward(self, *args, **kwargs)
            if isinstance(out, Tensor) and out.is_floating_point():
                return out.float()
            return out

        _BF16_CLASSES[cls] = type(f"{cls.__name__}Bf16", (cls,), {
            "forward": forward, "xairobust_precision": "bf16", "__module__": cls.__module__, "__doc__": cls.__doc__,
        })
    model.__class__ = _BF16_CLASSES[cls]


def runtime_options(fn: Any) -> Any:
    """``--precision`` and ``--channels-last/--no-channels-last`` for a stage command (values checked by its Config)."""
    import click

    fn = click.option("--channels-last/--no-channels-last", "channels_last", default=None,
                      help="4-D image models in channels_last memory layout (default: yes; speed only, same values).")(fn)
    return click.option("--precision", help="fp32 (default) or bf16: the model's passes under bf16 autocast"
                        " (faster on CPUs with AVX-512 BF16 and on GPUs; changes values, recorded in the outputs).")(fn)
