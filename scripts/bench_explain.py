"""Explain throughput against the machine's limits (issue 4 item 17, issue 20 item 3).

For each model (``--models digits_cnn,cifar_cnn,resnet18_cifar``, untrained, seeded; or a trained
``--run``), in one run:

* the limits (scripts/bench_limits.py): the best raw fwd+bwd rate over {nchw, channels_last} x
  {fp32, bf16} x batch sizes (and torch.compile's with ``--compile``), the FLOPs per point, and a
  dense-matmul probe per dtype as the practical peak;
* every explainer of ``--explainers`` in each ``--precisions`` (channels_last, as the explain
  stage runs it), B samples per call: its rate in model points/s (IG: inputs x n_steps; SHAP/EG:
  inputs x n_samples; gradients: inputs) and its % of each limit -- of the best fp32 layout's raw
  rate, of the same precision's raw rate, of the best raw rate of any cell, and of the matmul peak.

Explainer timings are the minimum of ``--reps`` calls, interleaved across precisions; process CPU
time on CPU. Keep runs short on a shared machine:

    PYTHONPATH=. nice -n 10 python scripts/bench_explain.py --models digits_cnn,cifar_cnn,resnet18_cifar --out results/bench_explain/cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_limits as bl  # noqa: E402

from xairobust import config as cfg  # noqa: E402
from xairobust.explain.base import sample_seeds  # noqa: E402
from xairobust.metrics.native import points_per_input  # noqa: E402
from xairobust.models.base import create_model  # noqa: E402
from xairobust.registry import EXPLAINERS  # noqa: E402

SHAPES = {"digits_cnn": (1, 8, 8), "cifar_cnn": (3, 32, 32), "resnet18_cifar": (3, 32, 32)}
SIZES = {"digits_cnn": (64, 256, 1024), "cifar_cnn": (32, 64, 128), "resnet18_cifar": (16, 32, 64)}


def build(name: str, steps: int, samples: int, background: torch.Tensor):
    cls = EXPLAINERS.get(name)
    fields = getattr(cls.Params, "__dataclass_fields__", {})
    params = {k: v for k, v in {"n_steps": steps, "n_samples": samples}.items() if k in fields}
    e = cls(cfg.build(cls.Params, params, name), background)
    if hasattr(e, "want_delta"):
        e.want_delta = False  # IG's convergence delta: an extra forward the explain stage does not need either
    return e


def bench_model(model_name: str, args, device: torch.device) -> dict:
    if args.run:
        from xairobust.runs import load_run

        model, meta = load_run(args.run, device)
        shape, k = tuple(meta["dataset"]["info"]["input_shape"]), int(meta["dataset"]["info"]["num_outputs"])
    else:
        shape, k = SHAPES[model_name], 10
        torch.manual_seed(0)
        model = create_model(model_name, num_outputs=k, in_channels=shape[0], mean=[0.5] * shape[0], std=[0.25] * shape[0])
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    print(f"{model_name}: limits", flush=True)
    lim = bl.limits(model, shape, device, SIZES.get(model_name, (32, 64, 128)), seconds=args.probe_seconds, compile=tuple(p for p in args.compile.split(",") if p))
    g = torch.Generator().manual_seed(0)
    B = args.batch if args.batch else max(1, 64 // (8 if model_name == "resnet18_cifar" else 1))
    x = torch.rand(B, *shape, generator=g).to(device)
    t = torch.randint(0, k, (B,), generator=g).to(device)
    seeds = sample_seeds(0, torch.arange(B))
    background = torch.rand(32, *shape, generator=g).to(device)
    models = {p: bl.variant(model, shape, "channels_last", p) for p in args.precisions}
    rows: dict[str, dict] = {}
    for name in args.explainers:
        steps = args.steps if model_name != "resnet18_cifar" else max(4, args.steps // 5)
        e = build(name, steps, args.shap_samples if model_name != "resnet18_cifar" else max(2, args.shap_samples // 5), background)
        if hasattr(e, "chunk_size"):
            e.chunk_size = B
        points = B * points_per_input(e)
        times: dict[str, list[float]] = {p: [] for p in args.precisions}
        for _ in range(args.reps):
            for p, m in models.items():  # interleaved: the machine's load hits both precisions alike
                t0 = bl.clock()
                e.attribute(m, x, t, seeds)
                bl._sync(device)
                times[p].append(bl.clock() - t0)
        row = {"points": points, "points_per_input": points_per_input(e)}
        for p in args.precisions:
            best = min(times[p])
            row[p] = {"seconds": best, "rate": points / best, **bl.shares(points, 0, best, lim, p)}
        rows[name] = row
        print(f"  {name}: " + ", ".join(f"{p} {row[p]['rate']:.0f} pts/s ({row[p]['pct_raw_fp32']:.0f} % of best fp32 raw,"
                                          f" {row[p]['pct_raw_same_precision']:.0f} % of {p} raw)" for p in args.precisions), flush=True)
    return {"model": model_name, "batch": B, "limits": lim, "explainers": rows}


def table(res: dict, precisions: list[str]) -> str:
    lines = [bl.limits_table(res["model"], res["limits"]),
             f"  {'explainer':20s} {'prec':5s} {'pts/s':>9s} {'GFLOP/s':>8s} {'%raw fp32':>9s} {'%raw same':>9s} {'%raw best':>9s} {'%peak':>6s}"]
    for name, row in res["explainers"].items():
        for p in precisions:
            r = row[p]
            lines.append(f"  {name:20s} {p:5s} {r['rate']:9.0f} {r['gflops']:8.1f} {r['pct_raw_fp32']:9.0f} {r['pct_raw_same_precision']:9.0f}"
                         f" {r['pct_raw_best']:9.0f} {r['pct_peak']:6.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn,cifar_cnn,resnet18_cifar")
    ap.add_argument("--run", help="a trained run directory (its model replaces --models)")
    ap.add_argument("--explainers", default="ig,saliency,input_x_gradient,smoothgrad,gradient_shap,expected_gradients")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=0, help="samples per call (default 64; 8 for resnet18_cifar)")
    ap.add_argument("--steps", type=int, default=20, help="IG n_steps (resnet18_cifar: a fifth)")
    ap.add_argument("--shap-samples", type=int, default=20, help="n_samples of the sampling explainers (resnet18_cifar: a fifth)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--probe-seconds", type=float, default=0.3)
    ap.add_argument("--compile", default="", help="precisions (e.g. fp32 or fp32,bf16) at which to also measure torch.compile(model) in the raw matrix (minutes of C++ compilation on CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.explainers = [e for e in args.explainers.split(",") if e]
    args.precisions = [p for p in args.precisions.split(",") if p]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = bl.set_clock(device)
    models = ["run"] if args.run else args.models.split(",")
    results = {"clock": clock, "host": platform.node(), "threads": args.threads, "device": str(device),
               "torch": torch.__version__, "argv": sys.argv, "models": []}
    for name in models:
        res = bench_model(name, args, device)
        results["models"].append(res)
        print(table(res, args.precisions), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
