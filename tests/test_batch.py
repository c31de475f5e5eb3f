"""Zoo files, grid expansion, job keys, dry runs and failure isolation of `xairobust batch`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from batch_util import REPO, STUBS, fingerprint, subprocess_env, tiny_zoo
from rich.console import Console

from xairobust import config as cfg
from xairobust.batch.plan import build_plan
from xairobust.batch.runner import BatchOptions, exit_code, run_batch
from xairobust.batch.zoo import Zoo, find_zoo, load_zoo, shipped_zoos
from xairobust.errors import ConfigError
from xairobust.provenance import config_hash
from xairobust.registry import EXECUTORS
from xairobust.stages.train import TrainConfig


def make_zoo(**kw) -> Zoo:
    data = {"name": "t", "datasets": ["digits"], "models": ["digits_cnn"], "methods": ["standard"],
            "stages": dict(STUBS), **kw}
    return cfg.build(Zoo, data, "t.yaml")


def quiet_console() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115 - closed with the process


# -- the zoo file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": [0]}, "unknown key 'seed'. Did you mean 'seeds'?"),
        ({"methods": [{"name": "standard", "parms": {}}]}, "methods[0]: unknown key 'parms'. Did you mean 'params'?"),
        ({"train": {"seed": 3}}, "train.seed is set by the grid"),
        ({"seeds": [0, 0]}, "lists a seed twice"),
        ({"resources": {"trian": {"cpus": 2}}}, "resources.trian: unknown stage. Did you mean 'train'?"),
        ({"methods": [{"name": "standard", "grid": {"lr": 0.1}}]}, "grid.lr must be a non-empty list"),
        ({"methods": [{"name": "standard", "label": "x {eps}"}]}, "uses 'eps', which is not one of its params"),
    ],
)
def test_bad_zoo_is_one_clear_error(data, message):
    with pytest.raises(ConfigError) as err:
        make_zoo(**data)
    assert message in str(err.value)


def test_grid_expands_hyperparameters_into_labelled_points():
    zoo = make_zoo(methods=[{"name": "standard", "label": "sgd lr={lr} m={momentum}",
                             "params": {}, "grid": {"lr": [0.1, 0.01], "momentum": [0.0, 0.9]}}])
    points = zoo.methods[0].expand()
    assert [label for label, _ in points] == ["sgd lr=0.1 m=0.0", "sgd lr=0.1 m=0.9", "sgd lr=0.01 m=0.0", "sgd lr=0.01 m=0.9"]
    assert points[3][1] == {"lr": 0.01, "momentum": 0.9}
    default = make_zoo(methods=[{"name": "pgdlike", "grid": {"eps": [1, 2]}}]).methods[0].expand()
    assert [label for label, _ in default] == ["pgdlike eps=1", "pgdlike eps=2"]


def test_a_list_valued_param_is_a_ladder_expanded_like_a_grid():
    ladder = make_zoo(methods=[{"name": "pgd", "params": {"norm": "l2", "eps": [0, 0.25, 0.5, 1.0], "steps": 3}}])
    points = ladder.methods[0].expand()
    assert [label for label, _ in points] == ["pgd eps=0", "pgd eps=0.25", "pgd eps=0.5", "pgd eps=1.0"]
    assert [p for _, p in points] == [{"norm": "l2", "steps": 3, "eps": e} for e in (0, 0.25, 0.5, 1.0)]
    # The same ladder written as a grid plans the same runs: one mechanism, two spellings.
    grid = make_zoo(methods=[{"name": "pgd", "params": {"norm": "l2", "steps": 3}, "grid": {"eps": [0, 0.25, 0.5, 1.0]}}])
    assert grid.methods[0].expand() == points
    labelled = make_zoo(methods=[{"name": "jacobian", "label": "JR {lam}", "params": {"lam": [0.01, 0.2]}}])
    assert [label for label, _ in labelled.methods[0].expand()] == ["JR 0.01", "JR 0.2"]


def test_a_list_typed_param_stays_one_value_beside_a_ladder():
    nsloss = make_zoo(methods=[{"name": "nsloss", "params": {"layers": ["net.0*", "net.3*"], "lam": [0.1, 1.0]}}])
    points = nsloss.methods[0].expand()
    assert [label for label, _ in points] == ["nsloss lam=0.1", "nsloss lam=1.0"]
    assert all(p["layers"] == ["net.0*", "net.3*"] for _, p in points)


@pytest.mark.parametrize("method,message", [
    ({"name": "pgd", "params": {"eps": []}}, "params.eps is an empty ladder"),
    ({"name": "pgd", "params": {"eps": [0.1]}, "grid": {"eps": [0.2]}}, "'eps' is in both params and grid"),
])
def test_bad_ladder_is_one_clear_error(method, message):
    with pytest.raises(ConfigError) as err:
        make_zoo(methods=[method])
    assert message in str(err.value)


def test_ladder_dry_run_lists_one_run_per_rung(tmp_path):
    zoo = tmp_path / "ladder.yaml"
    zoo.write_text("name: ladder\ndatasets: [digits]\nmodels: [digits_cnn]\n"
                   "methods:\n  - {name: pgd, params: {norm: linf, eps: [0, 0.1], steps: 2}}\nseeds: 2\n")
    out = subprocess.run([sys.executable, "-m", "xairobust", "batch", str(zoo), "--dry-run", "--root", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    trains = sorted(line.split()[2].rsplit("-", 1)[0] for line in out.stdout.splitlines() if line.split()[:2] == ["run", "train"])
    assert trains == sorted(f"digits_digits_cnn_pgd_eps={e}_s{s}" for e in (0, 0.1) for s in (0, 1))


def test_seeds_count_means_range():
    assert make_zoo(seeds=3).seeds == [0, 1, 2]
    assert make_zoo(seeds=[4, 7]).seeds == [4, 7]


def test_shipped_zoos_are_found_by_name_and_valid():
    shipped = shipped_zoos()
    assert {"quickstart", "cifar10_cpu", "imagenette_paper"} <= set(shipped)
    assert find_zoo("quickstart") == shipped["quickstart"]
    assert find_zoo("quickstart.yaml") == shipped["quickstart"]
    for name in shipped:
        assert load_zoo(name).name == name
    with pytest.raises(ConfigError, match="Did you mean 'quickstart'"):
        find_zoo("quikstart")
    # Installed packages find them as package data (xairobust/configs/zoo links to configs/zoo).
    from importlib import resources

    packaged = resources.files("xairobust") / "configs" / "zoo" / "quickstart.yaml"
    assert packaged.is_file() and packaged.read_text() == shipped["quickstart"].read_text()


# -- the job graph -------------------------------------------------------------------------------


def test_plan_has_one_job_per_stage_and_grid_point(tmp_path):
    zoo = load_zoo(tiny_zoo(tmp_path))
    plan, missing = build_plan(zoo)
    assert missing == []
    stages = [j.stage for j in plan.jobs]
    # 2 labels x 2 seeds = 4 runs; each: train, attack, 2 explain, 2 score; one report.
    assert {s: stages.count(s) for s in set(stages)} == {"train": 4, "attack": 4, "explain": 8, "score": 8, "report": 1}
    jobs = plan.by_id()
    for job in plan.jobs:  # dependency order: every dependency comes first
        assert all(plan.jobs.index(jobs[d]) < plan.jobs.index(job) for d in job.deps)
    train = next(j for j in plan.jobs if j.stage == "train")
    conf = cfg.build(TrainConfig, train.config, "t")
    # The directory's hash is the config hash train() writes into run.json.
    assert train.key == config_hash(conf.identity())
    assert train.target == f"runs/tiny/digits_digits_cnn_standard_s0-{train.key}"
    assert conf.seed == 0 and conf.model_kwargs == {"width": 4} and conf.epochs == 1
    report = plan.reports()[0]
    assert report.target == "results/tiny/digits_digits_cnn" and len(report.inputs) == 4


def test_changing_one_stage_changes_only_its_and_later_keys(tmp_path):
    a, _ = build_plan(load_zoo(tiny_zoo(tmp_path, explain={"n": 8})))
    b, _ = build_plan(load_zoo(tiny_zoo(tmp_path, explain={"n": 9})))
    keys_a = {j.id: j.key for j in a.jobs}
    keys_b = {j.id: j.key for j in b.jobs}
    changed = {i.split(":")[0] for i in keys_a if keys_a[i] != keys_b[i]}
    assert changed == {"explain", "score", "report"}
    # The gxi explainer sets n itself (explainers[1].explain wins over the zoo's explain block).
    assert all(keys_a[i] == keys_b[i] for i in keys_a if i.startswith("explain:") and i.endswith(":gxi"))


def test_train_overrides_merge_dataset_model_method(tmp_path):
    zoo = load_zoo(tiny_zoo(tmp_path, train={"epochs": 1, "lr": 0.1, "batch_size": 32},
                            models=[{"name": "digits_cnn", "kwargs": {"width": 4}, "train": {"lr": 0.2}}],
                            methods=[{"name": "standard", "train": {"batch_size": 16}}]))
    plan, _ = build_plan(zoo)
    conf = next(j for j in plan.jobs if j.stage == "train").config
    assert (conf["lr"], conf["batch_size"], conf["epochs"]) == (0.2, 16, 1)


def test_init_from_makes_a_finetuning_dependency(tmp_path):
    zoo = load_zoo(tiny_zoo(tmp_path, methods=["standard", {"name": "standard", "label": "ft", "init_from": "standard"}]))
    plan, _ = build_plan(zoo)
    trains = {j.config["label"]: j for j in plan.jobs if j.stage == "train" and j.config["seed"] == 0}
    assert trains["ft"].deps == [trains["standard"].id]
    assert trains["ft"].config["init"] == trains["standard"].target
    with pytest.raises(ConfigError, match="init_from 'nope' is not a method label"):
        build_plan(load_zoo(tiny_zoo(tmp_path, methods=[{"name": "standard", "init_from": "nope"}])))


def test_plan_validates_names_and_hyperparameters_before_running(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'digits_cn'. Did you mean 'digits_cnn'"):
        build_plan(load_zoo(tiny_zoo(tmp_path, models=["digits_cn"])))
    with pytest.raises(ConfigError, match="unknown training method"):
        build_plan(load_zoo(tiny_zoo(tmp_path, methods=["standart"])))
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        build_plan(load_zoo(tiny_zoo(tmp_path, train={"epochs": 0})))
    with pytest.raises(ConfigError, match="unknown key 'sleeep'"):
        build_plan(load_zoo(tiny_zoo(tmp_path, explain={"sleeep": 1})))


def test_missing_stage_is_named(tmp_path):
    zoo = load_zoo(tiny_zoo(tmp_path, stages={**STUBS, "attack": "no_such_module_xyz"}))
    with pytest.raises(ConfigError, match="stages.attack: 'no_such_module_xyz' is not a registered stage"):
        build_plan(zoo)
    plan, missing = build_plan(zoo, skip_missing_stages=True)
    assert missing == ["attack"] and not any(j.stage == "attack" for j in plan.jobs)


def test_executors_are_registered():
    assert {"local", "ray"} <= set(EXECUTORS.names())


# -- running -------------------------------------------------------------------------------------


def test_dry_run_writes_nothing(tmp_path):
    root = tmp_path / "root"
    result = run_batch(tiny_zoo(tmp_path), BatchOptions(root=str(root), dry_run=True), out=quiet_console())
    assert not root.exists()
    assert result.outcomes == {}


def test_cli_dry_run_and_bad_zoo_exit_codes(tmp_path):
    zoo = tiny_zoo(tmp_path)
    env = subprocess_env()
    ok = subprocess.run([sys.executable, "-m", "xairobust", "batch", str(zoo), "--dry-run", "--root", str(tmp_path / "r")],
                        capture_output=True, text=True, env=env, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("\nrun   ") == 25 and "\ndone " not in ok.stdout  # 25 jobs, none done
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "datasets": ["digits"], "models": ["digits_cnn"],
                                   "methods": ["standard"], "seedz": 2}))
    err = subprocess.run([sys.executable, "-m", "xairobust", "batch", str(bad)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert err.returncode == 2
    assert err.stderr.strip().splitlines() == [
        f"error: {bad}: unknown key 'seedz'. Did you mean 'seeds'? Allowed: " + err.stderr.split("Allowed: ")[1].strip()
    ]
    assert not (tmp_path / "runs").exists()


def test_failing_job_is_isolated_and_reported(tmp_path):
    zoo = tiny_zoo(tmp_path, seeds=[0], methods=["standard", {"name": "standard", "label": "bad", "train": {"lr": 1e9}}])
    root = tmp_path / "root"
    console = Console(record=True, width=300, file=open("/dev/null", "w"))  # noqa: SIM115
    result = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=console)
    jobs = result.plan.by_id()
    status = {j: o.status for j, o in result.outcomes.items()}
    bad_train = next(j for j in jobs if j.startswith("train:") and "_bad_" in j)
    assert status[bad_train] == "failed"
    assert "RunError: train: the loss became nan" in result.outcomes[bad_train].error
    bad_run = jobs[bad_train].run_name
    for job_id, s in status.items():
        if job_id == bad_train:
            continue
        expected = "skipped" if bad_run in job_id else "done"
        assert s == expected, (job_id, s)
    # The report is built from the run that finished, and says so.
    report = result.outcomes["report:digits_digits_cnn"]
    assert report.status == "done" and report.note == "built from 1 of 2 runs"
    assert exit_code(result) == 1
    log = root / jobs[bad_train].target / "logs" / "train.log"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RunError" in text
    summary = console.export_text()
    assert f"train {bad_run}: RunError: train: the loss became nan" in summary
    assert "logs/train.log" in summary and "skipped 5 job(s)" in summary
    table = (root / "results/tiny/digits_digits_cnn/table.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in table[1:]] == ["standard"]

    # Again: the good run is reused untouched, the failed one retried (and failing again).
    good = [p for p in (root / "runs/tiny").glob("*standard*/**/*") if p.is_file() and "logs" not in p.parts]
    before = fingerprint(good)
    again = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    assert again.outcomes[bad_train].status == "failed"
    assert sum(o.status == "cached" for o in again.outcomes.values()) == 6  # train, attack, 2 explain, 2 score
    assert fingerprint(good) == before
    assert text in log.read_text() and log.read_text().count("Traceback") == 2  # the log keeps both attempts


def test_report_and_table_after_complete_run_are_reused(tmp_path):
    zoo = tiny_zoo(tmp_path, seeds=[0], methods=["standard"], explainers=["grad"])
    root = tmp_path / "root"
    first = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    assert first.ok and first.count("done") == 5
    files = [p for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and p.name != ".batch.lock"]
    before = fingerprint(files)
    second = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    assert second.ok and second.count("cached") == 5 and second.count("done") == 0
    assert fingerprint(files) == before
    # Deleting an output makes its job (and only what depends on it) run again.
    run = next(p for p in (root / "runs/tiny").iterdir() if p.is_dir())
    original = (run / "scores" / "grad.csv").read_bytes()
    (run / "scores" / "grad.csv").unlink()
    third = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=quiet_console())
    ran = {j.split(":")[0] for j, o in third.outcomes.items() if o.status == "done"}
    assert ran == {"score", "report"}
    assert (run / "scores" / "grad.csv").read_bytes() == original


def test_eta_uses_each_stages_mean_time(monkeypatch):
    from xairobust.batch import view as view_mod

    now = [100.0]
    monkeypatch.setattr(view_mod.time, "perf_counter", lambda: now[0])
    v = view_mod.BatchView(total=6, cached=0, parallelism=2, quiet=True)
    for i, stage in enumerate(["train", "train", "train", "score", "score", "score"]):
        v.add_pending(str(i), stage)
    assert v.eta() is None  # nothing measured yet
    v.started("0", "train", "t0")
    v.finished("0", True, 10.0)
    v.started("3", "score", "s0")
    v.finished("3", True, 2.0)
    v.started("1", "train", "t1")
    now[0] = 104.0  # train 1 has run 4 s of its expected 10
    # pending: train 2 (10) + scores 4, 5 (2 each); running: train 1 (10 - 4 = 6) -> 20 s / 2 workers
    assert v.eta() == pytest.approx(10.0)
    assert v.finished_count() == 2 and "2/6 jobs" in str(v.render().renderables[0])


def test_bad_executor_options_are_one_line_errors(tmp_path):
    zoo = tiny_zoo(tmp_path)
    with pytest.raises(ConfigError, match="unknown executor 'lokal'. Did you mean 'local'"):
        run_batch(zoo, BatchOptions(root=str(tmp_path / "r"), executor="lokal", dry_run=True), out=quiet_console())
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        run_batch(zoo, BatchOptions(root=str(tmp_path / "r"), workers=0), out=quiet_console())
    with pytest.raises(ConfigError, match="--address is for --executor ray"):
        run_batch(zoo, BatchOptions(root=str(tmp_path / "r"), address="auto"), out=quiet_console())
    assert not (tmp_path / "r").exists()


def test_a_cross_run_input_is_a_dependency_so_one_pass_does_the_blur_control(digits_run, tmp_path):
    """blur's ``match`` reads another run's base maps: the planner orders the blur job after that
    run's explain job (and after its own run's), so the first batch pass succeeds. Run A is listed
    first and the single worker takes ready jobs in plan order, so without the edge A's blur job
    would start before B's saliency maps exist and fail."""
    import shutil

    runs = {}
    for name in ("a", "b"):
        runs[name] = tmp_path / "runs" / name
        shutil.copytree(digits_run, runs[name], ignore=shutil.ignore_patterns("attributions", "scores", ".batch", "logs"))
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cross", "datasets": ["digits"], "models": ["digits_cnn"],
        "methods": [{"run": str(runs["a"]), "label": "A"}, {"run": str(runs["b"]), "label": "B"}],
        "explain": {"n": 8},
        "explainers": ["saliency", {"name": "blur", "params": {"base": "saliency", "match": str(runs["b"])}}],
        "score": {"metrics": "sparseness"},
        "reports": [],
    }))
    plan, _ = build_plan(load_zoo(path))
    use = {j.target: j.id for j in plan.jobs if j.stage == "use"}
    explain = {(j.target, j.config["explainer"]): j for j in plan.jobs if j.stage == "explain"}
    a, b = str(runs["a"].resolve()), str(runs["b"].resolve())
    assert set(explain[a, "blur"].deps) == {use[a], explain[a, "saliency"].id, explain[b, "saliency"].id}
    assert set(explain[b, "blur"].deps) == {use[b], explain[b, "saliency"].id}
    position = {j.id: i for i, j in enumerate(plan.jobs)}
    assert all(position[d] < position[j.id] for j in plan.jobs for d in j.deps)  # still in dependency order

    result = run_batch(path, BatchOptions(root=str(tmp_path / "root"), workers=1, quiet=True), out=quiet_console())
    assert result.ok, {k: o.error for k, o in result.outcomes.items() if o.error}
    doc = yaml.safe_load((runs["a"] / "attributions" / "blur.json").read_text())
    assert set(doc["provenance"]["inputs"]) == {"weights", "blur_base", "blur_match"}
    assert doc["details"]["match"] == str(runs["b"])
