"""Robust evaluation: robustness.json merging, PGD recomputation, AutoAttack on an exactly solvable model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from xairobust.attacks.autoattack import autoattack
from xairobust.attacks.pgd import pgd_attack
from xairobust.data.base import get_dataset
from xairobust.errors import ConfigError
from xairobust.runs import load_run
from xairobust.stages.attack import AttackConfig, attack


@pytest.fixture()
def run(digits_run, tmp_path):
    """A private copy of the shared digits run (this test writes robustness.json into it)."""
    dst = tmp_path / "run"
    shutil.copytree(digits_run, dst)
    return dst


def test_pgd_entry_matches_an_independent_recomputation(run):
    conf = AttackConfig(norm="linf", eps=0.1, steps=5, restarts=1, autoattack=False, n=48, batch_size=48, seed=3)
    path = attack(run, conf, quiet=True)
    data = json.loads(path.read_text())
    assert data["headline"] == "pgd" and len(data["results"]) == 1
    entry = data["results"][0]
    model, _ = load_run(run)
    split = get_dataset("digits", "test")
    x, y = split.inputs(slice(0, 48)), split.targets(slice(0, 48))
    adv = pgd_attack(model, x, y, norm="linf", eps=0.1, step_size=0.05, steps=5, random_start=True,
                     loss_fn=nn.functional.cross_entropy, value_range=(0.0, 1.0),
                     generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        robust = float((model(adv).argmax(1) == y).float().mean())
        clean = float((model(x).argmax(1) == y).float().mean())
    assert entry["robust_accuracy"] == pytest.approx(robust) == pytest.approx(data["robust_accuracy"])
    assert data["clean_accuracy"] == pytest.approx(clean)
    assert entry["robust_accuracy"] < clean
    assert entry["step_size"] == pytest.approx(0.05) and entry["n"] == 48


def test_entries_merge_by_attack_norm_eps_and_reruns_are_noops(run):
    base = dict(steps=2, autoattack=False, n=16, batch_size=16)
    path = attack(run, AttackConfig(norm="linf", eps=0.1, **base), quiet=True)
    first = path.read_text()
    attack(run, AttackConfig(norm="linf", eps=0.1, **base), quiet=True)
    assert path.read_text() == first  # same attack, same weights: nothing rewritten
    attack(run, AttackConfig(norm="l2", eps=0.5, **base), quiet=True)
    data = json.loads(path.read_text())
    assert [(e["norm"], e["eps"]) for e in data["results"]] == [("l2", 0.5), ("linf", 0.1)]
    assert data["headline_norm"] == "l2"
    old_l2, old_linf = data["results"]
    attack(run, AttackConfig(norm="linf", eps=0.1, **{**base, "steps": 4}), quiet=True)
    data = json.loads(path.read_text())
    assert len(data["results"]) == 2
    assert data["results"][0] == old_l2  # the other entry is kept as it was
    assert data["results"][1]["steps"] == 4 and old_linf["steps"] == 2


def test_autoattack_entry_is_the_headline(run):
    path = attack(run, AttackConfig(norm="linf", eps=0.3, steps=3, autoattack=True, n=6, batch_size=6), quiet=True)
    data = json.loads(path.read_text())
    assert data["headline"] == "autoattack"
    aa = next(e for e in data["results"] if e["attack"] == "autoattack")
    assert data["robust_accuracy"] == aa["robust_accuracy"] <= data["clean_accuracy"]


def _linear_case(norm: str, eps: float):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = 0.3 + 0.4 * torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
        w, b = model[1].weight, model[1].bias
        robust = torch.ones(len(x), dtype=torch.bool)
        for i in range(len(x)):
            for j in range(4):
                if j == y[i]:
                    continue
                dw = w[y[i]] - w[j]
                margin = dw @ x[i].flatten() + b[y[i]] - b[j]
                dual = dw.abs().sum() if norm == "linf" else dw.norm()
                robust[i] &= bool(margin > eps * dual)  # the worst case over the ball, box not binding
    return model, x, y, robust


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.15)])
def test_autoattack_finds_exactly_the_non_robust_points_of_a_linear_model(norm, eps):
    model, x, y, robust = _linear_case(norm, eps)
    assert 0 < int(robust.sum()) < len(x)  # both kinds present: the test can fail either way
    adv = autoattack(model, x, y, norm=norm, eps=eps, num_classes=4)
    with torch.no_grad():
        still = model(adv).argmax(1) == y
    assert torch.equal(still, robust)
    d = (adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)


def test_autoattack_refuses_unbounded_inputs():
    model, x, y, _ = _linear_case("linf", 0.03)
    with pytest.raises(ConfigError, match="--no-autoattack"):
        autoattack(model, x, y, norm="linf", eps=0.03, num_classes=4, value_range=None)
    with pytest.raises(ConfigError, match="5 x 5"):
        autoattack(model, x[:, :, :4, :4], y, norm="l2", eps=0.03, num_classes=4)


@pytest.mark.parametrize("bad,match", [({"eps": 0}, "--eps"), ({"steps": 0}, "--steps"), ({"restarts": 0}, "--restarts"),
                                       ({"n": 0}, "--n")])
def test_bad_config_names_the_option(bad, match):
    with pytest.raises(ConfigError, match=match):
        AttackConfig(**bad)


def test_regression_fields_against_direct_formulas():
    import numpy as np

    from xairobust.data.base import DatasetInfo, DataSplit
    from xairobust.stages.attack import _regression_fields

    info = DatasetInfo(name="toy", task="regression", num_outputs=2, input_shape=(3,), mean=(0.0,), std=(1.0,),
                       value_range=None)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 2, generator=g)
    model = nn.Linear(3, 2).eval()
    adv = x + 0.1 * torch.randn(20, 3, generator=g)
    f = _regression_fields(model, DataSplit(x, y, info), 20, adv, "cpu")
    with torch.no_grad():
        pb, pa = model(x).numpy(), model(adv).numpy()
    yn = y.numpy()
    assert f["mae_before"] == pytest.approx(np.abs(pb - yn).mean(), rel=1e-6)
    assert f["delta_mae"] == pytest.approx(np.abs(pa - yn).mean() - np.abs(pb - yn).mean(), abs=1e-6)
    corr = np.mean([np.corrcoef(pa[:, j], yn[:, j])[0, 1] for j in range(2)])
    assert f["corr_after"] == pytest.approx(corr, rel=1e-5)
    snr = np.mean(10 * np.log10((x.numpy() ** 2).sum(1) / ((adv - x).numpy() ** 2).sum(1)))
    assert f["snr_db"] == pytest.approx(snr, rel=1e-5)
    assert f["robust_accuracy"] is None


# -- the attack stage dispatches through the ATTACKS registry -----------------------------------


def test_default_identities_are_unchanged_by_the_registry_dispatch():
    """Hashes of the stage identity and of the pgd/autoattack entry settings, captured on the code
    before `--attack NAME` (637b125): existing robustness.json entries stay current."""
    from xairobust.provenance import config_hash
    from xairobust.stages.attack import AttackStage, _settings

    for kw, want in (({}, ("7544b5a2", "45754872", "479ac9eb")),
                     ({"norm": "l2", "eps": 0.5, "steps": 7, "restarts": 2}, ("608ccd20", "758b52a3", "cead0d7a")),
                     ({"autoattack": False, "n": None}, ("a2bf04a9", "2b0800a6", "1f1e5e8e"))):
        c = AttackConfig(**kw)
        got = (config_hash(AttackStage().identity(None, c)), config_hash(_settings(c, "pgd", c.n)),
               config_hash(_settings(c, "autoattack", c.n)))
        assert got == want, kw


def test_a_sub_attack_alone_equals_pyautoattack_run_directly(run):
    """`--attack apgd-ce`: one robustness.json entry whose robust accuracy is the reference
    package's APGD-CE with the standard version's settings on the same inputs and seed."""
    from pyautoattack import AutoAttack

    conf = AttackConfig(attack="apgd-ce", norm="linf", eps=0.1, n=16, batch_size=16, seed=2)
    data = json.loads(attack(run, conf, quiet=True).read_text())
    (entry,) = data["results"]
    assert entry["attack"] == "apgd-ce" and data["headline"] == "apgd-ce"
    model, _ = load_run(run)
    model.eval()
    split = get_dataset("digits", "test")
    x, y = split.inputs(torch.arange(16)), split.targets(torch.arange(16))
    ref = AutoAttack(model, attacks=["apgd-ce"], version="custom", norm="Linf", eps=0.1, seed=2, device="cpu")
    ref.verbose = False
    ref.apgd.n_restarts = 1  # the standard version's setting
    x_adv, _ = ref.run_standard_evaluation(x, y, batch_size=16)
    with torch.no_grad():
        want = float((model(x_adv).argmax(1) == y).float().mean())
    assert entry["robust_accuracy"] == pytest.approx(want, abs=1e-12)
    assert entry["robust_accuracy"] <= entry["clean_accuracy"]


def test_unknown_or_unfit_attacks_are_one_line_errors(run):
    from click.testing import CliRunner

    from xairobust.cli import main

    r = CliRunner().invoke(main, ["attack", "--run", str(run), "--attack", "apgd-cee"])
    assert r.exit_code != 0 and "Did you mean 'apgd-ce'" in str(r.exception) and "\n" not in str(r.exception)
    with pytest.raises(ConfigError, match="bim-regression has its own options"):
        AttackConfig(attack="bim-regression")
