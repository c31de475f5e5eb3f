"""The architectures of RobustBench's CIFAR-10 zoo, with RobustBench's exact parameter names.

Written here from the published layer layout (RobustBench's
``robustbench.model_zoo.architectures.wide_resnet.WideResNet`` and ``resnet.PreActResNet``), so
that a RobustBench checkpoint loads with strict key matching and no renaming:

* ``wideresnet`` -- WideResNet-``depth``-``widen_factor`` (default 28-10, the CIFAR-10 "Standard"
  entry and most L-inf entries; 34-10, 34-20, 70-16 with the same class). Keys ``conv1``,
  ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``.
  ``wrn28_10`` is the same with the size fixed.
* ``preactresnet18_rb`` -- PreActResNet-18: keys ``conv1``, ``layer{1..4}.{j}.{bn1,conv1,bn2,
  conv2,shortcut.0}``, optional ``bn``, ``linear``. RobustBench uses two variants:
  ``variant="v1"`` (``PreActBlock``: the projection shortcut takes the block's raw input, no
  BatchNorm before the head; Andriushchenko2020Understanding, Wong2020Fast) and
  ``variant="v2"`` (``PreActBlockV2``: the shortcut takes the pre-activation, and a final
  BN-ReLU before the head; Rice2020Overfitting L2, Kireev2021Effectiveness). xairobust's own
  ``preactresnet18`` computes exactly the v2 network, under other key names.

Differences from RobustBench's code, none of which changes a 32x32 output: ReLUs are not
in-place (in-place ReLUs break attribution hooks) and the global pool is adaptive (RobustBench's
fixed ``avg_pool2d(8)`` / ``avg_pool2d(4)`` average the same 8x8 / 4x4 map for 32x32 inputs,
and the adaptive pool also accepts other input sizes). ``infer_kwargs`` on each builder reads
the size options from a checkpoint's keys for ``xairobust import``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from xairobust.errors import ConfigError
from xairobust.registry import MODELS


class WRNBlock(nn.Module):
    """RobustBench's ``BasicBlock``: pre-activation; a projecting block pre-activates its input
    once and feeds it to both the 3x3 conv and the 1x1 ``convShortcut``."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = cin == cout
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
            skip = x
        else:
            x = self.relu1(self.bn1(x))
            out = x
            skip = self.convShortcut(x)
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        return skip + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop_rate)
                                     for i in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-depth-k in RobustBench's layout (see the module docstring)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_outputs: int = 10, in_channels: int = 3,
                 drop_rate: float = 0.0, bias_last: bool = True) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"model 'wideresnet': depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen_factor < 1:
            raise ConfigError(f"model 'wideresnet': widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_outputs, bias=bias_last)
        # RobustBench's initialisation: He-normal convs (fan-out), BN 1/0, zero linear bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(self.pool(out).flatten(1))


def _infer_wrn(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """depth / widen_factor / bias_last of a RobustBench WideResNet state dict (for import)."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"block1\.layer\.(\d+)\.", k))}
    out: dict[str, Any] = {}
    if blocks:
        out["depth"] = 6 * (max(blocks) + 1) + 4
    w = state.get("block1.layer.0.conv1.weight")
    if w is not None and w.ndim == 4 and w.shape[0] % 16 == 0:
        out["widen_factor"] = int(w.shape[0]) // 16
    if "fc.weight" in state:
        out["bias_last"] = "fc.bias" in state
    return out


@MODELS.register("wideresnet", input_size=32, source="RobustBench WideResNet layout")
def wideresnet(num_outputs: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 10,
               drop_rate: float = 0.0, bias_last: bool = True) -> nn.Module:
    return WideResNet(depth, widen_factor, num_outputs, in_channels, drop_rate, bias_last)


@MODELS.register("wrn28_10", input_size=32, source="RobustBench WideResNet layout")
def wrn28_10(num_outputs: int = 10, in_channels: int = 3) -> nn.Module:
    """WideResNet-28-10 (36.5M parameters), RobustBench's CIFAR-10 'Standard' architecture."""
    return WideResNet(28, 10, num_outputs, in_channels)


wideresnet.infer_kwargs = _infer_wrn  # type: ignore[attr-defined]


class RBPreActBlock(nn.Module):
    """RobustBench's ``PreActBlock`` (v1) or ``PreActBlockV2`` (v2); they differ only in what the
    projection shortcut takes: the raw input (v1) or the pre-activation (v2)."""

    def __init__(self, cin: int, cout: int, stride: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))
        else:
            self.shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut(out if self.variant == "v2" else x)
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + skip


class RBPreActResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_outputs: int, in_channels: int, variant: str) -> None:
        super().__init__()
        if variant not in ("v1", "v2"):
            raise ConfigError(f"model 'preactresnet18_rb': variant must be v1 or v2, got '{variant}'")
        self.variant = variant
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        cin = 64
        for i, n in enumerate(blocks):
            cout = 64 * 2**i
            layers = [RBPreActBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1, variant)
                      for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        # v2 is RobustBench's bn_before_fc=True: BN-ReLU on the last feature map.
        self.bn = nn.BatchNorm2d(cin) if variant == "v2" else None
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = self.relu(self.bn(out))
        return self.linear(self.pool(out).flatten(1))


@MODELS.register("preactresnet18_rb", input_size=32, source="RobustBench PreActResNet layout")
def preactresnet18_rb(num_outputs: int = 10, in_channels: int = 3, variant: str = "v1") -> nn.Module:
    return RBPreActResNet((2, 2, 2, 2), num_outputs, in_channels, variant)


def _infer_preact(state: Mapping[str, Tensor]) -> dict[str, Any]:
    # In RobustBench's zoo a final BatchNorm ('bn.*', bn_before_fc=True) comes only with
    # PreActBlockV2, and PreActBlock never has one: the keys tell the variant apart.
    return {"variant": "v2" if "bn.weight" in state else "v1"}


preactresnet18_rb.infer_kwargs = _infer_preact  # type: ignore[attr-defined]
