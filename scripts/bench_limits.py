"""The machine's limits for a model, shared by bench_score.py and bench_explain.py (issue 20 item 3).

Three references, measured in the same run as the metrics / explainers they are compared with:

* ``raw``: the best fwd + backward-to-the-input rate (points/s) of the model over memory layouts
  {nchw, channels_last} x precisions {fp32, bf16} x batch sizes (and, with ``compile``, of
  ``torch.compile(model)`` at the best eager layout), i.e. the work IG-based metrics cannot avoid;
* ``flops``: the FLOPs of one point's fwd + bwd (``torch.utils.flop_counter.FlopCounterMode``), so
  a rate in points/s becomes GFLOP/s;
* ``peak``: a dense square matmul of the same dtype on the same core(s), the practical peak a
  conv/linear stack could reach (AVX-512 / AMX for bf16 on CPUs that have them).

Timing is process CPU time on CPU (other processes' load on the shared machine does not count;
cache contention still does) and wall time on CUDA (synchronised); ratios within one run only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from xairobust.runtime import prepare_model

LAYOUTS = ("nchw", "channels_last")
PRECISIONS = ("fp32", "bf16")
CLOCK: dict[str, Callable[[], float]] = {"fn": time.process_time}


def set_clock(device: torch.device, kind: str | None = None) -> str:
    kind = kind or ("cpu" if device.type == "cpu" else "wall")
    CLOCK["fn"] = time.process_time if kind == "cpu" else time.perf_counter
    return kind


def clock() -> float:
    return CLOCK["fn"]()


def variant(model: nn.Module, shape: tuple[int, ...], layout: str, precision: str) -> nn.Module:
    """A copy of ``model`` in ``layout`` and ``precision``, as the stages prepare it (xairobust.runtime)."""
    return prepare_model(copy.deepcopy(model), shape, precision, channels_last=layout == "channels_last").eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fwd_bwd_rate(model: nn.Module, shape: tuple[int, ...], device: torch.device, batch: int, seconds: float) -> float:
    """Points/s of fwd + gradient of the target logits w.r.t. the input (what IG does), after a warm-up."""
    x = torch.rand((batch, *shape), device=device, generator=torch.Generator(device).manual_seed(0))
    t = torch.zeros(batch, dtype=torch.int64, device=device)

    def step() -> None:
        xr = x.detach().requires_grad_()
        torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)

    step()
    _sync(device)
    done, start = 0, clock()
    while True:
        step()
        _sync(device)
        done += batch
        if clock() - start > seconds and done >= 2 * batch:
            return done / (clock() - start)


def raw_matrix(model: nn.Module, shape: tuple[int, ...], device: torch.device, sizes: tuple[int, ...],
               seconds: float = 0.3, compile: tuple[str, ...] = (), quiet: bool = False) -> dict:
    """Best fwd+bwd rate per (layout, precision) over ``sizes``; for each precision in ``compile``
    also torch.compile's (at that precision's best eager layout and batch; compile time reported)."""
    cells: dict[str, dict] = {}
    for layout in LAYOUTS:
        for precision in PRECISIONS:
            m = variant(model, shape, layout, precision)
            rates = {bs: fwd_bwd_rate(m, shape, device, bs, seconds) for bs in sizes}
            best = max(rates, key=rates.get)
            cells[f"{layout}/{precision}"] = {"layout": layout, "precision": precision, "rates": rates,
                                              "best_rate": rates[best], "best_batch": best}
            if not quiet:
                print(f"    raw {layout:13s} {precision}: {rates[best]:10.0f} pts/s (batch {best})", flush=True)
    if compile:
        for precision in compile:
            layout = max(LAYOUTS, key=lambda lay: cells[f"{lay}/{precision}"]["best_rate"])
            bs = cells[f"{layout}/{precision}"]["best_batch"]
            try:
                t0 = time.perf_counter()
                m = torch.compile(variant(model, shape, layout, precision))
                fwd_bwd_rate(m, shape, device, bs, 0.01)  # compiles (fwd and bwd graphs)
                compile_s = time.perf_counter() - t0
                rate = fwd_bwd_rate(m, shape, device, bs, seconds)
                cells[f"compiled/{precision}"] = {"layout": layout, "precision": precision, "compiled": True,
                                                  "rates": {bs: rate}, "best_rate": rate, "best_batch": bs,
                                                  "compile_wall_s": round(compile_s, 1)}
            except Exception as exc:  # noqa: BLE001 -- reported, not hidden: compile is an option being measured
                cells[f"compiled/{precision}"] = {"layout": layout, "precision": precision, "compiled": True,
                                                  "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            if not quiet:
                c = cells[f"compiled/{precision}"]
                print(f"    raw compiled({layout}) {precision}: " + (f"{c['best_rate']:10.0f} pts/s (batch {bs},"
                      f" compile {c['compile_wall_s']} s wall)" if "best_rate" in c else c["error"]), flush=True)
    eager = {k: v for k, v in cells.items() if not v.get("compiled")}
    best_fp32 = max((v for v in eager.values() if v["precision"] == "fp32"), key=lambda v: v["best_rate"])
    best_any = max((v for v in cells.values() if "best_rate" in v), key=lambda v: v["best_rate"])
    return {"cells": cells, "best_fp32": {k: best_fp32[k] for k in ("layout", "precision", "best_rate", "best_batch")},
            "best": {k: best_any.get(k) for k in ("layout", "precision", "best_rate", "best_batch", "compiled")}}


def flops_per_point(model: nn.Module, shape: tuple[int, ...], device: torch.device, batch: int = 4) -> dict:
    """FLOPs of one point's forward and of its fwd + backward-to-the-input (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand((batch, *shape), device=device)
    t = torch.zeros(batch, dtype=torch.int64, device=device)
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(x)
    fwd = fc.get_total_flops() / batch
    # .backward() with the weights frozen (the counter's module hooks refuse autograd.grad): the
    # backward then computes the input gradient only, as IG's autograd.grad does
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as fc:
            xr = x.detach().requires_grad_()
            model(xr).gather(1, t[:, None]).sum().backward()
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
    return {"fwd": fwd, "fwd_bwd": fc.get_total_flops() / batch}


