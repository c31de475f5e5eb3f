"""Step time of each robust training method relative to standard, beside its FLOP ratio.

One process, one model, one batch: for every method the script times full training steps
(loss, backward, optimiser step; median of --repeats after --warmup) and counts the FLOPs of
one step with ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv FLOPs of forward,
backward and double backward). A method is "efficient" when its time ratio is within 1.1x of
its FLOP ratio: the extra time is then the extra arithmetic, not overhead.

    PYTHONPATH=. python scripts/bench_train_step.py                    # CPU, ResNet-18 (CIFAR) width 16
    PYTHONPATH=. python scripts/bench_train_step.py --model registered --batch 128 --device cuda

``--model local`` (default) is a CIFAR-style ResNet-18 defined here (3x3 stem, four stages of
two basic blocks, BN, global pool) at a CPU-sized ``--width``; ``--model registered`` is the
package's ``resnet18_cifar``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xairobust.models.base import NormalizedModel
from xairobust.registry import MODELS
from xairobust.stages.train import build_method
from xairobust.training.base import TrainContext


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(h)) + self.short(x))


class ResNet18Cifar(nn.Module):
    def __init__(self, num_outputs: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                layers.append(Block(cin, width * mult, 2 if (i > 0 and j == 0) else 1))
                cin = width * mult
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_outputs)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean(dim=(2, 3)))


METHODS = {
    "standard": {},
    "pgd": {"norm": "linf", "eps": 8 / 255, "steps": 7},
    "nsloss": {"lam": 1.0, "eps_ns": 1.0, "perturbations": 5},
    "jacobian": {"lam": 0.01, "n_proj": 1},
}


def make_model(kind: str, width: int) -> tuple[nn.Module, str]:
    """``registered``: the package's resnet18_cifar (full width); ``local``: the ResNet-18 above at ``width``."""
    if kind == "registered":
        net = MODELS.get("resnet18_cifar")(num_outputs=10, in_channels=3)
        return NormalizedModel(net, (0.5,) * 3, (0.25,) * 3), "registered resnet18_cifar (timm resnet18, CIFAR stem)"
    return NormalizedModel(ResNet18Cifar(10, width), (0.5,) * 3, (0.25,) * 3), f"local CIFAR ResNet-18 (width {width})"


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, which attributes FLOPs to modules through
    backward hooks that break ``autograd.grad(..., inputs=leaf)`` (used by PGD and Jacobian).
    We only need the global total, which the counter's dispatch mode computes on its own."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(step) -> int:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        step()
    return counter.get_total_flops()


def step_fn(model, method, x, y, ctx, opt):
    def step():
        loss, _ = method.loss(model, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["local", "registered"], default="local",
                    help="local: a CIFAR ResNet-18 at --width (CPU-sized); registered: resnet18_cifar")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, desc = make_model(args.model, args.width)
    model.to(device).train()
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    # Every method gets its own copy of the model and optimiser; the timed steps are interleaved
    # (one step of each method per round) so that load drift on a shared machine hits all alike.
    steps, results = {}, {}
    for name in args.methods.split(","):
        own = copy.deepcopy(model)
        method = build_method(name, METHODS[name])
        ctx = TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=10,
                           value_range=(0.0, 1.0), generator=torch.Generator(device=device).manual_seed(0),
                           device=device)
        method.prepare(own, ctx)
        opt = torch.optim.SGD(own.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = step_fn(own, method, x, y, ctx, opt)
        results[name] = {"flops": count_flops(steps[name]), "times": []}
        for _ in range(args.warmup):
            steps[name]()
    for _ in range(args.repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            results[name]["times"].append(time.perf_counter() - t0)
    for r in results.values():
        r["median_s"], r["min_s"] = statistics.median(r["times"]), min(r["times"])
    base = results["standard"]
    print(f"model: {desc}; batch {args.batch} x 3x32x32; device {device}; threads {args.threads}; "
          f"median of {args.repeats} interleaved steps")
    print(f"{'method':10s} {'step s':>9s} {'time ratio':>11s} {'FLOP ratio':>11s} {'time/FLOP':>10s}")
    for name, r in results.items():
        tr, fr = r["median_s"] / base["median_s"], r["flops"] / base["flops"]
        r.update(time_ratio=tr, flop_ratio=fr)
        print(f"{name:10s} {r['median_s']:9.4f} {tr:11.2f} {fr:11.2f} {tr / fr:10.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": desc, "batch": args.batch, "device": str(device), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
