import pytest

from xairobust.errors import ConfigError
from xairobust.registry import DATASETS, EXPLAINERS, METHODS, METRICS, MODELS, Registry, did_you_mean


def test_register_get_list_and_meta():
    reg: Registry = Registry("widget")

    @reg.register("alpha", colour="red")
    def alpha():
        return 1

    assert reg.names() == ["alpha"]
    assert reg.get("alpha") is alpha
    assert reg.meta("alpha") == {"colour": "red"}
    assert "alpha" in reg


def test_unknown_name_suggests_the_closest():
    reg: Registry = Registry("widget")
    reg.register("gradient_shap")(object)
    with pytest.raises(ConfigError, match=r"unknown widget 'gradient_shp'\. Did you mean 'gradient_shap'\?"):
        reg.get("gradient_shp")


def test_double_registration_of_another_object_is_refused():
    reg: Registry = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(float)


def test_did_you_mean_is_empty_when_nothing_is_close():
    assert did_you_mean("zzzz", ["standard", "pgd"]) == ""


def test_core_registries_hold_the_foundation_entries():
    assert "digits" in DATASETS
    assert {"digits_cnn", "tiny_mlp"} <= set(MODELS.names())
    assert "standard" in METHODS
    # Explainers and metrics are registered by their packages; the registries must load them.
    assert isinstance(EXPLAINERS.names(), list) and isinstance(METRICS.names(), list)
