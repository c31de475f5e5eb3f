"""The softplus copy of a ReLU network, used only while attacking (Dombrowski et al. 2019).

A ReLU network is piecewise linear: its input Hessian is zero almost everywhere, so the gradient
of a gradient explanation with respect to the input carries no signal. The attacks therefore
differentiate through a copy whose every ``nn.ReLU`` is ``nn.Softplus(beta)``
(softplus_beta(z) = log(1 + exp(beta z)) / beta -> ReLU as beta -> inf). The copy **shares the
parameter and buffer tensors** of the original (no copy of the weights: a change to one is a
change to the other), is put in eval mode, and refuses to be saved (``state_dict`` and pickling
raise), so it can never end up in a run directory. Explanations that are reported or scored
always come from the original network.

Only ``nn.ReLU`` modules are replaced; ``torch.nn.functional.relu`` calls inside a ``forward``
cannot be seen, so :func:`softplus_copy` reports how many it replaced (the manipulation JSON
records it). Max-pooling stays as it is (its routing is piecewise constant but the softplus
features it routes make the copy's Hessian non-zero).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from xairobust.errors import RunError


class SoftplusCopy(nn.Module):
    """Wrapper around the weight-sharing softplus copy; never serialisable."""

    def __init__(self, net: nn.Module, beta: float, replaced: int) -> None:
        super().__init__()
        self.net = net
        self.beta = beta
        self.replaced = replaced

    def forward(self, x):  # noqa: D102
        return self.net(x)

    def state_dict(self, *args: Any, **kwargs: Any):  # noqa: D102
        raise RunError("the softplus copy is used only while attacking and is never saved")

    def __reduce_ex__(self, protocol: int):  # pickling / torch.save
        raise RunError("the softplus copy is used only while attacking and is never saved")


def softplus_copy(model: nn.Module, beta: float) -> SoftplusCopy:
    """A copy of ``model`` with every nn.ReLU replaced by nn.Softplus(beta), sharing its tensors."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    memo: dict[int, Any] = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    net = copy.deepcopy(model, memo)
    replaced = 0
    for module in net.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=beta))
                replaced += 1
    net.eval()
    return SoftplusCopy(net, beta, replaced)
