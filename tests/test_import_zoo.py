"""Imported runs as `init:` of a training run and as `run:` entries of a zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from batch_util import tiny_zoo
from rich.console import Console

from xairobust.batch.plan import build_plan
from xairobust.batch.runner import BatchOptions, run_batch
from xairobust.batch.zoo import load_zoo
from xairobust.errors import ConfigError
from xairobust.models.base import create_model
from xairobust.runs import load_run, read_run_meta
from xairobust.stages.import_ import ImportConfig, import_checkpoint
from xairobust.stages.train import TrainConfig, init_from_run, train


def quiet_console() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115


def make_import(tmp_path: Path, name: str, num_outputs: int = 10, width: int = 4, seed: int = 0, **kw) -> Path:
    torch.manual_seed(seed)
    net = create_model("digits_cnn", num_outputs=num_outputs, in_channels=1, width=width).net
    ckpt = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), ckpt)
    conf = ImportConfig(checkpoint=str(ckpt), model="digits_cnn", dataset="digits", model_kwargs={"width": width},
                        mean=[0.3052], std=[0.376], num_outputs=num_outputs, **kw)
    return import_checkpoint(conf, tmp_path / "imported" / name, quiet=True)


# -- init: ---------------------------------------------------------------------------------------


def test_init_from_an_imported_run_with_another_class_count_reinitialises_the_head(tmp_path):
    run = make_import(tmp_path, "five", num_outputs=5)
    source, _ = load_run(run)
    torch.manual_seed(123)
    kwargs = {"num_outputs": 10, "in_channels": 1, "mean": [0.3052], "std": [0.376], "width": 4}
    model = create_model("digits_cnn", **kwargs)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    info = init_from_run(model, str(run), "digits_cnn", kwargs)
    head = ["net.head.3.weight", "net.head.3.bias"]
    assert info["reinitialised"] == head and info["source_num_outputs"] == 5 and info["method"] == "imported"
    for k, v in model.state_dict().items():
        expected = fresh[k] if k in head or k.startswith("normalize.") else source.state_dict()[k]
        assert torch.equal(v, expected), k


def test_init_with_the_same_class_count_copies_everything_and_train_records_it(tmp_path):
    run = make_import(tmp_path, "ten")
    out = train(TrainConfig(model="digits_cnn", model_kwargs={"width": 4}, epochs=1, lr=1e-12, init=str(run),
                            batch_size=256), tmp_path / "ft", quiet=True)
    meta = read_run_meta(out)
    assert meta["init_from"]["reinitialised"] == [] and meta["init_from"]["run"] == str(run)
    # lr 1e-12: the fine-tuned weights are the imported ones (to float precision).
    a, b = load_run(out)[0].net.state_dict(), load_run(run)[0].net.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in b if "running" not in k)


def test_init_refuses_another_architecture(tmp_path):
    run = make_import(tmp_path, "wide", width=8)
    kwargs = {"num_outputs": 10, "in_channels": 1, "mean": [0.3052], "std": [0.376], "width": 4}
    with pytest.raises(ConfigError, match="cannot start from it"):
        init_from_run(create_model("digits_cnn", **kwargs), str(run), "digits_cnn", kwargs)


# -- zoo `run:` entries --------------------------------------------------------------------------


def test_zoo_mixes_trained_and_imported_runs(tmp_path):
    # (--verify: the stub report stage averages run.json's clean_accuracy)
    imported = make_import(tmp_path, "rb_like", label="RobustBench-like", verify=50)
    other = make_import(tmp_path, "second", seed=1, verify=50, label="Other import")
    zoo_path = tiny_zoo(tmp_path, seeds=[0], methods=["standard", {"run": str(imported)},
                                                      {"run": [str(other)]}],
                        explainers=["grad"])
    plan, _ = build_plan(load_zoo(zoo_path))
    uses = [j for j in plan.jobs if j.stage == "use"]
    assert [j.target for j in uses] == [str(imported), str(other)]
    jobs = plan.by_id()
    for use in uses:
        dependents = [j for j in plan.jobs if use.id in j.deps]
        assert {j.stage for j in dependents} == {"attack", "explain"}
    report = plan.reports()[0]
    assert str(imported) in report.inputs and len(report.inputs) == 3
    assert not any(j.stage == "train" and "rb_like" in j.id for j in jobs.values())

    root = tmp_path / "root"
    first = run_batch(load_zoo(zoo_path), BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    assert first.ok, {k: (o.status, o.error) for k, o in first.outcomes.items()}
    assert (imported / ".batch" / "use.json").is_file() and (imported / "scores" / "grad.csv").is_file()
    table = next((root / "results" / "tiny").rglob("table.csv")).read_text()
    assert "RobustBench-like" in table and "Other import" in table

    again = run_batch(load_zoo(zoo_path), BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    assert all(o.status == "cached" for o in again.outcomes.values())

    # Re-importing another checkpoint into the directory redoes that run's jobs (and the report).
    torch.manual_seed(5)
    ckpt = tmp_path / "replacement.pt"
    torch.save(create_model("digits_cnn", in_channels=1, width=4).net.state_dict(), ckpt)
    import_checkpoint(ImportConfig(checkpoint=str(ckpt), model="digits_cnn", dataset="digits",
                                   model_kwargs={"width": 4}, mean=[0.3052], std=[0.376], label="RobustBench-like",
                                   verify=50),
                      imported, quiet=True, force=True)
    third = run_batch(load_zoo(zoo_path), BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    redone = {jid for jid, o in third.outcomes.items() if o.status == "done"}
    use_id = uses[0].id
    assert use_id in redone and {j.id for j in plan.jobs if use_id in j.deps} <= redone
    assert report.id in redone
    assert not any(uses[1].id in j.deps and j.id in redone for j in plan.jobs)


def test_zoo_run_entry_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory|run directory not found"):
        build_plan(load_zoo(tiny_zoo(tmp_path, methods=[{"run": str(tmp_path / "nope")}])))
    with pytest.raises(ConfigError, match="params, grid, train and init_from do not apply"):
        load_zoo(tiny_zoo(tmp_path, methods=[{"run": "x", "params": {"lr": 1}}]))
    # issue 21: a run: entry may take a label (its row in reports); an empty one is refused
    assert load_zoo(tiny_zoo(tmp_path, methods=[{"run": "x", "label": "y"}])).methods[0].label == "y"
    with pytest.raises(ConfigError, match="label must be a non-empty string"):
        load_zoo(tiny_zoo(tmp_path, methods=[{"run": "x", "label": ""}]))
    imported = make_import(tmp_path, "d")
    meta_path = imported / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["dataset"]["name"] = "cifar10"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="it is a 'cifar10' run, but the zoo lists no dataset 'cifar10'"):
        build_plan(load_zoo(tiny_zoo(tmp_path, methods=["standard", {"run": str(imported)}])))
