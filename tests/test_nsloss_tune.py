"""The lambda-selection protocol: NsLoss_0, lambda_0 and the geometric binary search."""

from __future__ import annotations

import json
import math

import pytest
import torch

import xairobust.stages.tune_lambda as tl
from xairobust.data.base import get_dataset
from xairobust.runs import load_run
from xairobust.training.nsloss import NsLossParams, nsloss_value


def test_search_brackets_the_largest_acceptable_lambda(digits_run, tmp_path, monkeypatch):
    limit = {}

    def fake_epoch(model, method, split, conf, ctx, data_gen, window):
        lam = method.params.lam
        ce_bits = math.log2(10) if lam > limit["value"] else 1.0  # collapses to a random guess above the limit
        return {"ce_per_batch_nats": [], "max_window_ce_nats": ce_bits * math.log(2),
                "max_window_ce_bits": ce_bits, "final_window_ce_bits": ce_bits}

    monkeypatch.setattr(tl, "_one_epoch", fake_epoch)
    # First pass only to learn lambda_0, then put the limit at 3 * lambda_0.
    limit["value"] = math.inf
    _, first = tl.tune_lambda(str(digits_run), {"batches": 2, "iterations": 1, "eps_ns": "0.5", "out": str(tmp_path / "a.json")}, quiet=True)
    lam0 = first["lambda0"]
    limit["value"] = 3 * lam0
    k = 6
    path, res = tl.tune_lambda(str(digits_run), {"batches": 2, "iterations": k, "eps_ns": "0.5", "out": str(tmp_path / "b.json")}, quiet=True)
    assert res["lambda0"] == pytest.approx(lam0)
    lams = [t["lambda"] for t in res["trace"]]
    assert lams[0] == pytest.approx(lam0)  # starts at lambda_0, the geometric middle of [l0/10, 10 l0]
    assert all(lam0 / 10 <= v <= 10 * lam0 for v in lams)
    chosen = res["chosen_lambda"]
    width = math.exp(math.log(100) / 2**k)  # bracket ratio after k halvings in log space
    assert chosen <= 3 * lam0 < chosen * width * 1.0000001
    assert json.loads(path.read_text())["chosen_lambda"] == chosen


def test_nsloss0_and_lambda0_follow_the_paper(digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "_one_epoch", lambda *a, **k: {"ce_per_batch_nats": [], "max_window_ce_nats": 0.0,
                                                          "max_window_ce_bits": 0.0, "final_window_ce_bits": 0.0})
    _, res = tl.tune_lambda(str(digits_run), {"batches": 3, "iterations": 1, "eps_ns": "0.5", "batch_size": 32,
                                              "seed": 4, "out": str(tmp_path / "t.json")}, quiet=True)
    # Recompute NsLoss_0 independently: same seeded batch draws, train then test split (no val on digits).
    model, _ = load_run(digits_run)
    gen = torch.Generator().manual_seed(4)
    params = NsLossParams(eps_ns=0.5)
    values = []
    for split_name in ("train", "test"):
        split = get_dataset("digits", split_name)
        for _ in range(3):
            idx = torch.randperm(len(split), generator=gen)[:32]
            values.append(nsloss_value(model, split.inputs(idx), params, gen))
    assert res["nsloss0"] == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert res["lambda0"] == pytest.approx(math.log2(10) / res["nsloss0"], rel=1e-12)
    assert set(res["nsloss0_batches"]) == {"train", "test"}
