"""xairobust.costs (score --dry-run): the points it predicts are the points the metrics run.

Independent check: a forward pre-hook on the model counts every point that goes through it, split
into fwd+bwd (grad enabled, input requires grad) and forward-only; the native engine's counts must
equal the estimate (up to the one-sample shape probe of the pass-size cap).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from test_engines import make_input

from xairobust.costs import metric_points
from xairobust.metrics.native import default_points_per_pass, points_per_input
from xairobust.models.base import create_model
from xairobust.stages.score import ScoreConfig, build_metrics

torch.set_num_threads(1)
OVER = {**{m: {"nr_samples": 4} for m in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate")},
        "faithfulness_correlation": {"nr_runs": 6}}


@pytest.mark.parametrize("explainer", ["saliency", "ig", "smoothgrad"])
def test_estimated_points_are_the_points_the_metrics_run(explainer):
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3]).eval()
    counts = {"fwd_bwd": 0, "fwd": 0}

    def hook(_m, args):
        x = args[0]
        counts["fwd_bwd" if torch.is_grad_enabled() and x.requires_grad else "fwd"] += len(x)

    inp = make_input(model, (1, 8, 8), explainer)
    default_points_per_pass(model, (1, 8, 8), torch.device("cpu"))  # the pass-size tuning probe: cached, not counted
    model.register_forward_pre_hook(hook)
    _, metrics = build_metrics(ScoreConfig(metrics="paper", metric_params=OVER))
    per_input = points_per_input(inp.explain.explainer)
    modelled, floors = 0, set()
    stochastic = bool(type(inp.explain.explainer).stochastic)
    for name, metric in metrics.items():
        counts.update(fwd_bwd=0, fwd=0)
        metric.score(inp)
        est = metric_points(name, metric, list(metrics), len(inp.x), (1, 8, 8), per_input, True, stochastic, floors)
        assert est is not None, f"{name}: a paper metric must be modelled"
        fb, f, _ = est
        assert counts["fwd_bwd"] == fb, (name, counts, est)
        assert f <= counts["fwd"] <= f + 1, (name, counts, est)  # + the cap's one-sample shape probe
        modelled += fb + f
    assert modelled > 0


def test_score_dry_run_prints_the_plan_and_scores_nothing(digits_run, tmp_path):
    from xairobust.stages.explain import ExplainConfig, explain

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    explain(run, ExplainConfig(explainer="saliency", n=5, device="cpu"), quiet=True)
    proc = subprocess.run([sys.executable, "-m", "xairobust", "score", "--model", str(run), "--explainer", "saliency",
                           "--dry-run", "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln.split() for ln in proc.stdout.splitlines() if ln.strip()}
    assert lines["max_sensitivity"][1:3] == ["1000", "0"]  # 5 samples x 200 perturbations x 1 gradient
    assert lines["local_lipschitz_estimate"][1:3] == ["1000", "0"]
    assert lines["avg_sensitivity"][1:3] == ["0", "0"]
    assert lines["faithfulness_correlation"][1:3] == ["0", str(5 * 101)]
    assert lines["total"][1] == "2000"
    assert not (run / "scores").exists()
