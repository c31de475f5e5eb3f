"""The batch runner with the real stages on a tiny digits zoo, and the Ray executor vs the local one."""

from __future__ import annotations

import os

import pytest
import yaml
from batch_util import check_files_whole, fingerprint
from rich.console import Console

from xairobust.batch.runner import BatchOptions, run_batch


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))  # noqa: SIM115


def real_zoo(tmp_path):
    """standard vs pgd on digits, 2 seeds, real attack/explain/score/report at toy sizes."""
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({
        "name": "real",
        "datasets": ["digits"],
        "models": [{"name": "digits_cnn", "kwargs": {"width": 4}}],
        "methods": [{"name": "standard", "label": "Standard"},
                    {"name": "pgd", "label": "PGD", "params": {"eps": 0.1, "steps": 2}}],
        "seeds": 2,
        "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        "attack": {"eps": 0.1, "steps": 2, "autoattack": False, "n": 32, "device": "cpu"},
        "explain": {"n": 8, "device": "cpu"},
        "explainers": [{"name": "ig", "params": {"n_steps": 8}}],
        "score": {"metrics": "complexity,sparseness", "device": "cpu"},
        "report": {"figures": False},
    }, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def real_local(tmp_path_factory):
    """The real zoo run once with the local executor: (zoo file, root, result)."""
    tmp = tmp_path_factory.mktemp("real")
    zoo = real_zoo(tmp)
    root = tmp / "local"
    return zoo, root, run_batch(zoo, BatchOptions(root=str(root), workers=2, quiet=True), out=quiet())


@pytest.mark.slow
def test_real_stages_end_to_end_and_resume(real_local):
    zoo, root, first = real_local
    failed = {j: o.error for j, o in first.outcomes.items() if o.status != "done"}
    assert first.ok, failed
    report = root / "results/real/digits_digits_cnn"
    assert first.report_dirs() == [report]
    csv = (report / "table.csv").read_text()
    assert "Standard" in csv and "PGD" in csv
    assert (report / "table.tex").read_text().count("\\toprule") >= 1
    for run in (root / "runs/real").iterdir():
        if run.is_dir():
            for name in ("run.json", "robustness.json", "attributions/ig.safetensors", "scores/ig.csv"):
                assert (run / name).is_file(), run / name
    assert check_files_whole(root) == []
    files = [p for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and p.suffix != ".lock"]
    before = fingerprint(files)
    again = run_batch(zoo, BatchOptions(root=str(root), workers=2, quiet=True), out=quiet())
    assert again.ok and again.count("cached") == len(again.plan.jobs)
    assert fingerprint(files) == before


@pytest.mark.slow
def test_ray_executor_gives_the_same_tables_as_local(real_local, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    zoo, local_root, local = real_local
    try:
        on_ray = run_batch(zoo, BatchOptions(root=str(tmp_path / "ray"), executor="ray", workers=2, quiet=True),
                           out=quiet())
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert local.ok and on_ray.ok, {j: o.error for j, o in on_ray.outcomes.items() if o.status != "done"}
    assert "ray" in on_ray.executor and "2 CPUs" in on_ray.executor
    assert on_ray.count("done") == len(on_ray.plan.jobs)  # all ran on Ray, nothing reused
    report = "results/real/digits_digits_cnn"
    for name in ("table.csv", "table.md", "table.tex", "stats.csv"):
        assert (tmp_path / "ray" / report / name).read_bytes() == (local_root / report / name).read_bytes(), name
    for f in (local_root / "runs").rglob("*.safetensors"):
        assert (tmp_path / "ray" / f.relative_to(local_root)).read_bytes() == f.read_bytes()
    for f in (local_root / "runs").rglob("scores/*.csv"):
        assert (tmp_path / "ray" / f.relative_to(local_root)).read_bytes() == f.read_bytes()
