"""Issue 12, part 1: one stage contract and one provenance chain.

Each test here fails on the code before the contract (main at 24e28ab) and passes after:
stale results after ``train --force``, old scores after a re-``explain``, checkpoints of an
interrupted run, zoo ``stages:`` importing modules, the report baseline, and every registered
stage having the contract's shape. Tiny digits models (width 4, one epoch): seconds each.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from report_fake import fake_registry, write_run

from xairobust.errors import ConfigError, RunError
from xairobust.report import ReportConfig, build_report
from xairobust.stages.attack import AttackConfig, attack
from xairobust.stages.contract import PROVENANCE_KEY, STAGES, Stage, StaleError, seal, verify_chain
from xairobust.stages.explain import ExplainConfig, explain
from xairobust.stages.manipulate import ManipulateConfig
from xairobust.stages.score import ScoreConfig, score
from xairobust.stages.train import TrainConfig, train
from xairobust.stages.visualize import VisualizeConfig

TINY = {"epochs": 1, "batch_size": 128, "model_kwargs": {"width": 4}}
EXPLAIN = {"explainer": "ig", "params": {"n_steps": 4}, "n": 8}
SCORE = {"explainer": "ig", "metrics": "sparseness,complexity"}
ATTACK = {"eps": 0.1, "steps": 2, "n": 32, "autoattack": False}


def _pipeline(run: Path, **train_kw) -> Path:
    """train -> attack -> explain -> score on a tiny digits model."""
    train(TrainConfig(**{**TINY, **train_kw}), run, quiet=True)
    attack(run, AttackConfig(**ATTACK), quiet=True)
    explain(run, ExplainConfig(**EXPLAIN), quiet=True)
    score(run, ScoreConfig(**SCORE), quiet=True)
    return run


def _report(runs: Path, out: Path) -> list[Path]:
    return build_report([runs], out, ReportConfig(figures=False), quiet=True)


@pytest.fixture
def two_runs(tmp_path):
    runs = tmp_path / "runs"
    _pipeline(runs / "std", seed=0)
    _pipeline(runs / "pgd", seed=0, method="pgd", method_params={"eps": 0.1, "steps": 2})
    return runs


def test_train_force_moves_everything_downstream_aside(two_runs, tmp_path, capsys):
    """Before: robustness.json, attributions/ and scores/ of the old weights stayed and the report
    printed the new model's accuracy beside the old model's robust accuracy and scores."""
    run = two_runs / "std"
    old = {p: p.read_bytes() for p in (run / "robustness.json", run / "scores" / "ig.csv")}
    _report(two_runs, tmp_path / "before")
    train(TrainConfig(**{**TINY, "seed": 1}), run, quiet=True, force=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "moved the previous contents" in err and ".replaced" in err
    assert not (run / "robustness.json").exists() and not (run / "scores").exists()
    assert not (run / "attributions").exists()
    moved = next((run / ".replaced").iterdir())
    assert {p.name for p in moved.iterdir()} >= {"model.safetensors", "run.json", "robustness.json", "scores"}
    assert (moved / "robustness.json").read_bytes() == old[run / "robustness.json"]
    # The report now sees the retrained run without results (and not the moved-aside copy).
    _report(two_runs, tmp_path / "after")
    table = pd.read_csv(tmp_path / "after" / "table.csv")
    assert "standard" not in set(table["method"])  # no scores of the new weights yet: no row
    assert "moved" not in "".join(json.loads((tmp_path / "after" / "report.json").read_text())["runs"])
    assert len(json.loads((tmp_path / "after" / "report.json").read_text())["runs"]) == 2
    # Putting the old results back is refused, naming the file and the command that redoes it.
    for p, data in old.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    with pytest.raises(StaleError) as info:
        _report(two_runs, tmp_path / "after")
    msg = str(info.value)
    assert "robustness.json is stale" in msg and "xairobust attack --run" in msg and "\n" not in msg


def test_reexplain_with_new_settings_leaves_old_scores_that_report_refuses(two_runs, tmp_path):
    """Before: re-running explain with new settings left the old scores/, and report used them."""
    run = two_runs / "pgd"
    explain(run, ExplainConfig(**{**EXPLAIN, "n": 10}), quiet=True)
    with pytest.raises(StaleError) as info:
        _report(two_runs, tmp_path / "r")
    msg = str(info.value)
    assert f"{run / 'scores' / 'ig.json'} is stale" in msg
    assert "attributions/ig.safetensors (attributions) changed" in msg
    assert f"xairobust score --run {run} --explainer ig" in msg
    assert not (tmp_path / "r").exists()
    score(run, ScoreConfig(**SCORE), quiet=True)  # recomputing makes the chain whole again
    assert (tmp_path / "r" / "report.json").is_file() or _report(two_runs, tmp_path / "r")


def test_report_json_records_every_input_and_verifies(two_runs, tmp_path):
    _report(two_runs, tmp_path / "r")
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    inputs = doc[PROVENANCE_KEY]["inputs"]
    recorded = {entry["path"] for entry in inputs.values()}  # roles name a run by its weights (collect.run_keys)
    for run in ("std", "pgd"):
        for rel in ("model.safetensors", "robustness.json", "scores/ig.csv", "scores/ig.json", "attributions/ig.json"):
            assert str((two_runs / run / rel).resolve()) in recorded
    verify_chain(tmp_path / "r" / "report.json", tmp_path / "r", "xairobust report")
    (two_runs / "std" / "scores" / "ig.csv").write_text("index,target,metric,value\n0,0,sparseness,1\n")
    with pytest.raises(StaleError, match=r"report.json is stale: .*scores/ig.csv"):
        verify_chain(tmp_path / "r" / "report.json", tmp_path / "r", "xairobust report")


def test_report_stage_rerenders_a_deleted_or_edited_output(two_runs, tmp_path):
    """Before: report.json recorded only the file names, so the batch's report job (Stage.run)
    skipped a report whose table.tex had been edited or whose stats were deleted as current."""
    from xairobust.report.build import ReportStage

    out, conf = tmp_path / "r", ReportConfig(figures=False, runs=[str(two_runs)])
    ReportStage().run(out, conf, quiet=True)
    tex = (out / "table.tex").read_bytes()
    written = json.loads((out / "report.json").read_text())["outputs"]
    assert "table.tex" in written and "table.csv" in written
    stamp = (out / "report.json").stat().st_mtime_ns
    ReportStage().run(out, conf, quiet=True)  # unchanged: skipped, report.json untouched
    assert (out / "report.json").stat().st_mtime_ns == stamp
    (out / "table.tex").write_text("edited by hand")
    ReportStage().run(out, conf, quiet=True)
    assert (out / "table.tex").read_bytes() == tex
    (out / "table.tex").unlink()
    ReportStage().run(out, conf, quiet=True)
    assert (out / "table.tex").read_bytes() == tex


def test_robustness_entries_carry_their_weights_and_others_do_not_survive(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(**TINY), run, quiet=True)
    attack(run, AttackConfig(**ATTACK), quiet=True)
    doc = json.loads((run / "robustness.json").read_text())
    sha = json.loads((run / "run.json").read_text())["weights_sha256"]
    assert [e[PROVENANCE_KEY]["inputs"]["weights"]["sha256"] for e in doc["results"]] == [sha]
    assert doc[PROVENANCE_KEY]["inputs"]["weights"]["sha256"] == sha
    # An entry computed on other weights (here: planted) is dropped at the next attack.
    foreign = json.loads(json.dumps(doc["results"][0]))
    foreign["eps"] = 0.2
    foreign[PROVENANCE_KEY]["inputs"]["weights"]["sha256"] = "0" * 64
    doc["results"].append(foreign)
    # sealed again (its body hash recomputed), as if the tool had written it: only the entry is foreign
    (run / "robustness.json").write_text(json.dumps(seal(doc)))
    attack(run, AttackConfig(**{**ATTACK, "eps": 0.05}), quiet=True)
    eps = sorted(e["eps"] for e in json.loads((run / "robustness.json").read_text())["results"])
    assert eps == [0.05, 0.1]
    assert STAGES.get("attack")().is_current(run, AttackConfig(**ATTACK))
    assert not STAGES.get("attack")().is_current(run, AttackConfig(**{**ATTACK, "steps": 3}))


def test_interrupted_save_every_leaves_no_checkpoint_a_later_run_takes_for_its_own(tmp_path, capsys):
    """Before: checkpoints of an interrupted run were scored by score-epochs as a later run's epochs."""
    from xairobust.report.epochs import checkpoints, score_checkpoints

    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "epochs": 3, "save_every": 1, "seed": 5}), run, quiet=True)
    (run / "run.json").unlink()  # as if killed after the checkpoints, before the end
    (run / "model.safetensors").unlink()
    train(TrainConfig(**{**TINY, "epochs": 1, "save_every": 1}), run, quiet=True)
    assert list(checkpoints(run)) == [1]
    assert "moved the previous contents" in capsys.readouterr().err
    from xairobust.stages.train import checkpoint_identity

    ours = json.loads((run / "run.json").read_text())[PROVENANCE_KEY]["identity_hash"]
    assert checkpoint_identity(run / "checkpoints" / "epoch_001.safetensors") == ours
    # A checkpoint of another run copied in is refused by score-epochs, by name.
    stale = next((run / ".replaced").iterdir()) / "checkpoints" / "epoch_002.safetensors"
    (run / "checkpoints" / "epoch_002.safetensors").write_bytes(stale.read_bytes())
    with pytest.raises(StaleError, match=r"epoch_002.safetensors was not written by the run in"):
        score_checkpoints(run, ExplainConfig(**EXPLAIN), ScoreConfig(**SCORE), quiet=True)


