from dataclasses import dataclass, field
from typing import Literal

import pytest

from xairobust.config import build, load_yaml, require
from xairobust.errors import ConfigError


@dataclass
class Example:
    eps: float = 0.5
    steps: int = 10
    norm: Literal["l2", "linf"] = "linf"
    layers: list[str] = field(default_factory=list)
    flag: bool = False
    name: str | None = None

    def __post_init__(self):
        require(self.eps > 0, f"--eps must be > 0, got {self.eps}")


def test_strings_from_the_cli_are_coerced():
    ex = build(Example, {"eps": "8/255", "steps": "7", "norm": "l2", "layers": "conv1, fc", "flag": "true",
                         "name": "none"}, "t")
    assert ex.eps == pytest.approx(8 / 255)
    assert ex.steps == 7 and ex.norm == "l2" and ex.layers == ["conv1", "fc"] and ex.flag is True
    assert ex.name is None


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"epss": 1}, r"unknown key 'epss'\. Did you mean 'eps'\?"),
        ({"steps": "2.5"}, r"--steps must be an integer"),
        ({"norm": "l3"}, r"'norm' must be one of l2, linf"),
        ({"eps": 0}, r"--eps must be > 0"),
        ({"flag": "maybe"}, r"'flag' must be true or false"),
    ],
)
def test_bad_values_name_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        build(Example, mapping, "t")


def test_load_yaml_reports_syntax_errors_with_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML \(line \d+\)"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_pick_device_names_the_option_and_refuses_missing_cuda():
    import torch

    from xairobust.devices import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"unknown --device 'tpu9'"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            pick_device("cuda")
