"""The paper configs build valid training configs with registered datasets, models and methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from xairobust import config as cfg
from xairobust.registry import DATASETS, METHODS, MODELS
from xairobust.stages.train import TrainConfig, build_method

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml"))
PAPER = [p for p in CONFIGS if p.parent.name in ("cifar10", "imagenette")]


def test_the_issue_configs_exist():
    names = {f"{p.parent.name}/{p.stem}" for p in PAPER}
    expected = {"cifar10/resnet18_standard", "cifar10/resnet18_pgd_l2"}
    expected |= {f"cifar10/cpu_{m}" for m in ("standard", "pgd", "jacobian", "nsloss")}
    expected |= {f"imagenette/{a}_{m}" for a in ("preresnet10", "vgg19") for m in ("standard", "nsloss", "jacobian", "pgd")}
    assert expected <= names


@pytest.mark.parametrize("path", PAPER, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_is_valid(path):
    conf = cfg.build(TrainConfig, cfg.load_yaml(path), str(path))
    assert conf.dataset in DATASETS and conf.model in MODELS
    if conf.method not in METHODS:
        pytest.skip(f"method '{conf.method}' is not implemented on this branch yet")
    build_method(conf.method, conf.method_params)  # validates the hyper-parameter names and ranges


def test_robust_configs_start_from_their_standard_run():
    for path in PAPER:
        data = cfg.load_yaml(path)
        if path.parent.name == "imagenette" or path.stem.startswith("cpu_"):
            standard = path.with_name(path.stem.rsplit("_", 1)[0] + "_standard.yaml")
            if data["method"] != "standard":
                assert data["init"] == cfg.load_yaml(standard)["out"], path
