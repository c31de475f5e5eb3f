"""The pieces every visualisation shares: L2-projected gradient descent (a wrapper of the one
perturbation core, ``xairobust.perturb``) and the representation hook. The model is kept in
evaluation mode with frozen parameters by ``xairobust.perturb.eval_mode(model, freeze=True)``.

All of it works in the model's input space (pixels in [0, 1] for images; the Normalize layer is
inside the model), batched over images, on whatever device the model and inputs are on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from xairobust.errors import ConfigError
from xairobust.perturb import ThreatModel, eval_mode, project, projected_ascent

# A per-sample objective: inputs (N, ...) -> (N,) values.
Objective = Callable[[Tensor], Tensor]


def project_l2(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    """The point of the L2 ball of radius ``eps`` around each ``x0`` closest to ``x`` (per sample)."""
    return x0 + project(x - x0, "l2", eps)


def l2_pgd(
    objective: Objective,
    x0: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    value_range: tuple[float, float] | None,
    maximize: bool,
    on_step: Callable[[int, Tensor], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> Tensor:
    """``steps`` steps of L2 projected gradient descent (or ascent) on ``objective``, from ``x0``.

    The loop is :func:`xairobust.perturb.projected_ascent` (the one PGD uses) under an L2
    ``ThreatModel``: each step moves every sample by ``step_size`` along its own normalised
    gradient (the L2 steepest-descent direction, as in Madry et al.'s L2 PGD and the paper's
    eqs. 4 and 13-16), then projects onto the L2 ball of radius ``eps`` around that sample's
    start and clamps to ``value_range``. ``x0`` must lie in ``value_range``: clamping then moves
    every coordinate towards ``x0``, so the clamped point stays in the ball. A sample whose
    gradient is zero does not move. ``on_step(t, x)`` sees every iterate (the tests check the
    projection with it). Gradients are taken with respect to the input only; model parameters
    get no ``.grad``.
    """
    threat = ThreatModel("l2", eps, step_size, value_range, steps)
    return pgd_from(objective, x0, threat, maximize=maximize, on_step=on_step, advance=advance)


def pgd_from(
    objective: Objective,
    x0: Tensor,
    threat: ThreatModel,
    *,
    maximize: bool,
    on_step: Callable[[int, Tensor], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> Tensor:
    """:func:`l2_pgd` under a :class:`~xairobust.perturb.ThreatModel` (the visualisations' budget)."""
    if threat.value_range is not None:
        lo, hi = threat.value_range
        if bool((x0 < lo).any()) or bool((x0 > hi).any()):
            raise ValueError("l2_pgd: the start x0 must lie in value_range")
    x0 = x0.detach()

    def each_step(t: int, delta: Tensor) -> None:
        if on_step is not None:
            on_step(t, x0 + delta)
        if advance is not None:
            advance(x0.shape[0])

    return projected_ascent(objective, x0, threat, maximize=maximize, on_step=each_step)


def final_linear_name(model: nn.Module, example: Tensor) -> str:
    """Name of the last ``nn.Linear`` the forward pass calls (the classifier head)."""
    names = {m: n for n, m in model.named_modules()}
    called: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, _inp: called.append(names[mod]))
               for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad(), eval_mode(model, freeze=True):
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not called:
        raise ConfigError("visualize: the model has no nn.Linear layer to take the representation from; give --layer NAME")
    return called[-1]


class Representation:
    """R(x): the input of the final linear layer (default) or the output of module ``layer``.

    Call it on a batch to get ``(R(x) flattened to (N, D), logits)``; one forward pass gives both.
    ``describe`` says what was taken, for the output's metadata.
    """

    def __init__(self, model: nn.Module, example: Tensor, layer: str | None = None) -> None:
        self.model = model
        modules = dict(model.named_modules())
        if layer:
            if layer not in modules:
                from xairobust.registry import did_you_mean

                known = [n for n in modules if n]
                raise ConfigError(
                    f"visualize: --layer '{layer}' is not a module of the model.{did_you_mean(layer, known)}"
                    f" Modules: {', '.join(known[:40])}{' ...' if len(known) > 40 else ''}"
                )
            self.name, self.where = layer, "output"
        else:
            self.name, self.where = final_linear_name(model, example), "input"
        self.module = modules[self.name]
        self._captured: Tensor | None = None

    @property
    def describe(self) -> str:
        return f"{self.where} of {self.name}"

    def _pre(self, _mod: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self._captured = inputs[0]

    def _post(self, _mod: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._captured = output

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.where == "input":
            handle = self.module.register_forward_pre_hook(self._pre)
        else:
            handle = self.module.register_forward_hook(self._post)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        rep, self._captured = self._captured, None
        if rep is None:
            raise ConfigError(f"visualize: module '{self.name}' was not called in the forward pass; pick another --layer")
        return rep.flatten(1).float(), logits  # float: a bf16 model's activation (a no-op in fp32)

    def units(self, x: Tensor) -> Tensor:
        """One activation per unit: feature-map layers (N, C, H, W) are averaged over space, so a
        unit is a channel; flat layers are returned as they are."""
        if self.where == "input":
            return self(x)[0]
        handle = self.module.register_forward_hook(self._post)
        try:
            self.model(x)
        finally:
            handle.remove()
        rep, self._captured = self._captured, None
        assert rep is not None
        return rep.flatten(2).mean(2) if rep.dim() > 2 else rep.flatten(1)


def batched(n: int, batch_size: int) -> Iterator[slice]:
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))
