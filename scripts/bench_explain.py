"""Explain throughput vs the model's raw forward+backward throughput (issue 4, item 17).

For IG, one call on B samples with S steps runs the model on B*S points; its throughput is
(inputs x steps) / s. The reference is a plain forward+backward of the same model on a batch
of B*S inputs (gradient of the summed target logits w.r.t. the inputs), i.e. the work IG
cannot avoid. Goal: IG >= 85 % of it. Gradient SHAP / Expected Gradients batch B samples x
n_samples draws into one pass, so their reference is forward+backward at batch B*n_samples.

    PYTHONPATH=. python scripts/bench_explain.py                      # digits_cnn, CPU
    PYTHONPATH=. python scripts/bench_explain.py --model runs/NAME --batch 16 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS


def once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def paired(fn, ref, reps: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of ``fn`` and ``ref``, timed alternately (a shared machine's load then
    hits both alike), after one warm-up each."""
    fn(), ref()
    a, b = [], []
    for _ in range(reps):
        a.append(once(fn, device))
        b.append(once(ref, device))
    return statistics.median(a), statistics.median(b)


def raw_fwd_bwd(model, x: torch.Tensor, targets: torch.Tensor):
    def step() -> None:
        xi = x.detach().requires_grad_()
        out = model(xi)
        torch.autograd.grad(out.gather(1, targets[:, None]).sum(), xi)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run directory (default: an untrained digits_cnn)")
    ap.add_argument("--batch", type=int, default=16, help="samples per IG call")
    ap.add_argument("--steps", type=int, default=50, help="IG n_steps")
    ap.add_argument("--shap-samples", type=int, default=50, help="n_samples of gradient_shap / expected_gradients")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=16, help="digits_cnn width when no --model (16 = the demo model)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model:
        from xairobust.runs import load_run

        model, meta = load_run(args.model, device)
        shape = tuple(meta["dataset"]["info"]["input_shape"])
        k = int(meta["dataset"]["info"]["num_outputs"])
    else:
        torch.manual_seed(0)
        model = create_model("digits_cnn", num_outputs=10, in_channels=1, mean=[0.5], std=[0.3], width=args.width)
        model = model.to(device).eval()
        shape, k = (1, 8, 8), 10
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    B, S = args.batch, args.steps
    x = torch.rand(B, *shape, generator=g).to(device)
    t = torch.randint(0, k, (B,), generator=g).to(device)
    seeds = sample_seeds(0, torch.arange(B))

    n_params = sum(p.numel() for p in model.parameters())
    print(f"device={device} threads={args.threads} input={shape} params={n_params} batch={B} steps={S}")
    ig_cls = EXPLAINERS.get("ig")
    ig = ig_cls(cfg.build(ig_cls.Params, {"n_steps": S}, "ig"))
    ig.chunk_size = B
    big = x.repeat_interleave(S, 0)
    t_ig, t_raw = paired(lambda: ig.attribute(model, x, t, seeds), raw_fwd_bwd(model, big, t.repeat_interleave(S)), args.reps, device)
    print(f"ig:        {B * S / t_ig:10.0f} inputs*steps/s   raw fwd+bwd at batch {B * S}: {B * S / t_raw:10.0f} inputs/s   ratio {t_raw / t_ig:6.1%}")

    background = torch.rand(100, *shape, generator=g).to(device)
    n = args.shap_samples
    ref = raw_fwd_bwd(model, x.repeat_interleave(n, 0), t.repeat_interleave(n))
    for name in ("gradient_shap", "expected_gradients"):
        cls = EXPLAINERS.get(name)
        e = cls(cfg.build(cls.Params, {"n_samples": n}, name), background)
        e.chunk_size = B
        t_e, t_raw_n = paired(lambda e=e: e.attribute(model, x, t, seeds), ref, args.reps, device)
        rate, raw_rate = B * n / t_e, B * n / t_raw_n
        print(f"{name:18s} {rate:10.0f} inputs*samples/s raw fwd+bwd at batch {B * n}: {raw_rate:10.0f} inputs/s   ratio {rate / raw_rate:6.1%}")


if __name__ == "__main__":
    main()