def test_zoo_stages_name_registered_stages_only_and_import_nothing(tmp_path, monkeypatch):
    """Before: `stages: {attack: some_module}` imported the module, even with --dry-run."""
    from xairobust.batch.plan import build_plan
    from xairobust.batch.runner import BatchOptions, run_batch
    from xairobust.batch.zoo import load_zoo

    marker = tmp_path / "ran"
    (tmp_path / "evil_stage_mod.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    zoo = {"name": "z", "datasets": ["digits"], "methods": ["standard"], "models": ["digits_cnn"],
           "attack": {"eps": 0.1}, "stages": {"attack": "evil_stage_mod"}}
    path = tmp_path / "z.yaml"
    path.write_text(yaml.safe_dump(zoo))
    for form in ("evil_stage_mod", "evil_stage_mod:attack:AttackConfig"):
        zoo["stages"]["attack"] = form
        path.write_text(yaml.safe_dump(zoo))
        with pytest.raises(ConfigError, match=r"stages.attack: '.*evil_stage_mod.*' is not a registered stage"):
            build_plan(load_zoo(path))
        with pytest.raises(ConfigError, match="is not a registered stage"):
            run_batch(path, BatchOptions(root=str(tmp_path / "r"), dry_run=True))
    assert not marker.exists() and "evil_stage_mod" not in sys.modules
    zoo["stages"]["attack"] = "explain"  # registered, but for another slot
    path.write_text(yaml.safe_dump(zoo))
    with pytest.raises(ConfigError, match="stages.attack: 'explain' is a explain stage, not a attack stage"):
        build_plan(load_zoo(path))


