"""AutoAttack (Croce & Hein 2020, standard version) and each of its four sub-attacks through ``pyautoattack``.

``pyautoattack`` packages the reference implementation (APGD-CE, APGD-T, FAB-T, Square) and
runs offline on CPU. We chose it over torchattacks' copy, which pins ``requests~=2.25.1`` and
would downgrade requests in the user's environment.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import Tensor, nn

from xairobust.errors import ConfigError
from xairobust.perturb import Norm, eval_mode
from xairobust.registry import ATTACKS

_NORM_NAMES = {"linf": "Linf", "l2": "L2"}


def _load():
    try:
        from pyautoattack import AutoAttack
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ConfigError(
            "attack: AutoAttack needs the 'pyautoattack' package (pip install pyautoattack);"
            " or pass --no-autoattack"
        ) from None
    return AutoAttack


def check_applicable(
    input_shape: tuple[int, ...], norm: Norm, value_range: tuple[float, float] | None, num_classes: int
) -> None:
    """Raise a ConfigError (suggesting --no-autoattack) where the reference implementation cannot run.

    It clamps to [0, 1]; its Square attack needs (C, H, W) images, and under L2 at least 5 x 5
    pixels (it tiles the image in 5 x 5 windows).
    """
    fix = "; pass --no-autoattack (PGD still runs)"
    if value_range is None or tuple(value_range) != (0.0, 1.0):
        raise ConfigError(f"attack: AutoAttack assumes inputs in [0, 1], but this dataset's range is {value_range}{fix}")
    if num_classes < 2:
        raise ConfigError(f"attack: AutoAttack needs a classifier with at least 2 classes{fix}")
    if len(input_shape) != 3:
        raise ConfigError(f"attack: AutoAttack needs image inputs (C, H, W), got shape {input_shape}{fix}")
    if norm == "l2" and min(input_shape[1:]) < 5:
        raise ConfigError(f"attack: AutoAttack under L2 needs images of at least 5 x 5 pixels, got {input_shape}{fix}")


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Norm,
    eps: float,
    num_classes: int,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Adversarial inputs from AutoAttack's standard version; returns ``x_adv`` (same shape as x).

    The reference implementation clamps to [0, 1], so it only applies to inputs in that range.
    Targeted sub-attacks use ``min(9, num_classes - 1)`` target classes (9 is the standard
    setting for >= 10 classes; fewer classes have fewer possible targets).
    """
    return _run(model, x, y, norm=norm, eps=eps, num_classes=num_classes, value_range=value_range, seed=seed,
                batch_size=batch_size, device=device, only=None)


def _run(model: nn.Module, x: Tensor, y: Tensor, *, norm: Norm, eps: float, num_classes: int,
         value_range: tuple[float, float] | None = (0.0, 1.0), seed: int = 0, batch_size: int = 250,
         device: torch.device | str = "cpu", only: str | None) -> Tensor:
    """The standard version, or only its sub-attack ``only`` with the standard version's settings."""
    check_applicable(tuple(x.shape[1:]), norm, value_range, num_classes)
    AutoAttack = _load()
    adversary = AutoAttack(model, norm=_NORM_NAMES[norm], eps=eps, version="standard", seed=seed, device=device)
    adversary.verbose = False
    adversary.logger.setLevel(logging.WARNING)
    targets = min(9, num_classes - 1)
    adversary.apgd_targeted.n_target_classes = targets
    adversary.fab.n_target_classes = targets
    if only is not None:
        adversary.attacks_to_run = [only]
    with eval_mode(model):
        x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    return x_adv.detach()


# ``applicable``: what the attack stage checks before it attacks anything (a one-line refusal up
# front instead of a failure after minutes of PGD).
autoattack.applicable = check_applicable  # type: ignore[attr-defined]
ATTACKS.register("autoattack", label="AutoAttack", norms=tuple(_NORM_NAMES), task="classification")(autoattack)

# The standard version's four sub-attacks, each a registered attack of its own (``xairobust attack
# --attack apgd-ce``), run with exactly the settings they have inside the standard version.
COMPONENTS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


def _component(name: str):
    def run(model: nn.Module, x: Tensor, y: Tensor, **kwargs: object) -> Tensor:
        return _run(model, x, y, only=name, **kwargs)  # type: ignore[arg-type]

    # The attack stage passes the keywords a registered attack's signature names: the standard
    # version's, so a sub-attack is called exactly as the whole is.
    run.__signature__ = inspect.signature(autoattack)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = name.replace("-", "_")
    run.__doc__ = f"AutoAttack's {COMPONENTS[name]} alone, with the standard version's settings for it."
    run.applicable = check_applicable  # type: ignore[attr-defined]
    return run


for _name, _label in COMPONENTS.items():
    ATTACKS.register(_name, label=f"{_label} (AutoAttack)", norms=tuple(_NORM_NAMES), task="classification")(
        _component(_name))
