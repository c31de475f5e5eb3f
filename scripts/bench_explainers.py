"""Explain throughput of every registered explainer relative to IG (50 steps), default params.

Each explainer and IG are timed alternately on the same n inputs (so a shared machine's load
hits both alike); the figure is time(IG) / time(explainer), i.e. > 1 = faster than IG. Models
are the architectures at their default widths (untrained unless --run is given: throughput does
not depend on the weights, except for LIME's Lasso iterations).

    PYTHONPATH=. python scripts/bench_explainers.py --out results/explainers/throughput.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS

MODELS = {"digits_cnn": ((1, 8, 8), [0.5], [0.3]), "cifar_cnn": ((3, 32, 32), [0.5] * 3, [0.25] * 3)}


def build(name: str, background: torch.Tensor):
    cls = EXPLAINERS.get(name)
    return cls(cfg.build(cls.Params, {}, name), background)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="digits_cnn,cifar_cnn")
    ap.add_argument("--explainers", default=",".join(n for n in EXPLAINERS.names() if n != "ig"))
    ap.add_argument("--out", help="CSV to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model_name in args.models.split(","):
        shape, mean, std = MODELS[model_name]
        torch.manual_seed(0)
        model = create_model(model_name, num_outputs=10, in_channels=shape[0], mean=mean, std=std).eval()
        x = torch.rand(args.n, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            t = model(x).argmax(1)
        seeds = sample_seeds(0, torch.arange(args.n))
        bg = torch.rand(200, *shape, generator=torch.Generator().manual_seed(2))
        ig = build("ig", bg)
        ig.attribute(model, x[:2], t[:2], seeds[:2])  # warm-up (imports, allocator)
        for name in args.explainers.split(","):
            e = build(name, bg)
            e.attribute(model, x[:2], t[:2], seeds[:2])
            a, b = [], []
            for _ in range(args.reps):
                a.append(timed(lambda: e.attribute(model, x, t, seeds)))
                b.append(timed(lambda: ig.attribute(model, x, t, seeds)))
            te, ti = statistics.median(a), statistics.median(b)
            row = {"model": model_name, "explainer": name, "n": args.n, "threads": args.threads,
                   "seconds": round(te, 4), "ig_seconds": round(ti, 4), "samples_per_s": round(args.n / te, 2),
                   "relative_to_ig": round(ti / te, 4)}
            rows.append(row)
            print(row, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
