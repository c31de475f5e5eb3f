"""The blur control's ``match`` given as a zoo method label (issue 18 item 3): the planner resolves
it per run to the run of that label with the same dataset, model and seed; a path stays accepted;
a label with no run, or several, for a seed, and a value that is neither, are one-line errors."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from xairobust.batch.plan import build_plan
from xairobust.batch.runner import BatchOptions, run_batch
from xairobust.batch.zoo import load_zoo
from xairobust.errors import ConfigError

LADDER = {"name": "pgd", "label": "PGD eps={eps}", "params": {"norm": "linf", "eps": [0.05, 0.1], "steps": 2}}


def write_zoo(tmp: Path, match: str, name: str = "lbl", **overrides: Any) -> Path:
    zoo: dict[str, Any] = {
        "name": name,
        "datasets": ["digits"],
        "models": [{"name": "digits_cnn", "kwargs": {"width": 4}}],
        "methods": ["standard", LADDER],
        "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 128},
        "explain": {"n": 8},
        "explainers": ["saliency", {"name": "blur", "params": {"base": "saliency", "match": match}}],
        "score": {"metrics": "sparseness"},
        "reports": [],
    }
    zoo.update(overrides)
    path = tmp / f"{name}-{abs(hash(match)) % 10**6}.yaml"
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    return path


def jobs_by(plan, stage: str, explainer: str | None = None):
    return [j for j in plan.jobs if j.stage == stage and (explainer is None or j.config.get("explainer") == explainer)]


def test_a_label_resolves_to_the_same_seeds_run_and_the_dry_run_shows_it(tmp_path):
    plan, _ = build_plan(load_zoo(write_zoo(tmp_path, "PGD eps=0.1")))
    trains = {(j.config["label"], j.config["seed"]): j for j in jobs_by(plan, "train")}
    assert len(trains) == 6  # standard + 2 rungs, 2 seeds
    blur = jobs_by(plan, "explain", "blur")
    assert len(blur) == 6
    saliency = {j.target: j.id for j in jobs_by(plan, "explain", "saliency")}
    for job in blur:
        seed = next(t.config["seed"] for t in trains.values() if t.target == job.target)
        want = trains["PGD eps=0.1", seed].target
        assert job.config["params"]["match"] == want  # spelled as the planner spells the run: runs/<zoo>/<name>
        assert want == f"runs/lbl/{trains['PGD eps=0.1', seed].run_name}"
        assert saliency[want] in job.deps  # ordered after the match run's base maps (planned_inputs)
        assert job.summary.endswith(f"(match: {want})")
    # the two seeds' blur jobs name different runs
    assert {j.config["params"]["match"] for j in blur} == {trains["PGD eps=0.1", s].target for s in (0, 1)}

    out = io.StringIO()
    run_batch(write_zoo(tmp_path, "PGD eps=0.1"), BatchOptions(root=str(tmp_path / "root"), dry_run=True),
              out=Console(file=out, width=400))
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("run   explain blur ")]
    assert len(lines) == 6
    for (_label, seed), t in trains.items():
        assert f"run   explain blur {t.run_name} (match: {trains['PGD eps=0.1', seed].target})" in lines


def test_a_label_gives_the_same_job_as_the_path_the_planner_spells(tmp_path):
    """The label is replaced before the config is built, so the job (config, key) is the one the
    explicit path gives: runs already explained with the path are found current."""
    by_label, _ = build_plan(load_zoo(write_zoo(tmp_path, "PGD eps=0.1", seeds=[0])))
    rung = next(j for j in jobs_by(by_label, "train") if j.config["label"] == "PGD eps=0.1")
    by_path, _ = build_plan(load_zoo(write_zoo(tmp_path, rung.target, seeds=[0])))
    a = {j.id: (j.key, j.config, sorted(j.deps)) for j in by_label.jobs}
    b = {j.id: (j.key, j.config, sorted(j.deps)) for j in by_path.jobs}
    assert a == b


@pytest.mark.parametrize("match", ["PGD eps=0.3", "PGD eps={eps}", "pgd"])
def test_a_label_that_is_no_method_label_is_a_one_line_error(tmp_path, match):
    with pytest.raises(ConfigError) as err:
        build_plan(load_zoo(write_zoo(tmp_path, match)))
    msg = str(err.value)
    assert "\n" not in msg
    assert "explainer 'blur' of digits_digits_cnn_standard_s0-" in msg
    assert f"match '{match}' is neither a method label of digits x digits_cnn (PGD eps=0.05, PGD eps=0.1, standard)" in msg
    # the dry run refuses it the same way, nothing written
    with pytest.raises(ConfigError, match="match '.*' is neither a method label"):
        run_batch(write_zoo(tmp_path, match), BatchOptions(root=str(tmp_path / "r"), dry_run=True),
                  out=Console(file=io.StringIO()))
    assert not (tmp_path / "r").exists()


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("attributions", "scores", ".batch", "logs"))
    return dst


def test_a_label_with_several_runs_for_one_seed_is_a_one_line_error(digits_run, tmp_path):
    a, b = copy_run(digits_run, tmp_path / "runs" / "a"), copy_run(digits_run, tmp_path / "runs" / "b")  # both seed 0
    zoo = write_zoo(tmp_path, "R", methods=["standard", {"run": [str(a), str(b)], "label": "R"}], seeds=[0])
    with pytest.raises(ConfigError) as err:
        build_plan(load_zoo(zoo))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"match 'R' matches 2 runs for seed 0 ({a.resolve()}, {b.resolve()}); give one of them by its path" in msg


def test_a_label_with_no_run_for_the_seed_is_a_one_line_error(digits_run, tmp_path):
    r = copy_run(digits_run, tmp_path / "runs" / "r")  # a seed-0 run; the trained runs have seeds 0 and 1
    zoo = write_zoo(tmp_path, "R", methods=["standard", {"run": str(r), "label": "R"}])
    with pytest.raises(ConfigError) as err:
        build_plan(load_zoo(zoo))
    msg = str(err.value)
    assert "\n" not in msg
    assert "explainer 'blur' of digits_digits_cnn_standard_s1-" in msg
    assert "match 'R' is a method label of digits x digits_cnn with no run for seed 1" in msg


def test_a_run_entry_label_resolves_and_a_path_stays_accepted(digits_run, tmp_path):
    r = copy_run(digits_run, tmp_path / "runs" / "r")
    by_label, _ = build_plan(load_zoo(write_zoo(tmp_path, "R", methods=["standard", {"run": str(r), "label": "R"}], seeds=[0])))
    by_path, _ = build_plan(load_zoo(write_zoo(tmp_path, str(r), methods=["standard", {"run": str(r), "label": "R"}], seeds=[0])))
    assert {j.target: j.config["params"]["match"] for j in jobs_by(by_label, "explain", "blur")} == {
        j.target: str(r.resolve()) for j in jobs_by(by_label, "explain", "blur")}
    assert {j.target: j.config["params"]["match"] for j in jobs_by(by_path, "explain", "blur")} == {
        j.target: str(r) for j in jobs_by(by_path, "explain", "blur")}


def test_the_sigma_chosen_by_label_equals_the_sigma_chosen_with_the_path(tmp_path):
    """One batch pass on the label zoo (1 seed); then the blur of the Standard run explained again
    with the explicit path of the PGD run, into a copy of the Standard run: the same sigma, the
    same roughness target and the same blurred maps."""
    from xairobust.runs import load_tensors
    from xairobust.stages.explain import ExplainConfig, explain

    root = tmp_path / "root"
    zoo = write_zoo(tmp_path, "PGD eps=0.1", seeds=[0], methods=["standard", {**LADDER, "params": {**LADDER["params"], "eps": [0.1]}}])
    result = run_batch(zoo, BatchOptions(root=str(root), workers=1, quiet=True), out=Console(file=io.StringIO()))
    assert result.ok, {k: o.error for k, o in result.outcomes.items() if o.error}
    plan = result.plan
    runs = {j.config["label"]: root / j.target for j in jobs_by(plan, "train")}
    std, pgd = runs["standard"], runs["PGD eps=0.1"]
    by_label = yaml.safe_load((std / "attributions" / "blur.json").read_text())
    assert by_label["details"]["match"] == str(Path("runs/lbl") / pgd.name)

    copy = tmp_path / "copy"
    shutil.copytree(std, copy, ignore=shutil.ignore_patterns("blur.*", "scores", ".batch", "logs"))
    explain(copy, ExplainConfig(explainer="blur", n=8, params={"base": "saliency", "match": str(pgd)}), quiet=True)
    by_path = yaml.safe_load((copy / "attributions" / "blur.json").read_text())
    assert by_path["params"]["sigma"] == by_label["params"]["sigma"]
    assert by_path["details"]["resolved_sigma"] == by_label["details"]["resolved_sigma"]
    assert by_path["details"]["roughness_match"] == by_label["details"]["roughness_match"]
    assert by_path["details"]["match"] == str(pgd)
    a = load_tensors(std / "attributions" / "blur.safetensors")["attributions"]
    b = load_tensors(copy / "attributions" / "blur.safetensors")["attributions"]
    assert a.equal(b)
    assert by_label["params"]["sigma"] > 0  # the Standard maps were blurred (not the sigma-0 case)
