"""What a score run will cost, before it runs (``xairobust score --dry-run``, issue 20 item 5).

Per metric: the model points it needs (one point = one input through the model; fwd+bwd for a
gradient explainer's re-explanations, forward only for faithfulness passes), from the metric's
parameters, ``n``, the input shape and the explainer's points per input (IG: n_steps, SHAP/EG:
n_samples, gradients: 1). Time: those points divided by this device's rate, measured by a probe
of about one second on the run's model in the chosen layout and precision (fwd+bwd and forward
at the score stage's pass size). The native engine runs at ~90-100 % of that rate on CPU
(results/bench_score/), so the estimate is a lower bound within ~10 %.

A metric whose cost is not modelled here is listed as not estimated (never guessed).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

SHARED_WITH_MAX = "shares max_sensitivity's perturbed explanations"


def metric_points(name: str, metric: Any, names: list[str], n: int, input_shape: tuple[int, ...],
                  explainer_points: int, differentiable: bool, stochastic: bool = False,
                  floors: set | None = None) -> tuple[int, int, str] | None:
    """(fwd+bwd points, forward points, note) a metric needs on n samples, or None: not modelled.

    A stochastic explainer's sensitivity metrics also re-explain the unperturbed inputs nr_samples
    times (the noise floor), once per nr_samples in a run: ``floors`` holds those already paid for."""
    p = metric.params
    d = int(np.prod(input_shape))

    def reexplain(count: int) -> tuple[int, int]:
        pts = count * explainer_points
        return (pts, 0) if differentiable else (0, pts)

    if name == "avg_sensitivity" and "max_sensitivity" in names:
        return 0, 0, SHARED_WITH_MAX
    if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"):
        count = n * int(p.nr_samples)
        note = f"{n} x {p.nr_samples} re-explanations x {explainer_points} points"
        floors = set() if floors is None else floors
        if stochastic and getattr(p, "noise_floor", False) and int(p.nr_samples) not in floors:
            floors.add(int(p.nr_samples))
            count, note = 2 * count, note + " (+ as many for the noise floor)"
        fb, f = reexplain(count)
        extra = n * int(p.nr_samples) if getattr(p, "drop_changed", False) else 0  # the prediction check
        return fb, f + extra, note
    if name == "faithfulness_correlation":
        return 0, n * (int(p.nr_runs) + 1), f"{n} x ({p.nr_runs} + 1) forwards"
    if name == "faithfulness_estimate":
        steps = d // int(metric.step(tuple(input_shape))) + 1
        return 0, n * steps, f"{n} x {steps} forwards"
    if name in ("complexity", "sparseness"):
        return 0, 0, "no model pass"
    return None


def probe_rates(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch: int,
                seconds: float = 0.5) -> tuple[float, float]:
    """(fwd+bwd, forward) points per second of ``model`` (prepared as the stage runs it), ~2 x seconds."""
    x = torch.rand((batch, *input_shape), device=device, generator=torch.Generator(device).manual_seed(0))
    t = torch.zeros(batch, dtype=torch.int64, device=device)

    def fb() -> None:
        xr = x.detach().requires_grad_()
        torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)

    def fw() -> None:
        with torch.no_grad():
            model(x)

    rates = []
    for step in (fb, fw):
        step()  # warm-up
        done, start = 0, time.perf_counter()
        while done < 2 * batch or time.perf_counter() - start < seconds:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            done += batch
        rates.append(done / (time.perf_counter() - start))
    return rates[0], rates[1]


def plan(metrics: dict[str, Any], n: int, input_shape: tuple[int, ...], explainer: Any,
         rates: tuple[float, float]) -> list[dict[str, Any]]:
    """One row per metric: points, note and estimated seconds (None where not modelled)."""
    from xairobust.metrics.native import points_per_input

    per_input = points_per_input(explainer)
    differentiable = bool(getattr(type(explainer), "differentiable", False))
    stochastic = bool(getattr(type(explainer), "stochastic", False))
    floors: set = set()
    rows = []
    for name, metric in metrics.items():
        got = metric_points(name, metric, list(metrics), n, input_shape, per_input, differentiable, stochastic, floors)
        if got is None:
            rows.append({"metric": name, "fwd_bwd": None, "fwd": None, "seconds": None, "note": "cost not modelled"})
            continue
        fb, f, note = got
        rows.append({"metric": name, "fwd_bwd": fb, "fwd": f, "seconds": fb / rates[0] + f / rates[1], "note": note})
    return rows


def format_plan(rows: list[dict[str, Any]], rates: tuple[float, float], header: str) -> str:
    lines = [header, f"probe: {rates[0]:.0f} fwd+bwd points/s, {rates[1]:.0f} forward points/s",
             f"{'metric':28s} {'fwd+bwd pts':>12s} {'fwd pts':>10s} {'est. time':>10s}  passes"]
    total = 0.0
    missing = False
    for r in rows:
        if r["seconds"] is None:
            missing = True
            lines.append(f"{r['metric']:28s} {'?':>12s} {'?':>10s} {'?':>10s}  {r['note']}")
            continue
        total += r["seconds"]
        lines.append(f"{r['metric']:28s} {r['fwd_bwd']:12d} {r['fwd']:10d} {_duration(r['seconds']):>10s}  {r['note']}")
    lines.append(f"{'total':28s} {sum(r['fwd_bwd'] or 0 for r in rows):12d} {sum(r['fwd'] or 0 for r in rows):10d}"
                 f" {_duration(total):>10s}" + ("  (+ metrics not estimated)" if missing else ""))
    return "\n".join(lines)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def score_plan(run_dir: Any, conf: Any) -> str:
    """The dry-run text of ``xairobust score`` for one run (nothing is scored or written)."""
    from pathlib import Path

    from xairobust.devices import pick_device
    from xairobust.metrics.native import cap_explainer, default_points_per_pass
    from xairobust.runs import load_run
    from xairobust.runtime import prepare_model
    from xairobust.stages.explain import build_explainer, load_attributions
    from xairobust.stages.score import build_metrics

    preset, metrics = build_metrics(conf)
    tensors, attr_meta = load_attributions(run_dir, conf.explainer)
    shape = tuple(tensors["inputs"].shape[1:])
    n = len(tensors["indices"]) if conf.n is None else min(conf.n, len(tensors["indices"]))
    model, _ = load_run(run_dir)
    device = pick_device(conf.device)
    prepare_model(model.to(device).eval(), shape, conf.precision, conf.channels_last)
    background = tensors.get("background")
    explainer = build_explainer(conf.explainer, attr_meta["params"], None if background is None else background.to(device))
    ppp = conf.points_per_pass or default_points_per_pass(model, shape, device, tune=False)
    cap_explainer(explainer, ppp)
    rates = probe_rates(model, shape, device, max(1, min(ppp, 256)))
    rows = plan(metrics, n, shape, explainer, rates)
    head = (f"{Path(run_dir)}: score --dry-run: explainer {conf.explainer}, preset {preset}, n={n}, input {shape},"
            f" {conf.precision}, device {device} (estimates; nothing was scored)")
    return format_plan(rows, rates, head)
