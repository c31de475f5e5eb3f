"""The explanation-manipulation study (docs/manipulation.md) in one process (imports once).

For each run: top-k, targeted and random attacks on Saliency and IG (each scored by transfer
with the other explainer(s)) and the mass-centre attack on Saliency; then the manipulation
report with paired tests against the label ``standard``.

    python scripts/manipulation_study.py --eps 0.1 --n 100 --out results/manipulation_digits RUN...
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from xairobust import config as cfg
from xairobust.report.manipulation import report
from xairobust.stages.manipulate import ManipulateConfig, manipulate

PLAN = [  # (attack, explainer, transfer_to)
    ("topk", "saliency", "ig,input_x_gradient"),
    ("topk", "ig", "saliency"),
    ("targeted", "saliency", "ig,input_x_gradient"),
    ("targeted", "ig", "saliency"),
    ("random", "saliency", "ig,input_x_gradient"),
    ("random", "ig", "saliency"),
    ("masscenter", "saliency", ""),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", default="", help="comma-separated attack/explainer pairs to run (default all)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    only = {p for p in a.only.split(",") if p}
    costs = []
    for run in a.runs:
        for attack, explainer, transfer in PLAN:
            if only and f"{attack}/{explainer}" not in only:
                continue
            conf = cfg.build(ManipulateConfig, {
                "attack": attack, "explainer": explainer, "eps": a.eps, "n": a.n, "steps": a.steps,
                "transfer_to": transfer, "batch_size": a.batch_size, "device": "cpu", "data_dir": a.data_dir,
                "params": {"n_steps": a.ig_steps} if explainer == "ig" else {},
            }, "study")
            t0 = time.time()
            doc = json.load(open(manipulate(run, conf, quiet=True)))
            m = doc["means"][explainer]
            print(f"{run} {attack}/{explainer}: topk_10 {m['topk_10']:.3f} spearman {m['spearman']:.3f}"
                  f" fooled {m['fooled']:.3f} cost x{doc['cost']['attack_over_explain']} ({time.time() - t0:.0f}s)",
                  flush=True)
            costs.append({"run": run, "attack": attack, "explainer": explainer, **doc["cost"]})
    written = report(a.runs, a.out, formats=("png",))
    with open(f"{a.out}/cost.json", "w") as f:
        json.dump(costs, f, indent=1)
    print(f"{len(written)} files written to {a.out}")


if __name__ == "__main__":
    main()
