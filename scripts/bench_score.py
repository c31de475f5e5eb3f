"""Score-stage speed: native engine vs Quantus as documented vs the limit, per metric and suite.

On one model (``--models digits_cnn,cifar_cnn``), the same inputs, targets and IG attributions:

* ``native``: the registered metrics with ``engine="native"`` (the score stage's default), the
  suite with Max/Avg-Sensitivity sharing one set of perturbed explanations;
* ``quantus``: ``quantus.<Metric>(...)(model, x_batch, y_batch, a_batch, explain_func=IG,
  batch_size=B)`` as Quantus' README shows, with the same IG (our explainer, same steps, the
  convergence delta off), the same counts and radii;
* ``limit``: the model passes a metric needs (IG: samples x perturbations x steps fwd+bwd;
  faithfulness: forwards) divided by the raw throughput of the model at the best batch size
  (fwd+bwd and fwd-only probes over batch sizes 16..1024), measured in the same run.

Repeats are interleaved (probe, native, quantus, probe, ...); the minimum per cell is reported.
Writes a table to stdout and JSON to ``--out``.

    PYTHONPATH=. nice -n 10 python scripts/bench_score.py --n 4 --threads 1 --out results/bench_score/cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.metrics import native
from xairobust.metrics.base import MetricInput
from xairobust.metrics.presets import PAPER_METRICS
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS
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
CLOCK = {"fn": time.perf_counter}


def clock() -> float:
    """Wall time, or with --clock cpu the process CPU time (1 thread on a shared, loaded CPU:
    other processes' load then does not count; cache contention still does)."""
    return CLOCK["fn"]()


SENSITIVITY = ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate")
SHAPES = {"digits_cnn": (1, 8, 8), "cifar_cnn": (3, 32, 32), "resnet18_cifar": (3, 32, 32)}


def make_input(model_name: str, n: int, n_steps: int, device: torch.device, data: str | None, run: str | None) -> MetricInput:
    shape = SHAPES.get(model_name)
    if run:
        from xairobust.runs import load_run

        model, meta = load_run(run)
        shape = tuple(meta["dataset"]["info"]["input_shape"])
    else:
        torch.manual_seed(0)
        model = create_model(model_name, num_outputs=10, in_channels=shape[0], mean=[0.5] * shape[0], std=[0.25] * shape[0])
    model.to(device).eval()
    x = None
    if data and shape == (3, 32, 32):
        from xairobust.data.base import get_dataset

        x = get_dataset("cifar10", "test", data).inputs(torch.arange(n))
    elif shape == (1, 8, 8):
        from xairobust.data.base import get_dataset

        x = get_dataset("digits", "test").inputs(torch.arange(n))
    if x is None:
        x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    cls = EXPLAINERS.get("ig")
    explainer = cls(cfg.build(cls.Params, {"n_steps": n_steps}, "ig"))
    explainer.want_delta = False
    indices = torch.arange(n)
    a = explainer.attribute(model, x, y, sample_seeds(0, indices))
    return MetricInput(model=model, x=x.cpu().numpy(), y=y.cpu().numpy(), a=a.detach().cpu().numpy(), indices=indices.numpy(),
                       explain=make_explain(device, explainer, 0, 0), seed=0, device=device, value_range=(0.0, 1.0))


def probe(model, shape, device, sizes=(16, 32, 64, 128, 256, 512, 1024), seconds=0.6) -> dict:
    """Best points/s of fwd+bwd (input gradient, as IG) and of forward only, over batch sizes."""
    out = {"fwd_bwd": {}, "fwd": {}}
    for bs in sizes:
        x = torch.rand((bs, *shape), device=device)
        t = torch.zeros(bs, dtype=torch.int64, device=device)
        for kind in ("fwd_bwd", "fwd"):
            done, start = 0, clock()
            while True:
                if kind == "fwd_bwd":
                    xr = x.detach().requires_grad_()
                    torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)
                else:
                    with torch.no_grad():
                        model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                done += bs
                if clock() - start > seconds and done >= 2 * bs:
                    break
            out[kind][bs] = done / (clock() - start)
    return {k: {"best_rate": max(v.values()), "best_batch": max(v, key=v.get), "rates": v} for k, v in out.items()}


