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

EXPECTED: dict[str, str] = {
    "train": "ee15ac4115f32ffc91c2008016aa658dc92c31a51281e006eab85feb7df68bda",
    "train-init": "487e32a533177aca0dd899cd5b492fdf7a83eda5622a4c57e2fb0a9687cdc667",
    "attack": "0dc16c22f632829ae49a62ee850a4ded5ebe76ba8cbe4ae222d09b5929b98e05",
    "attack-aa": "f1c1e0e084c310bb49e85baebe6b1dc5cd11b9e14eff0e65b23b4f41e7239b3a",
    "attack-apgd": "248618fda257097c740b9f861d2ac827cbb767d37e780ee7d89a7af6506bc52f",
    "explain": "3e224bf884a53adb9c2bea40bf2e53e671f8e3f625134d80c563cf3eea5a51a6",
    "explain-sal": "1917a95db51e86d374c0ae50ca92440083692d23d13aa4d268f5e8c7c2bfb57e",
    "score": "854f91eb5f503af49c78913692f3deece13ff5d3321cd09090565c76dce2ea43",
    "score-all": "42ce0d0a59f415e3d5ebeebe6d599e7ce284e05063aaadf285216c8738288c6a",
    "manipulate": "958c32138c1faffb392aa619a7b4a40c76768b8b516d9f6ce0647b1d99620b50",
    "import": "94fa91535a458af30999a39b43e7b4d7e22168ae1969a2f87f0493479c800712",
    "use": "160ffb4a9e111796fa7371578b17e2219bb31161a493e4c1793cf0b3549ed0a1",
    "bim-regression": "6d070a6c8c28abc2691948af4e6da3710fc1ceb61db27ecd8c49d5d4551d6bff",
    "tune-lambda": "5e6fd2388d2263cecd029b3fb5c419a01ea4b40f068f5a6fdf550bdd73e57380",
    "visualize": "4e9c034ba8ef067f1b01f5cdfa0cdac3ec475554a34fda3f423aa6f201288147",
    "report": "836baa5261ed02fdad65bf233521f856e768a5e6bf0d398a2584326e9ed62e77",
    "mer-report": "351362bb7491598accdb541dbcbc1b55a7a9327bca031b58ec2f3dd44dc903eb",
    "fid": "0a794142c35a37fa5133324bd082911a53f33bcee2089fc73ea1f81428a27d5c",
    "entry-0": "35dc9cae701d5c8b74ed1334d1b2592354d86c47ed7383f490b56b01208ba784",
    "entry-1": "3b3fed487ad4aab2ea2ce68097ae778c4270b7e56d29a809631b5d6079fdad18",
    "entry-2": "f534465887049129ad6d307d332082921ae324525c47d1778d163b31c9fdcb8b",
    "entry-3": "6fb86dcf3cb484cc610fa84ca757522ebf7138cdbeafe1e76fec20777bd5c385",
    "entry-4": "6d070a6c8c28abc2691948af4e6da3710fc1ceb61db27ecd8c49d5d4551d6bff",
    "score-epochs": "04a0353d7a49da53f446691013eca4f614b532a3d23505cb5e0a2a28c4af0f29",
}


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
    from xairobust import config as cfg
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.score import ScoreConfig

    e = ExplainConfig(**CASES["explain"][0])
    s = ScoreConfig(**CASES["score"][0])
    try:
        from xairobust.stages.score_epochs import ScoreEpochConfig, ScoreEpochStage
    except ImportError:  # the old code computed it inside report/epochs.py
        ScoreEpochStage = None
    if ScoreEpochStage is not None:
        stage = ScoreEpochStage()

        conf = ScoreEpochConfig(explain=cfg.to_dict(e), score=cfg.to_dict(s))
        return identity_hash(stage.name, stage.format, stage.identity(Path("/r"), conf), {})

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
