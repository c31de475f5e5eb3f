"""Layer-wise Relevance Propagation with Captum's rules (``captum.attr.LRP``).

LRP is defined layer by layer, so it only applies to networks whose forward pass is a chain of
layers it has rules for. Before any work the model is checked: every leaf module must be one of
SUPPORTED_LEAVES, and every module with children must be an ``nn.Sequential`` or a class that
declares ``sequential_forward = True`` (its forward calls its children once each, in order, with
no residual additions or functional non-linearities: DigitsCNN, CifarCNN, NormalizedModel).
Anything else (ResNet blocks with residual adds, GELU, LayerNorm, attention, ...) raises a
one-line ConfigError naming the module and its type -- Captum would otherwise either fail with
a long TypeError or, for functional residual adds it cannot see, return wrong relevances.

How the layers are treated (documented choices):

* Conv2d / Linear: the chosen rule (``epsilon``: LRP-epsilon; ``gamma``: LRP-gamma;
  ``alpha1beta0``: LRP-alpha1-beta0 / deep Taylor; ``composite``: gamma on Conv2d and epsilon on
  Linear, the lower-/upper-layer split Montavon et al. 2019 recommend).
* BatchNorm2d directly after a Conv2d in an nn.Sequential is merged into it first
  (``torch.nn.utils.fusion.fuse_conv_bn_eval`` on a copy; the forward pass is unchanged): the
  canonisation zennit applies, since an epsilon rule on BN alone lets its shift absorb or inject
  relevance. A BatchNorm2d that does not follow a conv keeps Captum's default (epsilon) rule.
* Pooling: Captum's defaults (epsilon rule; max-pooling passes relevance to the winner).
* ReLU / Tanh / Dropout: passed through (Captum's non-linear layers).
* xairobust's Normalize layer: identity rule (relevance passes unchanged: the
  layer is element-wise, so relevance of a normalised pixel is that of the raw pixel);
  nn.Flatten: epsilon rule, which for a reshape passes relevance unchanged.

With epsilon -> 0 on a bias-free ReLU network this is Gradient x Input, and on a bias-free
linear model w * x (tests/test_explain.py checks both).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.explain._common import DEFAULT_CHUNK, captum_quiet, chunks
from xairobust.explain.base import Explainer
from xairobust.explain.captum_explainers import _check_shapes
from xairobust.models.base import Normalize
from xairobust.registry import EXPLAINERS

# Exact types (as Captum checks them): a subclass may change the forward pass.
SUPPORTED_LEAVES: tuple[type, ...] = (
    nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.ReLU, nn.Tanh, nn.Dropout, nn.Flatten, Normalize,
)


def check_lrp_supported(model: nn.Module) -> None:
    """ConfigError naming the first module LRP cannot handle (see the module docstring)."""
    for name, module in model.named_modules():
        where = f"'{name}' " if name else ""
        kind = type(module).__name__
        if any(True for _ in module.children()):
            if type(module) is nn.Sequential or getattr(type(module), "sequential_forward", False):
                continue
            raise ConfigError(
                f"lrp: module {where}of type {kind} is not supported: LRP needs a plain chain of layers, and"
                f" {kind}'s forward may add residuals or call functions LRP has no rule for"
            )
        if type(module) not in SUPPORTED_LEAVES:
            supported = ", ".join(t.__name__ for t in SUPPORTED_LEAVES)
            raise ConfigError(f"lrp: module {where}of type {kind} is not supported (LRP rules exist for: {supported})")
        if type(module) in (nn.ReLU,) and getattr(module, "inplace", False):
            raise ConfigError(f"lrp: module {where}is an in-place ReLU, which Captum's LRP hooks cannot follow")


def merge_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each Conv2d -> BatchNorm2d pair inside an nn.Sequential
    fused into one conv (the BN removed from the Sequential); the forward pass is unchanged."""
    out = copy.deepcopy(model).eval()
    for seq in out.modules():
        if type(seq) is not nn.Sequential:
            continue
        keys = list(seq._modules)
        for a, b in zip(keys, keys[1:], strict=False):  # consecutive pairs
            conv, bn = seq._modules.get(a), seq._modules.get(b)
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                # Removed, not replaced by nn.Identity: Identity returns its input tensor itself,
                # on which Captum's input and output hooks would then collide.
                del seq._modules[b]
    return out


@dataclass
class LRPParams:
    rule: Literal["epsilon", "gamma", "alpha1beta0", "composite"] = "epsilon"
    # Captum's EpsilonRule default: a stabiliser only (LRP-0 in effect). Montavon et al. use
    # epsilon ~ 0.25 * std of the activations to suppress noise; pass --epsilon for that.
    epsilon: float = 1e-9
    gamma: float = 0.25  # Captum's GammaRule default, the value Montavon et al. 2019 use

    def __post_init__(self) -> None:
        require(self.epsilon > 0, f"lrp: --epsilon must be > 0, got {self.epsilon}")
        require(self.gamma >= 0, f"lrp: --gamma must be >= 0, got {self.gamma}")


@EXPLAINERS.register("lrp", label="LRP", library="captum.attr.LRP (BatchNorm merged into the preceding conv)")
class LRPExplainer(Explainer):
    """LRP (Bach et al. 2015) with Captum's rules; records Captum's convergence delta
    (f_target(x) - sum of relevances: the relevance absorbed by biases and epsilon) per sample."""

    Params = LRPParams
    chunk_size = DEFAULT_CHUNK

    def __init__(self, params: LRPParams, background: Tensor | None = None) -> None:
        super().__init__(params, background)
        self._delta: Tensor | None = None

    def _rule(self, module: nn.Module):
        p = self.params
        if type(module) is Normalize:
            return IdentityRule()
        if type(module) is nn.Flatten:
            return EpsilonRule(p.epsilon)
        if type(module) not in (nn.Conv2d, nn.Linear):
            return None  # Captum's default for the type
        rule = p.rule
        if rule == "composite":
            rule = "gamma" if type(module) is nn.Conv2d else "epsilon"
        if rule == "gamma":
            return GammaRule(p.gamma)
        if rule == "alpha1beta0":
            return Alpha1_Beta0_Rule()
        return EpsilonRule(p.epsilon)

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        _check_shapes(inputs, targets, seeds)
        check_lrp_supported(model)
        net = merge_batchnorm(model)
        outs, deltas = [], []
        for sl in chunks(len(inputs), self.chunk_size):
            # Captum deletes every `rule` attribute after each call, so they are set each time.
            for module in net.modules():
                rule = self._rule(module)
                if rule is not None:
                    module.rule = rule
            try:
                with captum_quiet():
                    a, delta = LRP(net).attribute(inputs[sl], target=[int(t) for t in targets[sl]],
                                                  return_convergence_delta=True)
            except RuntimeError as exc:
                if "more than once" in str(exc):
                    raise ConfigError("lrp: the model uses a module more than once in its forward pass, which LRP cannot handle") from None
                raise
            outs.append(a.detach())
            deltas.append(delta.detach().float().cpu())
        self._delta = torch.cat(deltas) if deltas else torch.empty(0)
        return torch.cat(outs) if outs else torch.empty_like(inputs)

    def extras(self) -> dict[str, Tensor]:
        return {} if self._delta is None else {"convergence_delta": self._delta}
