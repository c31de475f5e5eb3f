"""The import docs' normalisation presets checked against RobustBench's own model definitions.

For every RobustBench entry that docs/import.md names in its preset table, the entry's model
class is built from the installed ``robustbench`` package (a test reference only: ``pip install
robustbench``; skipped without it) and the normalisation it applies is *measured*: the input that
reaches its first convolution for a random [0, 1] image must equal ``(x - mean) / std`` of the
documented preset (Andriushchenko2020Understanding: identity, not cifar10 -- issue 21).

robustbench imports a few packages at module level that its model classes do not use (gdown,
geotorch, autoattack, ...); when they are absent they are replaced by inert stand-ins while it
is imported, so only its architectures run.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from xairobust.importers.base import PRESETS

DOC = Path(__file__).resolve().parents[1] / "docs" / "import.md"
ENTRY = re.compile(r"\b([A-Z][A-Za-z]+20\d\d[A-Z][A-Za-z]*|Standard)\b")
UNUSED = ("geotorch", "torchdiffeq", "gdown", "requests", "jmespath", "autoattack", "pkg_resources")


def documented() -> dict[str, str]:
    """{RobustBench entry: preset} from the preset table of docs/import.md."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `(\w+)` \|[^|]*\|[^|]*\| (.*) \|$", line)
        if m and m.group(1) in PRESETS:
            for name in ENTRY.findall(m.group(2)):
                out[name] = m.group(1)
    return out


DOCUMENTED = documented()


class _Inert(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return _Inert(self.__name__)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, missing: set[str]) -> None:
        self.missing = missing

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.missing:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Inert(spec.name)

    def exec_module(self, module):
        pass


@pytest.fixture(scope="module")
def robustbench_models():
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench is a test reference only: pip install robustbench")
    finder = _Finder({m for m in UNUSED if importlib.util.find_spec(m) is None})
    sys.meta_path.insert(0, finder)
    try:
        from robustbench.model_zoo.cifar10 import cifar_10_models
        from robustbench.model_zoo.enums import ThreatModel
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n, m in sys.modules.items() if isinstance(m, _Inert)]:
            del sys.modules[name]  # later tests import the real packages (or fail as they would)
    return cifar_10_models, ThreatModel


def test_the_docs_name_robustbench_entries_for_every_normalising_preset():
    assert DOCUMENTED["Andriushchenko2020Understanding"] == "identity"
    assert {"identity", "cifar10", "half"} <= set(DOCUMENTED.values())


def _first_conv_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    handle = conv.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("entry", sorted(DOCUMENTED))
def test_the_documented_preset_is_what_robustbench_applies(entry, robustbench_models):
    models, tm = robustbench_models
    # The smallest architecture under that name (Rice2020Overfitting: the L2 PreActResNet-18,
    # not the Linf WRN-34-20; both classes hold the same mu/sigma).
    found = [models[t][entry] for t in (tm.L2, tm.Linf, tm.corruptions) if entry in models.get(t, {})]
    assert found, f"{entry} is not a RobustBench CIFAR-10 entry"
    torch.manual_seed(0)
    model = found[0]["model"]()
    x = torch.rand(1, 3, 32, 32)
    mean, std = PRESETS[DOCUMENTED[entry]]
    mean = torch.tensor(mean * (3 if len(mean) == 1 else 1)).view(1, 3, 1, 1)
    std = torch.tensor(std * (3 if len(std) == 1 else 1)).view(1, 3, 1, 1)
    torch.testing.assert_close(_first_conv_input(model, x), (x - mean) / std, rtol=1e-5, atol=1e-6)
