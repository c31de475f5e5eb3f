"""Shared perturbation constants (first step of issue #17 item 3).

The default attack radius and the PGD step-size rule are defined only here, so a
change to either one reaches training, the evaluation attack and the manipulation
attacks at once."""

from __future__ import annotations

# The CIFAR-10 L-inf radius used by Madry et al. 2018 and most robustness papers.
DEFAULT_EPS: float = 8 / 255


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule of 2.5 * eps / steps, so the iterates can cross the ball from a random start."""
    return 2.5 * eps / steps
