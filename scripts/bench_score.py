"""Score-stage time per metric vs calling Quantus the documented way, values side by side (item 17).

For each metric, on the same inputs, targets and attributions (a run's attributions/ig):

* ``ours``: the registered metric (per-sample normalisation, seeded per-sample perturbations,
  re-explaining with the stored explainer and its parameters);
* ``quantus``: ``quantus.<Metric>(...)(model, x_batch, y_batch, a_batch, explain_func=quantus.explain,
  explain_func_kwargs={"method": "IntegratedGradients"})`` as in Quantus' README, with the
  same counts and radii but its own defaults otherwise (batch-max normalisation, the global
  numpy RNG seeded once, IG with 10 steps for re-explaining);
* ``quantus+ourIG``: the same documented call with our explainer as ``explain_func``, so the
  time difference to ``ours`` is only the wrapper's overhead.

    PYTHONPATH=. python scripts/bench_score.py --model runs/NAME [--n 64] [--metrics quick]

Without --model it trains a small digits run into a temporary directory first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from xairobust.metrics.base import MetricInput
from xairobust.stages.explain import ExplainConfig, build_explainer, explain, load_attributions
from xairobust.stages.score import ScoreConfig, build_metrics, make_explain

QUANTUS = {
    "max_sensitivity": "MaxSensitivity",
    "avg_sensitivity": "AvgSensitivity",
    "local_lipschitz_estimate": "LocalLipschitzEstimate",
    "faithfulness_correlation": "FaithfulnessCorrelation",
    "faithfulness_estimate": "FaithfulnessEstimate",
    "complexity": "Complexity",
    "sparseness": "Sparseness",
}


def quantus_kwargs(name: str, metric, inp: MetricInput) -> dict:
    """Our counts and radii in Quantus' own parameter names; everything else left at its default."""
    p = metric.params
    if name in ("max_sensitivity", "avg_sensitivity"):
        return {"nr_samples": p.nr_samples, "lower_bound": p.radius}
    if name == "local_lipschitz_estimate":
        return {"nr_samples": p.nr_samples, "perturb_std": p.perturb_std}
    if name in ("faithfulness_correlation", "faithfulness_estimate"):
        return metric.quantus_kwargs(inp, np.arange(len(inp.x))) | {"return_aggregate": False}
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run directory with attributions/ig (default: train a digits run)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--metrics", default="quick")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import quantus

    if args.model:
        run = Path(args.model)
    else:
        from xairobust.stages.train import TrainConfig, train

        run = train(TrainConfig(epochs=5, seed=0), Path(tempfile.mkdtemp()) / "run", quiet=True)
    explain(run, ExplainConfig(explainer="ig", n=args.n), quiet=True)
    tensors, meta = load_attributions(run, "ig")
    from xairobust.runs import load_run

    model, run_meta = load_run(run)
    device = torch.device("cpu")
    explainer = build_explainer("ig", meta["params"])
    vr = run_meta["dataset"]["info"].get("value_range")
    inp = MetricInput(
        model=model, x=tensors["inputs"][: args.n].numpy(), y=tensors["targets"][: args.n].numpy(),
        a=tensors["attributions"][: args.n].numpy(), indices=tensors["indices"][: args.n].numpy(),
        explain=make_explain(device, explainer, int(meta["seed"]), 0), seed=0, device=device,
        value_range=tuple(vr) if vr else None,
    )
    _, metrics = build_metrics(ScoreConfig(metrics=args.metrics, batch_size=args.batch_size))

    def our_ig(model, inputs, targets, **_):
        t = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        return explainer.attribute(model, t, torch.as_tensor(np.asarray(targets)), torch.zeros(len(t), dtype=torch.int64)).detach().numpy()

    print(f"run={run} n={len(inp.x)} metrics={args.metrics} batch={args.batch_size} threads={args.threads} ig={meta['params']}")
    header = f"{'metric':26s} {'ours s':>8s} {'quantus s':>10s} {'q+ourIG s':>10s}   {'ours mean':>10s} {'quantus mean':>12s} {'q+ourIG mean':>12s}"
    print(header)
    for name, metric in metrics.items():
        t0 = time.perf_counter()
        ours = metric.score(inp)
        t_ours = time.perf_counter() - t0
        results = []
        for explain_func, kw in ((quantus.explain, {"method": "IntegratedGradients"}), (our_ig, {})):
            q = getattr(quantus, QUANTUS[name])(disable_warnings=True, **quantus_kwargs(name, metric, inp))
            np.random.seed(0)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vals = q(model=model, x_batch=inp.x, y_batch=inp.y, a_batch=inp.a.copy(), device="cpu",
                         explain_func=explain_func, explain_func_kwargs=kw, batch_size=args.batch_size)
            results.append((time.perf_counter() - t0, float(np.nanmean(vals))))
        (tq, mq), (tq2, mq2) = results
        print(f"{name:26s} {t_ours:8.2f} {tq:10.2f} {tq2:10.2f}   {np.nanmean(ours):10.4f} {mq:12.4f} {mq2:12.4f}")


if __name__ == "__main__":
    main()