def matmul_peak(device: torch.device, n: int = 1024, seconds: float = 0.5) -> dict:
    """GFLOP/s of an n x n x n matmul per dtype (fp32, bf16): the practical peak of this core."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.rand(n, n, device=device).to(dtype)
        b = torch.rand(n, n, device=device).to(dtype)
        a @ b
        _sync(device)
        done, start = 0, clock()
        while True:
            a @ b
            _sync(device)
            done += 1
            if clock() - start > seconds and done >= 2:
                break
        out[name] = 2 * n**3 * done / (clock() - start) / 1e9
    return {"n": n, "gflops": out}


def limits(model: nn.Module, shape: tuple[int, ...], device: torch.device, sizes: tuple[int, ...],
           seconds: float = 0.3, compile: tuple[str, ...] = (), quiet: bool = False) -> dict:
    """raw matrix + FLOPs per point + matmul peak, in one go (see the module docstring)."""
    raw = raw_matrix(model, shape, device, sizes, seconds, compile, quiet)
    flops = flops_per_point(model, shape, device)
    peak = matmul_peak(device)
    for cell in raw["cells"].values():
        if "best_rate" in cell:
            cell["gflops"] = cell["best_rate"] * flops["fwd_bwd"] / 1e9
            cell["pct_of_peak"] = 100 * cell["gflops"] / peak["gflops"][cell["precision"]]
    if not quiet:
        print(f"    flops/point fwd+bwd {flops['fwd_bwd'] / 1e6:.2f} M; matmul peak fp32 {peak['gflops']['fp32']:.0f},"
              f" bf16 {peak['gflops']['bf16']:.0f} GFLOP/s", flush=True)
    return {"raw": raw, "flops_per_point": flops, "matmul_peak": peak}


def shares(points_fwd_bwd: float, points_fwd: float, seconds: float, lim: dict, precision: str) -> dict:
    """A timed piece of work (points it needs, CPU seconds it took) as % of each limit.

    ``pct_raw_fp32``: of the best fp32 eager layout's raw rate; ``pct_raw_best``: of the best raw
    rate of any cell (bf16 / compiled included); ``gflops`` achieved and ``pct_peak`` of the
    matmul peak of the precision it ran in. Forward-only points count as 1/3 of a fwd+bwd point
    (their FLOP share, from the counter)."""
    if not seconds:
        return {}
    f = lim["flops_per_point"]
    flop = points_fwd_bwd * f["fwd_bwd"] + points_fwd * f["fwd"]
    eq_points = flop / f["fwd_bwd"]  # in fwd+bwd-point units
    raw = lim["raw"]
    own = raw["cells"].get(f"channels_last/{precision}") or raw["cells"].get(f"nchw/{precision}")
    gflops = flop / seconds / 1e9
    return {
        "gflops": gflops,
        "pct_raw_fp32": 100 * eq_points / seconds / raw["best_fp32"]["best_rate"],
        "pct_raw_best": 100 * eq_points / seconds / raw["best"]["best_rate"],
        "pct_raw_same_precision": 100 * eq_points / seconds / own["best_rate"],
        "pct_peak": 100 * gflops / lim["matmul_peak"]["gflops"][precision],
    }


def limits_table(model_name: str, lim: dict) -> str:
    lines = [f"{model_name}: fwd+bwd {lim['flops_per_point']['fwd_bwd'] / 1e6:.2f} MFLOP/point; matmul peak"
             f" fp32 {lim['matmul_peak']['gflops']['fp32']:.0f} / bf16 {lim['matmul_peak']['gflops']['bf16']:.0f} GFLOP/s",
             f"  {'cell':24s} {'pts/s':>9s} {'batch':>6s} {'GFLOP/s':>8s} {'% peak':>7s} {'x nchw/fp32':>11s}"]
    base = lim["raw"]["cells"]["nchw/fp32"]["best_rate"]
    for key, c in lim["raw"]["cells"].items():
        if "best_rate" not in c:
            lines.append(f"  {key:24s} {c.get('error', '')}")
            continue
        lines.append(f"  {key:24s} {c['best_rate']:9.0f} {c['best_batch']:6d} {c['gflops']:8.1f} {c['pct_of_peak']:7.1f}"
                     f" {c['best_rate'] / base:11.2f}")
    return "\n".join(lines)
