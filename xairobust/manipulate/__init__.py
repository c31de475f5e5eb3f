"""Explanation manipulation: input attacks (Ghorbani et al. 2019, Dombrowski et al. 2019), the
softplus copy they differentiate through, and the similarity measures (see docs/manipulation.md).
Model manipulation (Heo et al. 2019) is the training method ``fool`` (xairobust/training/fool.py)."""

from xairobust.manipulate.attacks import MANIPULATIONS, AttackSettings, manipulate_batch
from xairobust.manipulate.measures import MEASURES, Pair, compute_measures, to_map
from xairobust.manipulate.smooth import SoftplusCopy, softplus_copy

__all__ = [
    "MANIPULATIONS", "MEASURES", "AttackSettings", "Pair", "SoftplusCopy", "compute_measures",
    "manipulate_batch", "softplus_copy", "to_map",
]