def required_points(name: str, metric, inp: MetricInput, n_steps: int) -> tuple[int, int]:
    """(fwd+bwd points, forward points) the metric needs at the minimum."""
    n = len(inp.x)
    p = metric.params
    d = int(np.prod(inp.x.shape[1:]))
    if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"):
        return n * p.nr_samples * n_steps, 0
    if name == "faithfulness_correlation":
        return 0, n * (p.nr_runs + 1)
    if name == "faithfulness_estimate":
        return 0, n * (d // metric.step(tuple(inp.x.shape[1:])) + 1)
    return 0, 0


def quantus_call(name: str, metric, inp: MetricInput, batch_size: int):
    import quantus

    from xairobust.metrics._quantus import normalise_per_sample

    p = metric.params
    kw: dict = {"disable_warnings": True, "display_progressbar": False, "return_aggregate": False, "normalise_func": normalise_per_sample}
    if name in ("max_sensitivity", "avg_sensitivity"):
        kw |= {"nr_samples": p.nr_samples, "lower_bound": p.radius}
    elif name == "local_lipschitz_estimate":
        kw |= {"nr_samples": p.nr_samples, "perturb_std": p.perturb_std}
    elif name in ("faithfulness_correlation", "faithfulness_estimate"):
        kw |= metric.quantus_kwargs(inp, np.arange(len(inp.x)))
    q = getattr(quantus, QUANTUS[name])(**kw)
    explainer = inp.explain.explainer
    dev = inp.device

    def ig(model, inputs, targets, **_):
        t = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=dev)
        return explainer.attribute(model, t, torch.as_tensor(np.asarray(targets), device=dev), torch.zeros(len(t), dtype=torch.int64)).detach().cpu().numpy()

    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return q(model=inp.model, x_batch=inp.x, y_batch=inp.y, a_batch=inp.a.copy(), device=str(dev),
                 explain_func=ig if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate") else None,
                 batch_size=batch_size)


def bench_model(model_name: str, args, device) -> dict:
    inp = make_input(model_name, args.n, args.n_steps, device, args.data_dir, args.run if model_name == args.run_model else None)
    shape = tuple(inp.x.shape[1:])
    ppp = args.points_per_pass or native.default_points_per_pass(inp.model, shape, device)
    rows: dict[str, dict] = {m: {"native_s": [], "quantus_s": []} for m in PAPER_METRICS}
    rows["suite"] = {"native_s": [], "quantus_s": []}
    probes = []
    sizes = (16, 32, 64, 128, 256, 512, 1024) if device.type == "cpu" else (64, 256, 1024, 2048, 4096)
    sizes = tuple(b for b in sizes if b <= args.probe_max)
    over = {m: {"nr_samples": args.nr_samples} for m in SENSITIVITY} if args.nr_samples else {}
    for rep in range(args.repeats):
        _, metrics = build_metrics(ScoreConfig(metrics="paper", metric_params=over, batch_size=args.batch_size, points_per_pass=ppp))
        for name, metric in metrics.items():  # interleaved per metric: probe, native, quantus
            if name in SENSITIVITY or rep == 0:
                probes.append(probe(inp.model, shape, device, sizes, seconds=0.25))
            t0 = clock()
            metric.score(inp)  # native (avg_sensitivity reads max_sensitivity's shared draws)
            rows[name]["native_s"].append(clock() - t0)
            if name in args.skip_quantus:
                continue
            sub, scale = inp, 1.0
            if args.quantus_n and args.quantus_n < len(inp.x) and name in SENSITIVITY:
                k = args.quantus_n  # timed on the first k samples, scaled to n (per-sample cost)
                sub = dataclasses.replace(inp, x=inp.x[:k], y=inp.y[:k], a=inp.a[:k], indices=inp.indices[:k])
                scale = len(inp.x) / k
            t0 = clock()
            quantus_call(name, metric, sub, args.batch_size)
            rows[name]["quantus_s"].append((clock() - t0) * scale)
        rows["suite"]["native_s"].append(sum(rows[m]["native_s"][-1] for m in metrics))
        if not args.skip_quantus:
            rows["suite"]["quantus_s"].append(sum(rows[m]["quantus_s"][-1] for m in metrics))
        print(f"  {model_name} repeat {rep + 1}/{args.repeats} done", flush=True)
    fb = max(p["fwd_bwd"]["best_rate"] for p in probes)
    fw = max(p["fwd"]["best_rate"] for p in probes)
    _, metrics = build_metrics(ScoreConfig(metrics="paper", metric_params=over))
    total_fb = total_f = 0
    for name, metric in metrics.items():
        pfb, pf = required_points(name, metric, inp, args.n_steps)
        if name == "avg_sensitivity":
            suite_fb = 0  # shared with max_sensitivity in the suite
        else:
            suite_fb = pfb
        total_fb += suite_fb
        total_f += pf
        rows[name]["limit_s"] = pfb / fb + pf / fw
        rows[name]["points"] = {"fwd_bwd": pfb, "fwd": pf}
    rows["suite"]["limit_s"] = total_fb / fb + total_f / fw
    rows["suite"]["points"] = {"fwd_bwd": total_fb, "fwd": total_f}
    for r in rows.values():
        r["native_best_s"] = min(r["native_s"]) if r["native_s"] else None
        r["quantus_best_s"] = min(r["quantus_s"]) if r["quantus_s"] else None
        nb, qb, lim = r["native_best_s"], r["quantus_best_s"], r.get("limit_s", 0)
        r["speedup_vs_quantus"] = qb / nb if nb and qb else None
        r["native_pct_of_limit"] = 100 * lim / nb if nb and lim else None
        r["quantus_pct_of_limit"] = 100 * lim / qb if qb and lim else None
    rows["avg_sensitivity"]["note"] = "native: reads max_sensitivity's perturbed explanations (shared draws); its time is in max_sensitivity"
    return {"model": model_name, "n": args.n, "nr_samples": args.nr_samples or 200, "quantus_n": args.quantus_n or args.n, "ig_steps": args.n_steps, "points_per_pass": ppp, "batch_size": args.batch_size,
            "probe_best": {"fwd_bwd_points_per_s": fb, "fwd_points_per_s": fw,
                           "fwd_bwd_best_batch": probes[-1]["fwd_bwd"]["best_batch"]},
            "probes": probes, "metrics": rows}


