"""mer-attack (robustness.json, per-sample file, no-op re-run, errors) and mer-report (tables, t-tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mer_fixtures import make_soundtracks

from xairobust.attacks.bim_regression import BIMRegressionParams
from xairobust.errors import ConfigError
from xairobust.report import mer as report
from xairobust.stages.mer_attack import attack_regression_run
from xairobust.stages.train import TrainConfig, train


@pytest.fixture(scope="module")
def mer_runs(tmp_path_factory):
    """Two tiny models x 2 seeds on 20 generated clips (1 epoch each)."""
    root = tmp_path_factory.mktemp("merpipe")
    make_soundtracks(root, n=20, seconds=0.6)
    runs = root / "runs"
    for label, model in (("A2E", "a2e"), ("A2M2E", "a2b2e")):  # a2b2e stands in for A2M2E: no annotations needed
        for seed in (0, 1):
            conf = TrainConfig(dataset="soundtracks", dataset_kwargs={"cache_dir": str(root / "cache")}, model=model,
                               model_kwargs={"width": 0.125}, label=label, epochs=1, batch_size=8, optimizer="adam",
                               lr=5e-4, weight_decay=0.0, schedule="constant", seed=seed, data_dir=str(root))
            train(conf, runs / f"{label}_s{seed}", quiet=True)
    return root, runs


def test_attack_writes_consistent_robustness_entry(mer_runs):
    root, runs = mer_runs
    run = runs / "A2E_s0"
    params = BIMRegressionParams(max_iter=3)
    e = attack_regression_run(run, params, data_dir=str(root), quiet=True)
    rob = json.loads((run / "robustness.json").read_text())
    assert rob["headline"] == "bim-regression" and rob["clean_accuracy"] is None and rob["robust_accuracy"] is None
    assert rob["results"][-1] == json.loads(json.dumps(e))
    for key in ("mae_before", "mae_after", "delta_mae", "corr_before", "corr_after", "snr_db"):
        assert key in e
    from xairobust.runs import load_tensors

    s = load_tensors(run / e["file"])
    y, pc, pa = s["targets"].double(), s["pred_clean"].double(), s["pred_adv"].double()
    assert pc.shape == (2, 8) and e["n"] == 2
    assert e["mae_before"] == pytest.approx(float((pc - y).abs().mean()))
    assert e["mae_after"] == pytest.approx(float((pa - y).abs().mean()))
    assert e["delta_mae"] == pytest.approx(e["mae_after"] - e["mae_before"])
    assert e["mse_after"] > e["mse_before"]  # the attack increases the loss it ascends
    meta = json.loads((run / "run.json").read_text())
    assert e["mae_before"] == pytest.approx(meta["test"]["mae"])  # same clean numbers as training's
    assert e["linf_max"] <= 0.001 + 1e-6
    # SNR in the signal domain: to_signal undoes standardisation and log10(1 + .), i.e. gives back
    # the filtered magnitude spectrogram computed from the audio file independently
    from xairobust.data.audio import file_spectrogram
    from xairobust.data.base import get_dataset, get_source
    from xairobust.data.soundtracks import SoundtracksOptions, excerpt

    test = get_dataset("soundtracks", "test", root, cache_dir=str(root / "cache"))
    number = int(test.extras["number"][0])
    raw = excerpt(file_spectrogram(root / "mer-soundtracks" / "Set1" / f"{number:03d}.mp3"), number, SoundtracksOptions())
    mag = get_source("soundtracks").to_signal(test.x[:1], root, cache_dir=str(root / "cache"))
    np.testing.assert_allclose(mag[0, 0].numpy(), 10.0 ** raw.astype(np.float64) - 1, rtol=1e-5, atol=1e-6)
    assert e["snr_domain"] == "signal"
    assert e["snr_db"] == pytest.approx(float(s["snr_db"].mean()))


def test_attack_again_is_a_no_op_and_force_redoes_it(mer_runs):
    root, runs = mer_runs
    run = runs / "A2E_s1"
    params = BIMRegressionParams(max_iter=2)
    first = attack_regression_run(run, params, data_dir=str(root), quiet=True)
    mtime = (run / first["file"]).stat().st_mtime_ns
    again = attack_regression_run(run, params, data_dir=str(root), quiet=True)
    assert again == json.loads(json.dumps(first)) and (run / first["file"]).stat().st_mtime_ns == mtime
    other = attack_regression_run(run, BIMRegressionParams(max_iter=2, eps=0.002), data_dir=str(root), quiet=True)
    doc = json.loads((run / "robustness.json").read_text())
    tags = [r["tag"] for r in doc["results"]]
    assert tags == [first["tag"], other["tag"]]  # different radii are kept side by side
    # The contract: every entry names the weights it was computed on, and so does the file.
    from xairobust.runs import file_sha256
    from xairobust.stages.contract import STAGES, verify_chain

    sha = file_sha256(run / "model.safetensors")
    assert {r["provenance"]["inputs"]["weights"]["sha256"] for r in doc["results"]} == {sha}
    verify_chain(run / "robustness.json", run, "xairobust attack")
    stage = STAGES.get("bim-regression")()
    from xairobust.stages.mer_attack import BIMAttackConfig

    assert stage.is_current(run, BIMAttackConfig(max_iter=2, data_dir=str(root)))
    assert not stage.is_current(run, BIMAttackConfig(max_iter=3, data_dir=str(root)))


def test_classification_run_is_refused(digits_run):
    with pytest.raises(ConfigError, match="regression models.*--attack pgd"):
        attack_regression_run(digits_run, BIMRegressionParams(max_iter=1), quiet=True)


def test_cli_errors_are_one_line(digits_run, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "xairobust", "mer-attack", str(digits_run), "--max-iter", "1", "-q"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "regression models" in res.stderr
    res = subprocess.run(cmd[:4] + [str(tmp_path / "nope")], capture_output=True, text=True)
    assert res.returncode == 2 and "run directory not found" in res.stderr


def fake_run(label, seed, after, before, targets):
    pred_adv = targets + after[:, None]
    pred_clean = targets + before[:, None]
    entry = {"corr_before": 0.5 + 0.01 * seed, "mae_before": float(np.abs(before).mean()),
             "delta_mae": float(np.abs(after).mean() - np.abs(before).mean()), "corr_after": 0.1, "snr_db": 60.0}
    samples = {"targets": targets, "pred_adv": pred_adv, "pred_clean": pred_clean, "indices": np.arange(len(targets))}
    return report.MerRun(Path(f"/x/{label}_{seed}"), label, seed, entry, samples)


def test_paired_ttests_match_a_hand_computation():
    from scipy import stats

    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, (6, 8))
    runs = []
    for seed in (0, 1, 2):
        for label, shift in (("A2E", 0.3), ("A2B2E", 0.25), ("A2M2E", 0.1)):
            runs.append(fake_run(label, seed, shift + rng.uniform(0, 0.2, 6), rng.uniform(0, 0.05, 6), t))
    df = report.paired_tests(runs, "after")
    assert list(zip(df["a"], df["b"], strict=True)) == [("A2E", "A2M2E"), ("A2B2E", "A2M2E")]
    for _, row in df.iterrows():
        a = np.concatenate([np.abs(r.samples["pred_adv"] - t).mean(1) for r in runs if r.label == row["a"]])
        b = np.concatenate([np.abs(r.samples["pred_adv"] - t).mean(1) for r in runs if r.label == "A2M2E"])
        d = a - b
        t_hand = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
        p_hand = 2 * stats.t.sf(abs(t_hand), len(d) - 1)
        assert row["df"] == 17 and row["n"] == 18
        assert row["t"] == pytest.approx(t_hand, rel=1e-10)
        assert row["p"] == pytest.approx(p_hand, rel=1e-8)
        assert row["p_bonferroni"] == pytest.approx(min(1.0, 2 * p_hand), rel=1e-8)
    text = report.ttests_markdown(df)
    assert "t(17) = " in text


def test_table1_mean_and_population_std():
    t = np.zeros((2, 8))
    runs = [fake_run("A2E", s, np.full(2, 0.2), np.full(2, b), t) for s, b in ((0, 0.1), (1, 0.3))]
    df = report.table1(runs)
    row = df.iloc[0]
    assert row["system"] == "A2E" and row["seeds"] == 2
    assert row["mae_mean"] == pytest.approx(0.2) and row["mae_std"] == pytest.approx(0.1)  # ddof=0
    assert row["avg_corr_mean"] == pytest.approx(0.505)
    assert "0.20 ± 0.10" in report.table1_markdown(df)


def test_report_end_to_end(mer_runs, tmp_path):
    root, runs = mer_runs
    for run in sorted(runs.iterdir()):
        attack_regression_run(run, BIMRegressionParams(max_iter=2), data_dir=str(root), quiet=True)
    summary = report.write_report([runs], tmp_path / "rep", eps=0.001, scatter_models=("A2E", "A2M2E"))
    assert [r["seeds"] for r in summary["table1"]] == [2, 2]
    assert summary["ttests"][0]["a"] == "A2E" and summary["ttests"][0]["df"] == 3  # 2 seeds x 2 test excerpts
    for name in ("table1.csv", "table1.md", "table1.tex", "ttests.md", "figures/delta_mae_box.png",
                 "figures/true_vs_pred.pdf", "summary.json"):
        assert (tmp_path / "rep" / name).is_file(), name
    with pytest.raises(ConfigError, match="no run .* has a bim-regression result at eps 0.5"):
        report.write_report([runs], tmp_path / "rep2", eps=0.5)
    # without --eps: the radius attacked in most runs, even when one run also holds another radius
    attack_regression_run(runs / "A2E_s0", BIMRegressionParams(max_iter=1, eps=0.05), data_dir=str(root), quiet=True)
    assert {r.entry["eps"] for r in report.collect([runs])} == {0.001}
    torch.manual_seed(0)


def test_mer_configs_and_zoo_files_build():
    from xairobust import config as cfg

    root = Path(__file__).resolve().parents[1] / "configs"
    labels = {}
    for f in sorted((root / "mer").glob("*.yaml")):
        conf = cfg.build(TrainConfig, cfg.load_yaml(f), str(f))
        labels[conf.label] = (conf.model, conf.method)
    assert labels == {"A2E": ("a2e", "standard"), "A2B2E": ("a2b2e", "standard"), "A2M2E": ("a2m2e", "a2m2e_joint"),
                      "aA2E": ("a2e", "bim_adv"), "aA2B2E": ("a2b2e", "bim_adv")}
    from xairobust.batch.zoo import load_zoo
    from xairobust.report.mer import MerReportConfig
    from xairobust.stages.mer_attack import BIMAttackConfig

    for name, n_seeds in (("mer", 10), ("mer_cpu", 2)):
        zoo = load_zoo(name)
        assert zoo.seeds == n_seeds or len(zoo.seeds) == n_seeds
        conf = cfg.build(BIMAttackConfig, zoo.attack, name)
        assert (conf.eps, conf.step_size, conf.corr_threshold) == (0.001, 0.002, -1.0)
        for rep in zoo.reports:
            cfg.build(MerReportConfig, rep.config, name)


def test_batch_stage_functions(mer_runs, tmp_path):
    from xairobust.report.mer import MerReportConfig, build_report
    from xairobust.stages.mer_attack import BIMAttackConfig, attack_stage

    root, runs = mer_runs
    dirs = sorted(runs.iterdir())
    for run in dirs:
        path = attack_stage(run, BIMAttackConfig(max_iter=2, data_dir=str(root)), quiet=True)
        assert path == run / "robustness.json" and path.is_file()
    files = build_report(dirs, tmp_path / "rep", MerReportConfig(eps=0.001, pairs=["A2E:A2M2E"]))
    assert all(f.is_file() for f in files)


def test_mer_report_cli(mer_runs, tmp_path):
    from click.testing import CliRunner

    from xairobust.cli import main

    root, runs = mer_runs
    for run in sorted(runs.iterdir()):
        attack_regression_run(run, BIMRegressionParams(max_iter=2), data_dir=str(root), quiet=True)
    res = CliRunner().invoke(main, ["mer-report", str(runs), "--out", str(tmp_path / "r"), "--eps", "0.001",
                                    "--scatter-models", "A2E,A2M2E"])
    assert res.exit_code == 0, res.output
    assert "| A2E |" in res.output and "t(3) = " in res.output
    res = CliRunner().invoke(main, ["mer-report", str(runs), "--out", str(tmp_path / "r2"), "--eps", "0.001",
                                    "--pairs", "A2M2E:A2E", "--ttest-on", "delta"])
    assert res.exit_code == 0, res.output
    assert "A2M2E vs. A2E (ΔMAE per excerpt, 2 seed(s)): t(3)" in res.output
    res = CliRunner().invoke(main, ["mer-report", str(runs), "--out", str(tmp_path / "r3"), "--pairs", "A2E"])
    assert isinstance(res.exception, ConfigError)


def test_attack_command_dispatches_bim_regression(mer_runs, digits_run):
    from click.testing import CliRunner

    from xairobust.cli import main

    root, runs = mer_runs
    run = runs / "A2M2E_s1"
    res = CliRunner().invoke(main, ["attack", "--run", str(run), "--attack", "bim-regression", "--eps", "2/1000",
                                    "--steps", "2", "--corr-threshold", "none", "--data-dir", str(root), "-q"])
    assert res.exit_code == 0, res.output
    entry = [r for r in json.loads((run / "robustness.json").read_text())["results"] if r["eps"] == 0.002][0]
    assert entry["steps"] == 2 and entry["params"]["corr_threshold"] is None and entry["linf_max"] <= 0.002 + 1e-6
    res = CliRunner().invoke(main, ["attack", "--run", str(run), "--attack", "bim-regression", "--restarts", "2"])
    assert isinstance(res.exception, ConfigError) and "--restarts does not apply" in str(res.exception)
    res = CliRunner().invoke(main, ["attack", "--run", str(digits_run), "--max-iter", "3"])
    assert isinstance(res.exception, ConfigError) and "unknown option --max-iter" in str(res.exception)


def test_one_bim_entry_point_for_attack_mer_attack_and_the_batch_stage(mer_runs):
    """issue 12 item 6: the three ways in share one config and its defaults, so each one's result
    is the others' no-op (it was three entry points with defaults in four places)."""
    from click.testing import CliRunner

    from xairobust.cli import main
    from xairobust.stages.contract import STAGES
    from xairobust.stages.mer_attack import BIMAttackConfig

    root, runs = mer_runs
    run = runs / "A2M2E_s0"
    res = CliRunner().invoke(main, ["attack", "--run", str(run), "--attack", "bim-regression", "--max-iter", "2",
                                    "--data-dir", str(root), "-q"])
    assert res.exit_code == 0, res.output
    before = (run / "robustness.json").read_bytes()
    res = CliRunner().invoke(main, ["mer-attack", str(run), "--max-iter", "2", "--data-dir", str(root), "-q"])
    assert res.exit_code == 0, res.output
    assert (run / "robustness.json").read_bytes() == before  # the same attack: nothing recomputed
    assert STAGES.get("bim-regression")().is_current(run, BIMAttackConfig(max_iter=2, data_dir=str(root)))