def test_baseline_resolves_by_label_or_method_case_insensitively(tmp_path):
    """Before: the default --baseline standard did not match the label 'Standard': empty stats, no stars."""
    rng = np.random.default_rng(0)
    for label, method, shift in (("Standard", "standard", 0.0), ("Adv. Training", "pgd", 1.0)):
        for seed in (0, 1):
            write_run(tmp_path / "runs", f"{method}{seed}", label=label, method=method, seed=seed,
                      scores={"ig": {"sparse": shift + 0.1 * rng.standard_normal(12)}})
    for baseline in ("standard", "STANDARD", "Standard"):
        out = tmp_path / f"out_{baseline}"
        build_report([tmp_path / "runs"], out, ReportConfig(figures=False, baseline=baseline), registry=fake_registry())
        stats = pd.read_csv(out / "stats.csv")
        assert list(stats["baseline"]) == ["Standard"] and list(stats["method"]) == ["Adv. Training"]
        assert pd.read_csv(out / "table.csv")["method"].iloc[0] == "Standard"  # baseline row first
    out = tmp_path / "out_pgd"
    build_report([tmp_path / "runs"], out, ReportConfig(figures=False, baseline="PGD"), registry=fake_registry())
    assert list(pd.read_csv(out / "stats.csv")["baseline"]) == ["Adv. Training"]


