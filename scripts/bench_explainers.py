"""Explain throughput of every registered explainer relative to IG (50 steps), default params.

Each explainer and IG are timed on the same n inputs; the figure is
time(IG) / time(explainer), i.e. > 1 = faster than IG. Times are CPU seconds of this process
(``time.process_time``, one torch and BLAS thread): on a shared, overloaded machine wall-clock
time measures the other jobs, CPU time of a single-threaded process does not. Models
are the architectures at their default widths (untrained unless --run is given: throughput does
not depend on the weights, except for LIME's Lasso iterations).

    PYTHONPATH=. python scripts/bench_explainers.py --out results/explainers/throughput.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS

MODELS = {"digits_cnn": ((1, 8, 8), [0.5], [0.3]), "cifar_cnn": ((3, 32, 32), [0.5] * 3, [0.25] * 3)}


def build(name: str, background: torch.Tensor, params: dict | None = None):
    cls = EXPLAINERS.get(name)
    return cls(cfg.build(cls.Params, params or {}, name), background)


def timed(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="digits_cnn,cifar_cnn")
    ap.add_argument("--explainers", default=",".join(n for n in EXPLAINERS.names() if n != "ig"))
    ap.add_argument("--params", default="{}", help='JSON {explainer: {param: value}} over the defaults')
    ap.add_argument("--out", help="CSV to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 so BLAS threads do not count in CPU time", flush=True)
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
        # CPU time does not depend on the machine's load, so IG is timed once per model (median of
        # --reps), not alternately with every explainer.
        ti = statistics.median(timed(partial(ig.attribute, model, x, t, seeds)) for _ in range(max(args.reps, 2)))
        for name in args.explainers.split(","):
            e = build(name, bg, json.loads(args.params).get(name))
            e.attribute(model, x[:2], t[:2], seeds[:2])
            te = statistics.median(timed(partial(e.attribute, model, x, t, seeds)) for _ in range(args.reps))
            row = {"model": model_name, "explainer": name, "n": args.n, "threads": args.threads,
                   "cpu_seconds": round(te, 4), "ig_cpu_seconds": round(ti, 4), "samples_per_cpu_s": round(args.n / te, 2),
                   "relative_to_ig": round(ti / te, 4)}
            rows.append(row)
            print(row, flush=True)
            if args.out:  # rewritten after every row: a killed run keeps what it measured
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)


if __name__ == "__main__":
    main()
