"""xairobust.runtime: channels_last (speed only, same values) and bf16 (changes values, recorded).

Layout equality is registry-looped: every registered explainer and every registered metric gives
the same values (<= 1e-5 relative) on a channels_last copy of the model as on the NCHW original,
on identical draws -- so a new entry is covered without editing this file.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_engines import fixed_draws, make_input, make_metric, small_explainer

from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics.randomisation import QuantusRefused
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.runtime import check_precision, identity_part, model_precision, prepare_model, usual_layout

torch.set_num_threads(1)
SHAPE = (3, 8, 8)  # 3 channels: with C = 1 the two layouts have the same strides and the test could not fail


def _models():
    torch.manual_seed(0)
    nchw = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    cl = prepare_model(copy.deepcopy(nchw), SHAPE)
    conv = next(m for m in cl.modules() if isinstance(m, torch.nn.Conv2d))
    # the conversion really happened (else the equality below would be vacuous)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    return nchw, cl


@pytest.fixture(scope="module")
def models():
    return _models()


def _close(got, expected):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    scale = float(np.nanmax(np.abs(expected))) if np.isfinite(expected).any() else 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_explainer_gives_the_same_attributions_in_channels_last(name, models):
    nchw, cl = models
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = nchw(x).argmax(1)
    seeds = sample_seeds(0, torch.arange(5) * 7)
    background = torch.rand(12, *SHAPE, generator=torch.Generator().manual_seed(2))
    ref = small_explainer(name, background).attribute(nchw, x, t, seeds)
    got = small_explainer(name, background).attribute(cl, x, t, seeds)
    out = usual_layout(got)
    assert out.shape == ref.shape and out.is_contiguous()
    _close(out.detach().numpy(), ref.detach().numpy())


@pytest.mark.parametrize("explainer", ["saliency", "smoothgrad"])  # deterministic and stochastic re-explanation
@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_gives_the_same_scores_in_channels_last(name, explainer, models):
    nchw, cl = models
    ref_inp = make_input(nchw, SHAPE, explainer)
    got_inp = make_input(cl, SHAPE, explainer)
    got_inp.a = ref_inp.a  # identical maps: the metric's own passes are what is compared
    ref, new = make_metric(name, "native", points_per_pass=16), make_metric(name, "native", points_per_pass=16)
    fixed_draws(ref, ref_inp)
    new.noise_override, new.subsets_override = ref.noise_override, ref.subsets_override
    if hasattr(ref, "draws_override"):
        new.draws_override = ref.draws_override
    try:
        expected = ref.score(ref_inp)
    except QuantusRefused as err:
        pytest.skip(str(err))
    _close(new.score(got_inp), expected)


def test_layout_is_left_alone_where_it_does_not_apply():
    mlp = create_model("tiny_mlp", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3])
    before = [p.stride() for p in mlp.parameters()]
    prepare_model(mlp, (1, 8, 8))
    assert [p.stride() for p in mlp.parameters()] == before


def test_bf16_runs_the_model_in_bf16_and_returns_float32(models):
    nchw, _ = models
    bf = prepare_model(copy.deepcopy(nchw), SHAPE, precision="bf16")
    assert model_precision(bf) == "bf16" and model_precision(nchw) == "fp32"
    assert [n for n, _ in bf.named_modules()] == [n for n, _ in nchw.named_modules()]  # layer names kept (Grad-CAM)
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, got = nchw(x), bf(x)
        # the same as running the fp32 model under autocast, directly
        with torch.autocast("cpu", dtype=torch.bfloat16):
            direct = nchw(x).float()
    assert got.dtype == torch.float32
    assert torch.equal(got, direct)
    assert not torch.equal(got, ref)  # bf16 really changed the numbers
    # and a deep copy (randomisation metrics, manipulation) keeps the wrapper bound to the copy
    twin = copy.deepcopy(bf)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
        assert torch.equal(bf(x), got) and model_precision(twin) == "bf16"
        assert not torch.equal(twin(x), got)


def test_precision_values_and_identity():
    assert identity_part("fp32") == {} and identity_part("bf16") == {"precision": "bf16"}
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16, got 'fp16'"):
        check_precision("fp16", "score")


# --- the stages: identity, records, refusal --------------------------------------------------

# Identity hashes of the default configs, computed on main before --precision/--channels-last
# existed (29e2842): the layout and the fp32 default must leave every stored identity as it was.
PINNED = {"explain": "1d07ad37", "manipulate": "f3198cd7", "plan_score": "fb013ee4", "plan_explain": "4a3663ac",
          "plan_manipulate": "4a4863cf", "plan_visualize": "c5cec826"}


def _hashes(**kw):
    from xairobust.batch.plan import identity
    from xairobust.provenance import config_hash
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.manipulate import ManipulateConfig
    from xairobust.stages.score import ScoreConfig
    from xairobust.stages.visualize import VisualizeConfig

    return {
        "explain": config_hash(ExplainConfig(**kw).identity({"n_steps": 50})),
        "manipulate": config_hash(ManipulateConfig(**kw).identity({"n_steps": 50})),
        "plan_score": config_hash(identity(ScoreConfig(**kw))),
        "plan_explain": config_hash(identity(ExplainConfig(**kw))),
        "plan_manipulate": config_hash(identity(ManipulateConfig(**kw))),
        "plan_visualize": config_hash(identity(VisualizeConfig(**kw))),
    }


def test_layout_and_fp32_leave_identity_hashes_unchanged_and_bf16_changes_them():
    assert _hashes() == PINNED
    assert _hashes(channels_last=False) == PINNED
    assert _hashes(channels_last=False, precision="fp32") == PINNED
    bf = _hashes(precision="bf16")
    assert all(bf[k] != PINNED[k] for k in PINNED)


@pytest.mark.parametrize("stage", ["explain", "score", "manipulate", "visualize"])
def test_bad_precision_is_a_one_line_error_naming_the_option(stage):
    from xairobust import config as cfg
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.manipulate import ManipulateConfig
    from xairobust.stages.score import ScoreConfig
    from xairobust.stages.visualize import VisualizeConfig

    conf = {"explain": ExplainConfig, "score": ScoreConfig, "manipulate": ManipulateConfig, "visualize": VisualizeConfig}[stage]
    with pytest.raises(ConfigError) as err:
        cfg.build(conf, {"precision": "fp16"}, stage)
    assert f"{stage}: --precision must be one of fp32, bf16, got 'fp16'" in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_precision_exits_with_one_line(digits_run):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "xairobust", "score", "--model", str(digits_run), "--precision", "half"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--precision" in lines[0] and "half" in lines[0], proc.stderr


def test_explain_and_score_record_precision_and_layout_does_not_restage(digits_run, tmp_path):
    import json
    import shutil

    from xairobust.runs import load_tensors
    from xairobust.stages.explain import ExplainConfig, ExplainStage, explain
    from xairobust.stages.score import ScoreConfig, ScoreStage, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    base = dict(explainer="saliency", n=8, device="cpu")
    path = explain(run, ExplainConfig(**base), quiet=True)
    fp32 = load_tensors(path)["attributions"]
    stage = ExplainStage()
    assert stage.is_current(run, ExplainConfig(**base, channels_last=False))  # layout: the same result
    assert not stage.is_current(run, ExplainConfig(**base, precision="bf16"))
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["precision"] == "fp32"
    sc = dict(explainer="saliency", metrics="sparseness,faithfulness_estimate", device="cpu")
    score(run, ScoreConfig(**sc), quiet=True)
    assert ScoreStage().is_current(run, ScoreConfig(**sc, channels_last=False))
    assert json.loads((run / "scores" / "saliency.json").read_text())["precision"] == "fp32"

    explain(run, ExplainConfig(**base, precision="bf16"), quiet=True)
    bf = load_tensors(path)["attributions"]
    assert json.loads(path.with_suffix(".json").read_text())["precision"] == "bf16"
    # bf16 changes the numbers, but not beyond bf16's ~3 significant digits on a small net
    assert not torch.equal(bf, fp32)
    rel = (bf - fp32).flatten(1).norm(dim=1) / fp32.flatten(1).norm(dim=1)
    assert float(rel.max()) < 0.1
    score(run, ScoreConfig(**sc, precision="bf16"), quiet=True)
    doc = json.loads((run / "scores" / "saliency.json").read_text())
    assert doc["precision"] == "bf16" and doc["explainer_precision"] == "bf16"


@pytest.mark.parametrize("which", ["precision", "explainer_precision"])
def test_report_refuses_fp32_and_bf16_scores_in_one_table(tmp_path, which):
    from report_fake import fake_registry
    from test_report_floor import make

    from xairobust.report import ReportConfig, build_report

    a, b, _ = make(tmp_path)
    build_report([a, b], tmp_path / "ok", ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
    path = b / "scores" / "eg.json"
    doc = json.loads(path.read_text())
    doc[which] = "bf16"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"report: eg scores of .*std.* \(precision fp32\) and .*pgd.* \(precision .*bf16.*\) were"
                       r" computed at different precisions; re-run explain and score with the same --precision") as err:
        build_report([a, b], tmp_path / "r", ReportConfig(baseline="standard", figures=False), quiet=True, registry=fake_registry())
    assert "\n" not in str(err.value)
