"""The attack radius and the step rule are defined once and every budget uses them."""

from xairobust.manipulate.attacks import AttackSettings
from xairobust.perturb import DEFAULT_EPS, default_step_size
from xairobust.stages.attack import AttackConfig
from xairobust.stages.manipulate import ManipulateConfig
from xairobust.training.pgd import PGDParams


def test_default_eps_is_8_over_255_everywhere():
    assert DEFAULT_EPS == 8 / 255
    for budget in (AttackSettings(), AttackConfig(), ManipulateConfig(), PGDParams()):
        assert budget.eps == DEFAULT_EPS, type(budget).__name__


def test_step_rule_is_madry_and_bit_identical():
    # The expression the three budgets used before; equality is exact, not approximate.
    for eps, steps in ((8 / 255, 10), (0.5, 7), (0.0, 3)):
        assert default_step_size(eps, steps) == 2.5 * eps / steps
    for budget in (AttackSettings(steps=7), AttackConfig(steps=7)):
        assert budget.resolved_step_size() == 2.5 * budget.eps / 7