def table(res: dict) -> str:
    lines = [f"{res['model']}: n={res['n']} perturbations={res['nr_samples']} IG steps={res['ig_steps']} points/pass={res['points_per_pass']} "
             f"probe best fwd+bwd {res['probe_best']['fwd_bwd_points_per_s']:.0f} pts/s (batch {res['probe_best']['fwd_bwd_best_batch']}),"
             f" fwd {res['probe_best']['fwd_points_per_s']:.0f} pts/s",
             f"{'metric':26s} {'native s':>9s} {'quantus s':>10s} {'limit s':>8s} {'speedup':>8s} {'native%lim':>10s} {'quantus%lim':>11s}"]
    for name, r in res["metrics"].items():
        if name == "avg_sensitivity":
            r = {**r, "native_best_s": None, "speedup_vs_quantus": None, "native_pct_of_limit": None}
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"{name:26s} {f(r['native_best_s'], '9.2f')} {f(r['quantus_best_s'], '10.2f')} {f(r.get('limit_s'), '8.2f')}"
                     f" {f(r['speedup_vs_quantus'], '8.2f')} {f(r['native_pct_of_limit'], '10.0f')} {f(r['quantus_pct_of_limit'], '11.0f')}")
    lines.append("avg_sensitivity (native): shares max_sensitivity's perturbed explanations; its time is counted there")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn,cifar_cnn")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--n-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--points-per-pass", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py (real CIFAR inputs)")
    ap.add_argument("--run", default=None, help="a trained run directory to use for --run-model")
    ap.add_argument("--run-model", default="cifar_cnn")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None, help="cpu: process CPU time (default on CPU), wall: wall time (default on GPU)")
    ap.add_argument("--nr-samples", type=int, default=0, help="perturbations of the sensitivity metrics (default: paper's 200)")
    ap.add_argument("--probe-max", type=int, default=4096, help="largest batch size the limit probe tries")
    ap.add_argument("--quantus-n", type=int, default=0, help="time Quantus' sensitivity metrics on this many samples, scaled to n")
    ap.add_argument("--skip-quantus", default="", help="comma-separated metrics not to time through Quantus")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "bench_score.json"))
    args = ap.parse_args()
    args.skip_quantus = set(filter(None, args.skip_quantus.split(",")))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    CLOCK["fn"] = time.process_time if args.clock == "cpu" else time.perf_counter
    results = {"clock": args.clock, "host": platform.node(), "threads": args.threads, "device": str(device), "torch": torch.__version__, "models": []}
    for name in args.models.split(","):
        res = bench_model(name, args, device)
        results["models"].append(res)
        print(table(res), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
