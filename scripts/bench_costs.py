"""Per-image cost of the paper preset with IG-50, per model and precision (issue 20 item 5: README table).

For each model at its input size (cifar_cnn / resnet18_cifar 3x32x32; preresnet10 / vgg19 3x160x160,
the Imagenette size of configs/zoo/imagenette_paper.yaml), untrained and seeded: the points the
paper preset needs for one image (xairobust.costs.plan, the same model as ``score --dry-run``,
checked against counted passes in tests/test_costs.py) divided by the model's measured fwd+bwd and
forward rates (channels_last, fp32 and bf16, process CPU time on CPU). The native engine runs at
~90-100 % of that rate (results/bench_score/), so these are per-image costs within ~10 %.

    PYTHONPATH=. nice -n 10 python scripts/bench_costs.py --out results/bench_score/issue20_costs.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_limits as bl  # noqa: E402

from xairobust import config as cfg  # noqa: E402
from xairobust.costs import plan  # noqa: E402
from xairobust.models.base import create_model  # noqa: E402
from xairobust.registry import EXPLAINERS  # noqa: E402
from xairobust.stages.score import ScoreConfig, build_metrics  # noqa: E402

MODELS = {"cifar_cnn": (3, 32, 32, 32), "resnet18_cifar": (3, 32, 32, 16), "preresnet10": (3, 160, 160, 4), "vgg19": (3, 160, 160, 2)}


def forward_rate(model, shape, device, batch, seconds) -> float:
    x = torch.rand((batch, *shape), device=device)
    with torch.no_grad():
        model(x)
        done, start = 0, bl.clock()
        while done < 2 * batch or bl.clock() - start < seconds:
            model(x)
            bl._sync(device)
            done += batch
    return done / (bl.clock() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = bl.set_clock(device)
    ig_cls = EXPLAINERS.get("ig")
    ig = ig_cls(cfg.build(ig_cls.Params, {"n_steps": 50}, "ig"))
    _, metrics = build_metrics(ScoreConfig(metrics="paper"))
    out = {"clock": clock, "threads": args.threads, "device": str(device), "torch": torch.__version__, "argv": sys.argv, "models": {}}
    print(f"{'model':16s} {'input':12s} {'prec':5s} {'fwd+bwd/s':>10s} {'fwd/s':>8s} {'fwd+bwd pts':>12s} {'fwd pts':>8s} {'s / image':>10s}")
    for name in args.models.split(","):
        c, h, w, batch = MODELS[name]
        shape = (c, h, w)
        torch.manual_seed(0)
        base = create_model(name, num_outputs=10, in_channels=c, mean=[0.5] * c, std=[0.25] * c).to(device).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        out["models"][name] = {"input": list(shape)}
        for precision in args.precisions.split(","):
            m = bl.variant(base, shape, "channels_last", precision)
            rates = (bl.fwd_bwd_rate(m, shape, device, batch, args.seconds), forward_rate(m, shape, device, batch, args.seconds))
            rows = plan(metrics, 1, shape, ig, rates)
            fb, f = sum(r["fwd_bwd"] for r in rows), sum(r["fwd"] for r in rows)
            sec = sum(r["seconds"] for r in rows)
            out["models"][name][precision] = {"fwd_bwd_per_s": rates[0], "fwd_per_s": rates[1], "batch": batch,
                                              "points_per_image": {"fwd_bwd": fb, "fwd": f}, "seconds_per_image": sec,
                                              "per_metric": rows}
            print(f"{name:16s} {'x'.join(map(str, shape)):12s} {precision:5s} {rates[0]:10.1f} {rates[1]:8.1f} {fb:12d} {f:8d} {sec:10.1f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
