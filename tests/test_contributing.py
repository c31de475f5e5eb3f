"""docs/contributing.md: every worked example is run here, so the guide cannot rot (issue 17 item 7).

Each ``<!-- example: NAME -->`` block of the guide is executed as a module with the registries
snapshotted and restored afterwards (the examples register real entries), then checked against
an independent computation.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from xairobust.registry import ATTACKS, EXPLAINERS, METRICS
from xairobust.report.sections import SECTIONS
from xairobust.stages.contract import STAGES, StaleError, verify_chain

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "contributing.md"
BLOCK = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    return dict(BLOCK.findall(GUIDE.read_text()))


@pytest.fixture
def example(monkeypatch):
    """Run one guide block; the entries it registers are removed again afterwards."""
    import batch_stages  # noqa: F401 - the batch tests' stub stages stay registered after the restore
    for reg in (STAGES, ATTACKS, EXPLAINERS, METRICS, SECTIONS):
        reg.names()  # load the real entries first
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_meta", dict(reg._meta))

    def run(name: str) -> types.ModuleType:
        mod = types.ModuleType(f"guide_{name}")
        monkeypatch.setitem(sys.modules, mod.__name__, mod)  # dataclasses look their module up
        exec(compile(examples()[name], f"{GUIDE}:{name}", "exec"), mod.__dict__)
        return mod

    return run


def test_the_guide_has_every_example():
    assert set(examples()) == {"stage", "attack", "explainer", "metric", "section"}


def test_stage_example(example, digits_run, tmp_path):
    import shutil

    from batch_util import tiny_zoo

    from xairobust.batch.plan import build_plan
    from xairobust.batch.zoo import load_zoo
    from xairobust.runs import WEIGHTS, load_tensors

    mod = example("stage")
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    stage, conf = mod.WeightNormStage(), mod.WeightNormConfig(p=1.0)
    doc_path = stage.run(run, conf, quiet=True)
    assert doc_path == run / "weight_norm.json"
    expect = sum(float(t.double().abs().sum()) for t in load_tensors(run / WEIGHTS).values())
    doc = verify_chain(doc_path, run, stage.hint(run, conf))
    assert doc["norm"] == pytest.approx(expect, rel=1e-12)
    assert stage.is_current(run, conf) and stage.is_current(run, mod.WeightNormConfig(p=1.0, device="cpu"))
    assert not stage.is_current(run, mod.WeightNormConfig(p=2.0))
    before = doc_path.stat().st_mtime_ns
    stage.run(run, conf, quiet=True)  # current: nothing is recomputed
    assert doc_path.stat().st_mtime_ns == before
    weights = run / WEIGHTS
    weights.write_bytes(weights.read_bytes() + b" ")  # other weights: the document is stale
    assert not stage.is_current(run, conf)
    with pytest.raises(StaleError, match="weight_norm.json is stale"):
        verify_chain(doc_path, run, stage.hint(run, conf))
    # A zoo key of the stage's name plans one job per run, after train.
    (tmp_path / "zoo").mkdir()
    path = tiny_zoo(tmp_path / "zoo")
    data = yaml.safe_load(path.read_text())
    data["weight-norm"] = {"p": 1}
    path.write_text(yaml.safe_dump(data))
    plan, _ = build_plan(load_zoo(path))
    jobs = [j for j in plan.jobs if j.name == "weight-norm"]
    trains = [j for j in plan.jobs if j.stage == "train"]
    assert len(jobs) == len(trains) and {j.deps[0] for j in jobs} == {t.id for t in trains}


def test_attack_example(example, digits_run, tmp_path):
    import shutil

    from xairobust.runs import load_run
    from xairobust.stages.attack import AttackConfig, attack

    example("attack")  # registers the example attack
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    doc = __import__("json").loads(attack(run, AttackConfig(attack="fgsm-example", eps=0.1, n=64, device="cpu"),
                                          quiet=True).read_text())
    (entry,) = [e for e in doc["results"] if e["attack"] == "fgsm-example"]
    # independent: FGSM written out on the same 64 test images
    from xairobust.data.base import get_dataset

    model, meta = load_run(run)
    test = get_dataset(meta["dataset"]["name"], "test")
    idx = torch.arange(64)
    x, y = test.inputs(idx), test.targets(idx)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), x)
    adv = (x + 0.1 * g.sign()).clamp(*test.info.value_range).detach()
    with torch.no_grad():
        expect = float((model(adv).argmax(1) == y).float().mean())
    assert entry["robust_accuracy"] == pytest.approx(expect, abs=1e-12)


def test_explainer_example(example, digits_run):
    from xairobust.runs import load_run
    from xairobust.stages.explain import build_explainer

    example("explainer")
    model, _ = load_run(digits_run)
    x = torch.rand(3, 1, 8, 8)
    t = torch.tensor([0, 1, 2])
    a = build_explainer("grad-squared-example", {"scale": 2.0}).attribute(model, x, t, torch.zeros(3, dtype=torch.int64))
    # independent: the gradient of each sample's own output, one sample at a time
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(model(xi)[0, t[i]], xi)
        assert torch.allclose(a[i], 2.0 * gi[0] ** 2, atol=1e-7)


def test_metric_example(example):
    from xairobust.metrics.base import MetricInput

    example("metric")
    a = np.random.default_rng(0).normal(size=(4, 1, 3, 3))
    inp = MetricInput(model=None, x=a, y=np.zeros(4), a=a, indices=np.arange(4), explain=None, seed=0,
                      device=torch.device("cpu"), value_range=None)
    got = METRICS.get("l1-mass-example")(None).score(inp)
    assert np.allclose(got, [np.mean(np.abs(a[i])) for i in range(4)], rtol=0, atol=1e-15)
    assert METRICS.meta("l1-mass-example")["direction"] == "lower"


def test_section_example(example, tmp_path):
    """The guide's section renders accuracy_gap.csv with the values of each run's robustness.json
    (recomputed here from the files), goes stale with them, and disappears when nothing is left."""
    import json

    from report_fake import fake_registry, zoo

    from xairobust.errors import XaiRobustError
    from xairobust.report import ReportConfig, build_report
    from xairobust.report.sections import sections_for

    example("section")
    assert [s.name for s in sections_for("report")].index("accuracy_gap") == 2  # after robustness (15)
    zoo(tmp_path / "runs", n=6, seeds=(0, 1))
    runs = sorted((tmp_path / "runs").iterdir())
    out = tmp_path / "report"
    build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    got = {(Path(r).name): g for r, g in zip(pd.read_csv(out / "accuracy_gap.csv")["run"],
                                               pd.read_csv(out / "accuracy_gap.csv")["gap"], strict=True)}
    want = {}
    for run in runs:
        doc = json.loads((run / "robustness.json").read_text())
        want[run.name] = doc["clean_accuracy"] - doc["robust_accuracy"]
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12)
    # robustness.json computed on other weights than the run's now is refused, not reported
    from xairobust.runs import save_tensors

    weights = runs[0] / "model.safetensors"
    original = weights.read_bytes()
    save_tensors(weights, {"w": torch.full((2,), 7.0)})
    with pytest.raises(XaiRobustError):
        build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    weights.write_bytes(original)
    for run in runs:
        (run / "robustness.json").unlink()
    build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert not (out / "accuracy_gap.csv").exists()  # nothing collected: the earlier copy is removed
