"""Control explainers (issue 18): Sobel against scipy, random seeded and model-independent,
constant, and the controls through explain -> score."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS

CONTROLS = ("random", "sobel", "constant")


def make(name: str):
    cls = EXPLAINERS.get(name)
    return cls(cfg.build(cls.Params, {}, name))


def models():
    torch.manual_seed(0)
    a = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    torch.manual_seed(1)
    b = create_model("digits_cnn", num_outputs=10, in_channels=3, mean=[0.5] * 3, std=[0.3] * 3).eval()
    return a, b


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 5, 7)])
def test_sobel_is_scipy_sobel_magnitude_per_channel(shape):
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    got = make("sobel").attribute(None, x, torch.zeros(4, dtype=torch.int64), sample_seeds(0, torch.arange(4)))
    expected = np.empty(x.shape)
    for i in range(len(x)):
        for c in range(shape[0]):
            img = x[i, c].double().numpy()
            expected[i, c] = np.hypot(scipy.ndimage.sobel(img, axis=0), scipy.ndimage.sobel(img, axis=1))
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-6, atol=1e-6)
    assert got.dtype == x.dtype


def test_sobel_of_a_constant_image_is_zero_and_of_a_step_is_the_edge():
    x = torch.zeros(1, 1, 6, 6)
    x[..., 3:] = 1.0  # a vertical step between columns 2 and 3
    a = make("sobel").attribute(None, x, torch.zeros(1, dtype=torch.int64), sample_seeds(0, torch.arange(1)))[0, 0]
    assert torch.equal(a[:, [0, 5]], torch.zeros(6, 2))
    torch.testing.assert_close(a[:, 2:4], torch.full((6, 2), 4.0))  # 1 + 2 + 1 across the step
    with pytest.raises(ConfigError, match="sobel: needs image inputs"):
        make("sobel").attribute(None, torch.rand(2, 1, 16), torch.zeros(2, dtype=torch.int64), sample_seeds(0, torch.arange(2)))


@pytest.mark.parametrize("name", CONTROLS)
def test_controls_ignore_the_model_and_the_target(name):
    m1, m2 = models()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    seeds = sample_seeds(0, torch.arange(5) * 7)
    a1 = make(name).attribute(m1, x, torch.zeros(5, dtype=torch.int64), seeds)
    a2 = make(name).attribute(m2, x, torch.arange(5), seeds)
    assert torch.equal(a1, a2) and a1.shape == x.shape
    assert EXPLAINERS.meta(name)["control"] is True


def test_random_is_seeded_per_sample_uniform_and_independent_of_batching():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.zeros(6, dtype=torch.int64)
    seeds = sample_seeds(3, torch.arange(6) * 5)
    r = make("random")
    full = r.attribute(None, x, t, seeds)
    parts = torch.cat([r.attribute(None, x[i : i + 1], t[i : i + 1], seeds[i : i + 1]) for i in range(6)])
    assert torch.equal(full, parts)
    # the draw is the sample seed's own: torch's uniform_ on a CPU generator seeded with it
    g = torch.Generator().manual_seed(int(seeds[2]))
    assert torch.equal(full[2], torch.empty(1, 8, 8).uniform_(0.0, 1.0, generator=g))
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(r.attribute(None, x, t, seeds + 1), full)
    assert 0 <= float(full.min()) and float(full.max()) <= 1
    # it does not depend on the input either
    assert torch.equal(r.attribute(None, torch.zeros_like(x), t, seeds), full)
    assert EXPLAINERS.get("random").stochastic and not EXPLAINERS.get("sobel").stochastic


def test_constant_is_all_ones():
    x = torch.rand(3, 3, 4, 4)
    a = make("constant").attribute(None, x, torch.zeros(3, dtype=torch.int64), sample_seeds(0, torch.arange(3)))
    assert torch.equal(a, torch.ones_like(x))


def test_controls_through_explain_and_score(digits_run, tmp_path):
    import csv
    import shutil

    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    means = {}
    for name in CONTROLS:
        explain(run, ExplainConfig(explainer=name, n=4), quiet=True)
        path = score(run, ScoreConfig(explainer=name, metrics="max_sensitivity,complexity,sparseness",
                                      metric_params={"max_sensitivity": {"nr_samples": 3}}), quiet=True)
        rows = list(csv.DictReader(path.read_text().splitlines()))
        assert len(rows) == 12
        means[name] = {m: np.mean([float(r["value"]) for r in rows if r["metric"] == m]) for m in ("max_sensitivity", "complexity", "sparseness")}
    # closed forms: a constant map has maximal entropy log(64) and Gini 0, and does not move
    assert means["constant"]["complexity"] == pytest.approx(np.log(64), rel=1e-9)
    assert means["constant"]["sparseness"] == pytest.approx(0.0, abs=1e-9)
    assert means["constant"]["max_sensitivity"] == 0.0
    # fresh uniform noise at every re-explanation: ||u - u'|| / ||u|| is far from 0
    assert means["random"]["max_sensitivity"] > 0.5


def test_quantus_engine_refuses_the_constant_control_in_one_line(digits_run, tmp_path):
    import shutil

    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("attributions", "scores"))
    explain(run, ExplainConfig(explainer="constant", n=2), quiet=True)
    with pytest.raises(ConfigError, match="--engine quantus cannot score explainer 'constant'"):
        score(run, ScoreConfig(explainer="constant", metrics="complexity", engine="quantus"), quiet=True)
