"""Cost per image of the issue-18 faithfulness metrics relative to one IG explanation.

Process CPU time (``time.process_time``, one torch thread: robust on a shared machine) of
explaining ``--n`` images with IG (50 steps, the explain stage's default) and of scoring them
with each metric at its registered defaults on the native engine (``--quantus`` also times the
Quantus reference path). Inputs are uniform noise in [0, 1], the targets 0, 1, 2, ... and the model untrained: the cost
of these metrics depends on the shapes, not on the weights.

    PYTHONPATH=. nice -n 10 python scripts/bench_faithfulness.py --n 8 --out /tmp/bench_faith.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from xairobust import config as cfg
from xairobust.errors import ConfigError
from xairobust.explain.base import sample_seeds
from xairobust.metrics import native
from xairobust.metrics.base import MetricInput
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS, METRICS
from xairobust.stages.score import make_explain

NAMES = ("pixel_flipping", "region_perturbation", "region_perturbation_lerf", "region_perturbation_symmetric",
         "selectivity", "monotonicity_correlation", "infidelity")
MODELS = {"digits_cnn": (1, 8, 8), "cifar_cnn": (3, 32, 32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="images")
    ap.add_argument("--models", default="digits_cnn,cifar_cnn")
    ap.add_argument("--quantus", action="store_true", help="also time the Quantus reference path")
    ap.add_argument("--metrics", default=",".join(NAMES), help="comma-separated registered metrics (default: the h18c faithfulness family)")
    ap.add_argument("--out", default="", help="JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model_name in args.models.split(","):
        shape = MODELS[model_name]
        torch.manual_seed(0)
        model = create_model(model_name, num_outputs=10, in_channels=shape[0], mean=[0.5] * shape[0], std=[0.3] * shape[0]).eval()
        x = torch.rand(args.n, *shape, generator=torch.Generator().manual_seed(1))
        # targets cycle through the classes (Focus needs several; no metric's cost depends on them)
        y = torch.arange(args.n) % 10
        idx = torch.arange(args.n)
        cls = EXPLAINERS.get("ig")
        ig = cls(cfg.build(cls.Params, {}, "ig"))
        ig.want_delta = False
        t0 = time.process_time()
        a = ig.attribute(model, x, y, sample_seeds(0, idx)).detach()
        ig_s = (time.process_time() - t0) / args.n
        native.default_points_per_pass(model, shape, torch.device("cpu"))  # the one-off pass-size probe (~1 s), not a metric's cost
        inp = MetricInput(model=model, x=x.numpy(), y=y.numpy(), a=a.numpy(), indices=idx.numpy(),
                          explain=make_explain(torch.device("cpu"), ig, 0, 0), seed=0, device=torch.device("cpu"), value_range=(0.0, 1.0))
        for name in args.metrics.split(","):
            for engine in ("native", "quantus") if args.quantus else ("native",):
                m = METRICS.get(name)(cfg.build(METRICS.get(name).Params, {}, name))
                m.engine = engine
                t0 = time.process_time()
                try:
                    scores = m.score(inp)
                except ConfigError as err:  # e.g. Quantus' ROAD on 3 channels
                    print(f"{model_name:10s} {name:32s} {engine:7s} refused: {err}")
                    continue
                per = (time.process_time() - t0) / args.n
                row = {"model": model_name, "shape": "x".join(map(str, shape)), "metric": name, "engine": engine,
                       "s_per_image": per, "ig_s_per_image": ig_s, "relative_to_ig": per / ig_s,
                       "finite": bool(np.isfinite(scores).all())}
                rows.append(row)
                print(f"{model_name:10s} {name:32s} {engine:7s} {per * 1e3:9.2f} ms/image  {per / ig_s:7.2f} x IG ({ig_s * 1e3:.2f} ms)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"n": args.n, "threads": 1, "clock": "process_time", "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
