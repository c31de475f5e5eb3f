"""`xairobust data check`: every registered dataset, where it looked, found or the fix."""

from __future__ import annotations

from click.testing import CliRunner
from test_data_cifar10 import write_fake_cifar

from xairobust.cli import main
from xairobust.registry import DATASETS


def test_check_lists_every_dataset_with_status_and_fix(tmp_path):
    write_fake_cifar(tmp_path, per_batch=4)
    result = CliRunner().invoke(main, ["data", "check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in DATASETS.names():
        assert any(line.startswith(name + " ") for line in lines), name
    cifar = next(i for i, line in enumerate(lines) if line.startswith("cifar10 "))
    assert " ok " in lines[cifar] and lines[cifar + 1].strip() == "train: 20, test: 4"
    inet = next(i for i, line in enumerate(lines) if line.startswith("imagenette "))
    assert "MISSING" in lines[inet] and "xairobust data download imagenette" in lines[inet + 1]


def test_check_of_a_named_missing_dataset_fails(tmp_path):
    result = CliRunner().invoke(main, ["data", "check", "--data-dir", str(tmp_path), "cifar10"])
    assert result.exit_code == 1
    assert str(tmp_path / "cifar-10-batches-py") in result.output
