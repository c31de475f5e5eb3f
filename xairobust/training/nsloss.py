"""NsLoss (Moshe et al.): task loss + lambda * neuron sensitivity to random L2 perturbations.

For each measured layer i and neuron j, over a batch X and N perturbations x + delta_k with
||delta_k||_2 = eps_ns (paper eqs. 4-7):

    MA_ij = mean_m |a_ij(x_m)|
    MD_ij = mean_{k,m} |a_ij(x_m) - a_ij(x_m + delta_k)|
    NS_ij = MD_ij / (eps_ns * |M_i| * MA_ij)
    NsLoss = sum_i sum_j NS_ij * MA_ij = sum_i mean_j MD_ij / eps_ns

The loss uses the right-hand form, which never divides by MA (dead units have MA ~ 0); NS
itself is only computed for logging. One forward pass runs over the concatenated batch
[x, x + delta_1, ..., x + delta_N]; forward hooks collect the measured layers' outputs.

Batch-norm: in train mode every BN layer normalises *all* rows with the mean/variance of the
clean rows only, and only the clean rows update the running statistics (exactly as a
standard forward on x alone would). The clean rows therefore see the same network as in
standard training, and a(x) and a(x + delta) are compared under one and the same affine map.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.registry import METHODS
from xairobust.training.base import TrainContext, TrainingMethod

# Default hook points: conv and linear outputs. ReLU modules are unreliable (ResNet blocks reuse
# one ReLU module or call F.relu), while every conv/linear module runs exactly once per forward.
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def sphere_perturbations(x: Tensor, n: int, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """(n, B, ...) perturbations uniform on the L2 sphere of radius eps, per sample and perturbation."""
    g = torch.randn((n, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    norms = g.flatten(2).norm(dim=2).clamp_min(1e-12)
    return eps * g / norms.view(n, x.shape[0], *([1] * (x.dim() - 1)))


def select_layers(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the measured modules: conv/linear by default, else those matching the glob patterns.

    A pattern that matches no module is a ConfigError (a typo must not silently measure nothing).
    """
    named = dict(model.named_modules())
    if not patterns:
        chosen = [n for n, m in named.items() if isinstance(m, DEFAULT_TYPES)]
        if not chosen:
            raise ConfigError("nsloss: the model has no Conv/Linear module to measure; pass --layers")
        return chosen
    chosen = []
    for pattern in patterns:
        hits = [n for n in named if n and fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            sample = ", ".join([n for n in named if n][:12])
            raise ConfigError(f"nsloss: --layers pattern '{pattern}' matches no module (modules: {sample}, ...)")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def neuron_view(act: Tensor, granularity: str) -> Tensor:
    """(rows, neurons): one column per element, or per channel (spatial mean of each channel)."""
    if granularity == "channel" and act.dim() > 2:
        return act.flatten(2).mean(dim=2)
    return act.flatten(1)


def layer_terms(act: Tensor, batch: int, n: int, eps: float, granularity: str) -> tuple[Tensor, Tensor, Tensor]:
    """(loss term sum_j NS_ij*MA_ij, MD_ij, MA_ij) of one layer from its output on the concatenated batch."""
    a = neuron_view(act, granularity)
    # split (not slicing) so that the backward pass concatenates the two gradients instead of
    # zero-filling a full-size buffer per slice.
    clean, pert = a.view(n + 1, batch, a.shape[1]).split([1, n])
    ma = clean[0].abs().mean(dim=0)
    md = (pert - clean).abs().mean(dim=(0, 1))
    return md.sum() / (eps * a.shape[1]), md, ma


def _clean_stats_bn_forward(module: _BatchNorm, clean_rows: int):
    """A BN forward that normalises every row with the batch statistics of the first ``clean_rows``."""

    def forward(inp: Tensor) -> Tensor:
        if not module.training and module.track_running_stats:
            return type(module).forward(module, inp)
        dims = [0] + list(range(2, inp.dim()))
        clean = inp[:clean_rows]
        var, mean = torch.var_mean(clean, dim=dims, unbiased=False)
        if module.training and module.track_running_stats and module.running_mean is not None:
            with torch.no_grad():
                module.num_batches_tracked.add_(1)
                factor = module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
                count = clean.numel() / clean.shape[1]
                unbiased = var * (count / max(count - 1, 1))
                module.running_mean.mul_(1 - factor).add_(factor * mean)
                module.running_var.mul_(1 - factor).add_(factor * unbiased)
        # Fold normalisation and affine into one per-channel scale and shift (tiny tensors), so
        # the large activation is touched by a single fused multiply-add.
        shape = [1, -1] + [1] * (inp.dim() - 2)
        scale = torch.rsqrt(var + module.eps)
        if module.affine:
            scale = scale * module.weight
        shift = -mean * scale
        if module.affine:
            shift = shift + module.bias
        return torch.addcmul(shift.view(shape), inp, scale.view(shape))

    return forward


@contextlib.contextmanager
def clean_row_batchnorm(model: nn.Module, clean_rows: int) -> Iterator[None]:
    """Within the block, BN layers take their batch statistics from the first ``clean_rows`` rows."""
    patched = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in patched:
        m.forward = _clean_stats_bn_forward(m, clean_rows)  # instance attribute shadows the class method
    try:
        yield
    finally:
        for m in patched:
            del m.forward


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks storing each named module's output in the yielded dict.

    A module that runs more than once per forward pass (a reused ReLU, a shared block) has no
    single activation per input, and one whose output is not a tensor cannot be measured:
    both are ConfigErrors naming the layer, so a bad hook point never silently measures
    something else.
    """
    store: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        def hook(_m, _inp, out, name=name):
            if name in store:
                raise ConfigError(f"nsloss: layer '{name}' runs more than once per forward pass; choose other --layers")
            if not isinstance(out, Tensor):
                raise ConfigError(f"nsloss: layer '{name}' does not output a tensor; choose other --layers")
            store[name] = out
        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class NsLossParams:
    """``xairobust train --method nsloss --lam 1 --eps-ns 0.5 --perturbations 5``."""

    lam: float = 1.0  # weight of NsLoss (paper: 100 PreResNet10, 9.5 VGG19; pick with `tune-lambda`)
    eps_ns: float = 1.0  # L2 radius of the perturbation sphere, in the model's input space
    perturbations: int = 5  # N, perturbations per sample (paper: 5)
    layers: list[str] = field(default_factory=list)  # glob patterns of module names; [] = every conv/linear
    granularity: Literal["element", "channel"] = "element"

    def __post_init__(self) -> None:
        require(self.lam >= 0, f"nsloss: --lam must be >= 0, got {self.lam}")
        require(self.eps_ns > 0, f"nsloss: --eps-ns must be > 0, got {self.eps_ns}")
        require(self.perturbations >= 1, f"nsloss: --perturbations must be >= 1, got {self.perturbations}")
        require(
            self.granularity in ("element", "channel"),
            f"nsloss: --granularity must be element or channel, got '{self.granularity}'",
        )


@METHODS.register("nsloss", label="NsLoss")
class NsLoss(TrainingMethod):
    """Task loss on the clean rows + lam * NsLoss over the measured layers."""

    Params = NsLossParams

    def __init__(self, params: NsLossParams) -> None:
        super().__init__(params)
        self.layer_names: list[str] = []

    def prepare(self, model: nn.Module, ctx: TrainContext) -> None:
        self.layer_names = select_layers(model, self.params.layers)

    def regulariser(self, model: nn.Module, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, dict[str, float]]:
        """(clean outputs, NsLoss, logs) from one forward pass over [x, x + delta_1..N]."""
        p = self.params
        if not self.layer_names:
            self.layer_names = select_layers(model, p.layers)
        batch = x.shape[0]
        delta = sphere_perturbations(x, p.perturbations, p.eps_ns, generator)
        rows = torch.cat([x, (x.unsqueeze(0) + delta).flatten(0, 1)])
        with capture_outputs(model, self.layer_names) as acts, clean_row_batchnorm(model, batch):
            out = model(rows)
        total = out.new_zeros(())
        ns_sum, ns_count = 0.0, 0
        missing = [n for n in self.layer_names if n not in acts]
        if missing:
            raise ConfigError(f"nsloss: layer(s) {', '.join(missing)} never ran in the forward pass; choose other --layers")
        for name in self.layer_names:
            term, md, ma = layer_terms(acts[name], batch, p.perturbations, p.eps_ns, p.granularity)
            total = total + term
            with torch.no_grad():  # NS for logging only, over live neurons
                live = ma > 1e-8
                ns = md[live] / (p.eps_ns * md.numel() * ma[live])
                ns_sum += float(ns.sum())
                ns_count += int(live.sum())
        logs = {"nsloss": float(total.detach()), "mean_ns": ns_sum / max(ns_count, 1)}
        return out.split([batch, out.shape[0] - batch])[0], total, logs

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        out, ns, logs = self.regulariser(model, x, ctx.generator)
        task = ctx.criterion(out, y)
        loss = task + self.params.lam * ns
        return loss, {"task_loss": float(task.detach()), **logs}

    def describe(self) -> dict[str, Any]:
        return {
            "layers_resolved": list(self.layer_names),
            "batchnorm": "batch statistics from the clean rows only; perturbed rows normalised with them",
            "perturbation": "uniform on the L2 sphere of radius eps_ns, per sample and perturbation",
            "loss_form": "sum_layers mean_neurons MD / eps_ns (= sum NS*MA, no division by MA)",
            "granularity_note": "channel = spatial mean of each channel is the neuron" if self.params.granularity == "channel" else "element",
        }


def nsloss_value(model: nn.Module, x: Tensor, params: NsLossParams, generator: torch.Generator | None = None) -> float:
    """NsLoss of ``model`` on batch ``x`` (no gradient): used by the lambda-selection protocol."""
    method = NsLoss(params)
    with torch.no_grad():
        _, ns, _ = method.regulariser(model, x, generator)
    return float(ns)