def test_missing_baseline_is_an_error_through_the_cli(tmp_path):
    import subprocess

    for seed in (0, 1):
        write_run(tmp_path / "runs", f"s{seed}", label="standard", seed=seed, scores={"ig": {"sparse": np.ones(4)}})
    res = subprocess.run([sys.executable, "-m", "xairobust", "report", str(tmp_path / "runs"), "--out",
                          str(tmp_path / "out"), "--baseline", "Nope", "--no-figures", "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: report: --baseline 'Nope' matches no run label or method (labels: standard; methods: standard)"
    ]
    assert not (tmp_path / "out").exists()


def test_train_label_cannot_leave_runs(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from xairobust.cli import main

    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    if True:
        res = CliRunner().invoke(main, ["train", "--epochs", "1", "--label", "../../../../x", "-q"])
        assert res.exit_code == 0, res.output
        made = [p.relative_to(tmp_path) for p in tmp_path.rglob("run.json")]
        assert made == [Path("a/b/runs/digits_digits_cnn_x_s0/run.json")]
        assert json.loads((tmp_path / made[0]).read_text())["label"] == "../../../../x"  # the row name is kept


# -- the registry loop: every registered stage has the contract's shape --------------------------


def _real_stages() -> list[str]:
    """The package's stages. The batch tests' stubs (tests/batch_stages.py, registered once a batch
    test module is imported, i.e. in a full-suite run) stand in for real stages and keep their
    own run() on purpose, so they are not part of this loop (the provenance loop skips them too)."""
    return [n for n in STAGES.names() if STAGES.get(n).__module__.startswith("xairobust.")]


@pytest.mark.parametrize("name", _real_stages())
def test_every_registered_stage_has_the_contract(name):
    from xairobust.batch.kinds import slots

    cls = STAGES.get(name)
    assert issubclass(cls, Stage) and cls.name == name
    assert dataclasses.is_dataclass(cls.Config), f"{name}: Config must be a dataclass"
    # Issue 17: Stage.run is final (resolve -> is_current -> compute -> write); a stage implements
    # inputs and compute, and identity/outputs only where it records a field resolved or writes several files.
    for method in ("inputs", "compute"):
        assert getattr(cls, method) is not getattr(Stage, method), f"{name} does not implement {method}()"
    assert cls.run is Stage.run, f"{name} overrides the contract's run()"
    assert cls.slot() in slots() and cls.per in ("run", "explainer", "report")
    assert cls.after is None or cls.after in slots()


# How to run each stage cheaply on a tiny digits run; a registered stage that is missing here
# fails test_every_stage_output_carries_provenance until it gets an example (or a reason).
ELSEWHERE = {
    "tune-lambda": "minutes of NsLoss search: test_tune_lambda_output_carries_provenance stubs the search",
    "import": "needs a foreign checkpoint: tests/test_import.py (run.json carries its provenance block)",
    "use": "check-only: its outputs are the run's own model.safetensors and run.json (written by train/import)",
}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("prov") / "run")


@pytest.fixture(scope="module")
def mer_runs(tmp_path_factory):
    """Two tiny regression runs (soundtracks, 20 generated clips, 1 epoch) for bim-regression and mer-report."""
    from mer_fixtures import make_soundtracks

    root = tmp_path_factory.mktemp("mer")
    make_soundtracks(root, n=20, seconds=0.6)
    runs = []
    for label, model in (("A2E", "a2e"), ("A2M2E", "a2b2e")):
        conf = TrainConfig(dataset="soundtracks", dataset_kwargs={"cache_dir": str(root / "cache")}, model=model,
                           model_kwargs={"width": 0.125}, label=label, epochs=1, batch_size=8, optimizer="adam",
                           lr=5e-4, weight_decay=0.0, schedule="constant", seed=0, data_dir=str(root))
        runs.append(train(conf, root / "runs" / label, quiet=True))
    return root, runs


@pytest.mark.parametrize("name", STAGES.names())
def test_every_stage_output_carries_provenance(name, pipeline_run, tmp_path, request):
    if name in ELSEWHERE:
        pytest.skip(ELSEWHERE[name])
    cls = STAGES.get(name)
    if not cls.__module__.startswith("xairobust."):
        pytest.skip(f"{name} is a test stub registered by {cls.__module__}")
    examples = {
        "train": (pipeline_run, TrainConfig(**TINY)),
        "attack": (pipeline_run, AttackConfig(**ATTACK)),
        "explain": (pipeline_run, ExplainConfig(**EXPLAIN)),
        "score": (pipeline_run, ScoreConfig(**SCORE)),
        "report": (tmp_path / "report", ReportConfig(figures=False, runs=[str(pipeline_run)], baseline="standard")),
        "manipulate": (pipeline_run, ManipulateConfig(attack="topk", explainer="saliency", n=4, steps=2, eps=0.1,
                                                      device="cpu")),
        "visualize": (pipeline_run, VisualizeConfig(kind="generation", preset="quick", n=1, classes=[0], params={"steps": 2})),
    }
    if name == "fid":  # after visualize: the run's generation images, features from the run itself
        from xairobust.stages.visualize import FidConfig

        gen = VisualizeConfig(kind="generation", preset="quick", n=1, classes=[0], params={"steps": 2})
        STAGES.get("visualize")().run(pipeline_run, gen, quiet=True)
        examples["fid"] = (pipeline_run, FidConfig(extractor=f"run:{pipeline_run}", kinds=["generation"], device="cpu"))
    if name in ("bim-regression", "mer-report"):  # regression runs
        from xairobust.report.mer import MerReportConfig
        from xairobust.stages.mer_attack import BIMAttackConfig, BIMRegressionStage

        root, runs = request.getfixturevalue("mer_runs")
        for run in runs:
            BIMRegressionStage().run(run, BIMAttackConfig(max_iter=1, data_dir=str(root)), quiet=True)
        examples["bim-regression"] = (runs[0], BIMAttackConfig(max_iter=1, data_dir=str(root)))
        examples["mer-report"] = (tmp_path / "mer", MerReportConfig(runs=[str(r) for r in runs], pairs=["A2E:A2M2E"],
                                                                   scatter_models=["A2E", "A2M2E"]))
    assert name in examples, f"stage '{name}' has no example here: add one (or a reason to ELSEWHERE)"
    target, conf = examples[name]
    stage = cls()
    stage.run(target, conf, quiet=True)
    doc_path = stage.outputs(target, conf)[-1]
    doc = json.loads(doc_path.read_text())
    resolved = stage.resolve(target, conf)
    assert doc[PROVENANCE_KEY]["stage"] in (name, cls.slot())
    assert stage.is_current(target, conf), f"{name}: is_current() is False right after run()"
    assert set(doc[PROVENANCE_KEY]["inputs"]) == set(resolved.inputs)
    verify_chain(doc_path, target, stage.hint(target, conf))


def test_stale_error_is_a_run_error():
    assert issubclass(StaleError, RunError)  # the CLI prints it as one line, exit 2


def test_batch_resume_reverifies_the_provenance_chain(tmp_path, digits_run):
    """A finished job whose output was computed from since-replaced weights is not 'done'.
    The batch asks the contract alone (markers are a log): done after the stage ran, not done
    once the weights it read are replaced outside the batch."""
    import shutil

    import batch_stages

    from xairobust.batch.plan import Job
    from xairobust.batch.state import job_stamp
    from xairobust.runs import save_tensors

    root = tmp_path
    run = root / "runs" / "a"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores", ".batch", "logs"))
    job = Job(id="attack:a", stage="attack", tag="attack", name="stub-attack", module="batch_stages",
              config={"n": 16}, target="runs/a")
    assert job_stamp(job, root) is None  # not computed yet
    STAGES.get("stub-attack")().run(run, batch_stages.AttackConfig(n=16), quiet=True)
    stamp = job_stamp(job, root)
    assert stamp == STAGES.get("stub-attack")().resolve(run, batch_stages.AttackConfig(n=16)).hash[:16]
    assert not (run / ".batch").exists()  # no marker was written, and none is needed
    save_tensors(run / "model.safetensors", {"w": torch.ones(3)})  # weights replaced outside the batch
    assert job_stamp(job, root) is None


def test_tune_lambda_trains_with_the_shared_loop_exactly_as_its_old_loop(digits_run, tmp_path):
    """tune-lambda's candidates now run stages.train.train_epoch; the per-batch CE equals the
    loop it used to have (written out here as the independent computation)."""
    import copy

    import xairobust.stages.tune_lambda as tl
    from xairobust.data.base import get_dataset
    from xairobust.runs import load_run
    from xairobust.stages.train import _optimizer
    from xairobust.training.base import TrainContext
    from xairobust.training.nsloss import NsLoss, NsLossParams

    model, _ = load_run(digits_run)
    split = get_dataset("digits", "train").subset(torch.arange(256))
    conf = TrainConfig(lr=1e-3, batch_size=64, epochs=1, weight_decay=0.0)

    def setup():
        m = copy.deepcopy(model)
        method = NsLoss(NsLossParams(lam=0.5, eps_ns=0.5, perturbations=2))
        ctx = TrainContext(task="classification", criterion=torch.nn.functional.cross_entropy, num_outputs=10,
                           value_range=split.info.value_range, generator=torch.Generator().manual_seed(3),
                           device=torch.device("cpu"))
        method.prepare(m, ctx)
        return m, method, ctx

    m, method, ctx = setup()
    got = tl._one_epoch(m, method, split, conf, ctx, torch.Generator().manual_seed(0), window=2)
    m, method, ctx = setup()
    m.train()
    opt = _optimizer(conf, m)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split), generator=gen)
    ces = []
    for start in range(0, len(order), conf.batch_size):
        idx = order[start : start + conf.batch_size]
        loss, logs = method.loss(m, split.inputs(idx), split.targets(idx), ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ces.append(logs["task_loss"])
    assert got["ce_per_batch_nats"] == ces
    assert got["max_window_ce_nats"] == max((ces[i] + ces[i + 1]) / 2 for i in range(len(ces) - 1))


def test_tune_lambda_output_carries_provenance(digits_run, tmp_path, monkeypatch):
    import xairobust.stages.tune_lambda as tl
    from xairobust.stages.tune_lambda import TuneLambdaConfig

    monkeypatch.setattr(tl, "_one_epoch", lambda *a, **k: {"ce_per_batch_nats": [], "max_window_ce_nats": 0.0,
                                                          "max_window_ce_bits": 0.0, "final_window_ce_bits": 0.0})
    stage = STAGES.get("tune-lambda")()
    conf = TuneLambdaConfig(nsloss={"eps_ns": 0.5}, batches=1, iterations=1, out=str(tmp_path / "t.json"))
    path = stage.run(digits_run, conf, quiet=True)
    assert stage.is_current(digits_run, conf)
    doc = verify_chain(path, digits_run, stage.hint(digits_run, conf))
    assert doc[PROVENANCE_KEY]["identity_hash"] == stage.resolve(digits_run, conf).hash


def test_a_registered_extra_stage_joins_the_zoo_by_its_class_declarations(tmp_path, monkeypatch):
    """manipulate/visualize only register a Stage: per/after place it in the job graph, a zoo key configures it."""
    from batch_util import tiny_zoo

    from xairobust.batch.plan import build_plan
    from xairobust.batch.zoo import load_zoo

    @dataclasses.dataclass
    class VisConfig:
        explainer: str
        images: int = 4

    class Vis(Stage):
        name = "test-visualize"
        Config = VisConfig
        per = "explainer"
        after = "explain"
        order = 2.5

        def inputs(self, run_dir, conf):
            return {}

        def identity(self, run_dir, conf):
            return {"images": conf.images}

        def outputs(self, run_dir, conf):
            return []

        def run(self, run_dir, conf, quiet=False):
            return None

    STAGES.names()  # load the real ones first; the test stage is removed again afterwards
    monkeypatch.setitem(STAGES._items, "test-visualize", Vis)
    monkeypatch.setitem(STAGES._meta, "test-visualize", {})
    path = tiny_zoo(tmp_path)
    plan, _ = build_plan(load_zoo(path))
    assert not any(j.name == "test-visualize" for j in plan.jobs)  # not configured: no jobs
    data = yaml.safe_load(path.read_text())
    data["test-visualize"] = {"images": 2}
    path.write_text(yaml.safe_dump(data))
    plan, _ = build_plan(load_zoo(path))
    jobs = plan.by_id()
    vis = [j for j in plan.jobs if j.name == "test-visualize"]
    assert len(vis) == 4 * 2  # runs x explainers
    for j in vis:
        (dep,) = j.deps
        assert jobs[dep].stage == "explain" and j.config == {"images": 2, "explainer": jobs[dep].config["explainer"]}
    data["test-visualize"] = {"imagez": 2}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown key 'imagez'"):
        build_plan(load_zoo(path))
