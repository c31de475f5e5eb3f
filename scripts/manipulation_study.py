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
    ap.add_argument("--no-transfer", action="store_true", help="score only the attacked explainer")
    ap.add_argument("--only", default="", help="comma-separated attack/explainer pairs to run (default all)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--extra-runs", nargs="*", default=[], help="runs only reported (e.g. fool runs)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    only = {p for p in a.only.split(",") if p}
    for run in a.runs:
        for attack, explainer, transfer in PLAN:
            if only and f"{attack}/{explainer}" not in only:
                continue
            conf = cfg.build(ManipulateConfig, {
                "attack": attack, "explainer": explainer, "eps": a.eps, "n": a.n, "steps": a.steps,
                "transfer_to": "" if a.no_transfer else transfer, "batch_size": a.batch_size, "device": "cpu", "data_dir": a.data_dir,
                "params": {"n_steps": a.ig_steps} if explainer == "ig" else {},
            }, "study")
            t0 = time.time()
            doc = json.load(open(manipulate(run, conf, quiet=True)))
            m = doc["means"][explainer]
            print(f"{run} {attack}/{explainer}: topk_10 {m['topk_10']:.3f} spearman {m['spearman']:.3f}"
                  f" fooled {m['fooled']:.3f} cost x{doc['cost']['attack_over_explain']} ({time.time() - t0:.0f}s)",
                  flush=True)
    written = report(a.runs + a.extra_runs, a.out, formats=("png",))
    write_cost(a.runs, a.out)
    print(f"{len(written)} files written to {a.out}")


def write_cost(runs: list[str], out: str) -> None:
    """cost.md/json: CPU seconds per image of each attack, relative to one IG explanation (the
    IG of the attacks: same n_steps, original network) of the same run and samples."""
    from pathlib import Path

    rows = []
    for run in runs:
        docs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(run, "manipulation").glob("*.json"))}
        ig = next((d["cost"]["explain_cpu_s_per_image"] for k, d in docs.items() if k.endswith("_ig")), None)
        for d in docs.values():
            c = d["cost"]
            if d["attack"] == "model" or "attack_cpu_s_per_image" not in c:
                continue
            rows.append({"run": run, "label": d["run"].get("label"), "attack": d["attack"], "explainer": d["explainer"],
                         "steps": d["settings"]["steps"], "n": d["n"],
                         "attack_cpu_s_per_image": c["attack_cpu_s_per_image"],
                         "over_one_explanation_of_that_explainer": c["attack_over_explain"],
                         "over_one_ig": round(c["attack_cpu_s_per_image"] / ig, 2) if ig else None})
    Path(out, "cost.json").write_text(json.dumps(rows, indent=1))
    lines = ["| Run | Attack | Explainer | steps | CPU s / image | × one explanation (same explainer) | × one IG |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['attack']} | {r['explainer']} | {r['steps']} | {r['attack_cpu_s_per_image']:.4f}"
                     f" | {r['over_one_explanation_of_that_explainer']} | {r['over_one_ig']} |")
    Path(out, "cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
