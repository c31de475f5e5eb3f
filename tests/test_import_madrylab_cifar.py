"""MadryLab CIFAR-10 checkpoints (issue 21 item 4), checked against the `robustness` package's own
classes: ``robustness.cifar_models.ResNet18/ResNet50`` and ``robustness.tools.helpers.InputNormalize``
(clamp to [0, 1], then normalise). `robustness` is a test reference only (``pip install --no-deps
robustness``); without it these tests skip.

A checkpoint is laid out as ``robustness.train`` saves it: ``{'model': DataParallel(AttackerModel)
.state_dict(), 'epoch': ...}`` -- ``module.normalizer.new_mean/new_std``, ``module.model.*`` (with
``shortcut.N`` / ``linear`` keys) and the attacker's copies.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch
from test_import import imported, randomise_bn
from torch import nn

MEAN = torch.tensor([0.4914, 0.4822, 0.4465])
STD = torch.tensor([0.2023, 0.1994, 0.2010])


def _input_normalize():
    """robustness' InputNormalize class, compiled from its installed source (its module imports
    cox and more at import time; the class itself needs only torch)."""
    spec = importlib.util.find_spec("robustness")
    source = Path(spec.origin).parent / "tools" / "helpers.py"
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InputNormalize")
    namespace = {"ch": torch}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102
    return namespace["InputNormalize"]


class Madry(nn.Module):
    """AttackerModel's inference path: model(normalizer(x))."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.normalizer = _input_normalize()(MEAN, STD)
        self.model = net

    def forward(self, x):
        return self.model(self.normalizer(x))


def _checkpoint(net: nn.Module, path: Path) -> Madry:
    ref = Madry(net).eval()
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    sd.update({f"module.attacker.model.{k}": v.clone() for k, v in net.state_dict().items()})
    sd.update({"module.attacker.normalize.new_mean": ref.normalizer.new_mean.clone(),
               "module.attacker.normalize.new_std": ref.normalizer.new_std.clone()})
    torch.save({"model": sd, "epoch": 150, "schedule": None}, path)
    return ref


@pytest.mark.parametrize(("arch", "ours"), [("ResNet18", "resnet18_cifar"), ("ResNet50", "resnet50_cifar")])
def test_madrylab_cifar_resnet_imports_with_the_original_outputs_and_its_clamp(arch, ours, tmp_path):
    cifar_models = pytest.importorskip("robustness.cifar_models", reason="robustness is a test reference only")
    torch.manual_seed(11)
    net = randomise_bn(getattr(cifar_models, arch)(num_classes=10))
    assert any(".shortcut.0." in k for k in net.state_dict()) and "linear.weight" in net.state_dict()
    ref = _checkpoint(net, tmp_path / f"cifar_{arch}_linf_8.pt")
    model, meta = imported(tmp_path, tmp_path / f"cifar_{arch}_linf_8.pt", model=ours, dataset="cifar10")
    assert meta["source"]["format"] == "madrylab"
    assert meta["normalisation"]["clamp"] == [0.0, 1.0] and meta["model"]["kwargs"]["clamp"] == [0.0, 1.0]
    assert meta["mapping"]["renamed"]["fc.weight"] == "module.model.linear.weight"
    assert meta["mapping"]["renamed"]["layer2.0.downsample.1.running_var"] == "module.model.layer2.0.shortcut.1.running_var"
    inside = torch.rand(3, 3, 32, 32)
    outside = torch.rand(3, 3, 32, 32) * 1.6 - 0.3  # e.g. SmoothGrad's noisy copies
    with torch.no_grad():
        for x in (inside, outside):
            torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
        # the clamp matters: the same network without it gives other outputs off the range
        model.normalize.clamp = None
        assert not torch.allclose(model(outside), ref(outside), rtol=1e-3, atol=1e-3)


def test_resnet50_cifar_is_robustness_resnet50_key_for_key_and_shape_for_shape():
    cifar_models = pytest.importorskip("robustness.cifar_models", reason="robustness is a test reference only")
    from xairobust.models.base import create_model

    with torch.device("meta"):
        theirs = cifar_models.ResNet50(num_classes=10).state_dict()
        mine = create_model("resnet50_cifar").net.state_dict()
    renamed = {k.replace(".shortcut.", ".downsample.").replace("linear.", "fc.") if k.startswith(("layer", "linear")) else k: v
               for k, v in theirs.items()}
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in mine.items()}
