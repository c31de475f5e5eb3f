"""Score-stage speed: native engine vs Quantus as documented vs the limit, per metric and suite.

On one model (``--models digits_cnn,cifar_cnn``), the same inputs, targets and IG attributions:

* ``native``: the registered metrics with ``engine="native"`` (the score stage's default), the
  suite with Max/Avg-Sensitivity sharing one set of perturbed explanations;
* ``quantus``: ``quantus.<Metric>(...)(model, x_batch, y_batch, a_batch, explain_func=IG,
  batch_size=B)`` as Quantus' README shows, with the same IG (our explainer, same steps, the
  convergence delta off), the same counts and radii;
* ``limit``: the model passes a metric needs (IG: samples x perturbations x steps fwd+bwd;
  faithfulness: forwards) divided by the raw throughput of the model at the best batch size
  (fwd+bwd and fwd-only probes over batch sizes 16..1024), measured in the same run.

Repeats are interleaved (probe, native, quantus, probe, ...); the minimum per cell is reported.
Writes a table to stdout and JSON to ``--out``.

Issue 20 additions: the model is prepared as the score stage prepares it (channels_last for 4-D
image models); the native engine is timed in every ``--precisions`` (fp32, bf16), Quantus in fp32;
the limits of scripts/bench_limits.py (best raw fwd+bwd over layouts x precisions x batch sizes,
torch.compile with ``--compile``, FLOPs per point, a matmul peak per dtype) are measured in the
same run, and every metric is given as % of each. ``--deviation STD_RUN,PGD_RUN`` runs the real
explain + score stages on copies of two trained runs in fp32 and in bf16 (same draws) and reports,
per metric, the per-sample relative error of bf16 and the change in the Standard-vs-PGD paired
statistic (mean difference, Wilcoxon).

    PYTHONPATH=. nice -n 10 python scripts/bench_score.py --n 4 --threads 1 --out results/bench_score/cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_limits as bl  # noqa: E402

from xairobust import config as cfg
from xairobust.explain.base import sample_seeds
from xairobust.metrics import native
from xairobust.metrics.base import MetricInput
from xairobust.metrics.presets import PAPER_METRICS
from xairobust.models.base import create_model
from xairobust.registry import EXPLAINERS
from xairobust.runtime import prepare_model
from xairobust.stages.score import ScoreConfig, build_metrics, make_explain

QUANTUS = {
    "max_sensitivity": "MaxSensitivity",
    "avg_sensitivity": "AvgSensitivity",
    "local_lipschitz_estimate": "LocalLipschitzEstimate",
    "faithfulness_correlation": "FaithfulnessCorrelation",
    "faithfulness_estimate": "FaithfulnessEstimate",
    "complexity": "Complexity",
    "sparseness": "Sparseness",
}
CLOCK = {"fn": time.perf_counter}


def clock() -> float:
    """Wall time, or with --clock cpu the process CPU time (1 thread on a shared, loaded CPU:
    other processes' load then does not count; cache contention still does)."""
    return CLOCK["fn"]()


SENSITIVITY = ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate")
SHAPES = {"digits_cnn": (1, 8, 8), "cifar_cnn": (3, 32, 32), "resnet18_cifar": (3, 32, 32)}
LIMIT_SIZES = {"digits_cnn": (64, 256, 1024), "cifar_cnn": (32, 64, 128), "resnet18_cifar": (16, 32, 64)}


def make_input(model_name: str, n: int, n_steps: int, device: torch.device, data: str | None, run: str | None) -> MetricInput:
    shape = SHAPES.get(model_name)
    if run:
        from xairobust.runs import load_run

        model, meta = load_run(run)
        shape = tuple(meta["dataset"]["info"]["input_shape"])
    else:
        torch.manual_seed(0)
        model = create_model(model_name, num_outputs=10, in_channels=shape[0], mean=[0.5] * shape[0], std=[0.25] * shape[0])
    model.to(device).eval()
    prepare_model(model, shape)  # channels_last where it applies, as the score stage runs it
    x = None
    if data and shape == (3, 32, 32):
        from xairobust.data.base import get_dataset

        x = get_dataset("cifar10", "test", data).inputs(torch.arange(n))
    elif shape == (1, 8, 8):
        from xairobust.data.base import get_dataset

        x = get_dataset("digits", "test").inputs(torch.arange(n))
    if x is None:
        x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    cls = EXPLAINERS.get("ig")
    explainer = cls(cfg.build(cls.Params, {"n_steps": n_steps}, "ig"))
    explainer.want_delta = False
    indices = torch.arange(n)
    a = explainer.attribute(model, x, y, sample_seeds(0, indices))
    return MetricInput(model=model, x=x.cpu().numpy(), y=y.cpu().numpy(), a=a.detach().cpu().numpy(), indices=indices.numpy(),
                       explain=make_explain(device, explainer, 0, 0), seed=0, device=device, value_range=(0.0, 1.0))


def probe(model, shape, device, sizes=(16, 32, 64, 128, 256, 512, 1024), seconds=0.6) -> dict:
    """Best points/s of fwd+bwd (input gradient, as IG) and of forward only, over batch sizes."""
    out = {"fwd_bwd": {}, "fwd": {}}
    for bs in sizes:
        x = torch.rand((bs, *shape), device=device)
        t = torch.zeros(bs, dtype=torch.int64, device=device)
        for kind in ("fwd_bwd", "fwd"):
            done, start = 0, clock()
            while True:
                if kind == "fwd_bwd":
                    xr = x.detach().requires_grad_()
                    torch.autograd.grad(model(xr).gather(1, t[:, None]).sum(), xr)
                else:
                    with torch.no_grad():
                        model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                done += bs
                if clock() - start > seconds and done >= 2 * bs:
                    break
            out[kind][bs] = done / (clock() - start)
    return {k: {"best_rate": max(v.values()), "best_batch": max(v, key=v.get), "rates": v} for k, v in out.items()}


def required_points(name: str, metric, inp: MetricInput, n_steps: int) -> tuple[int, int]:
    """(fwd+bwd points, forward points) the metric needs at the minimum."""
    n = len(inp.x)
    p = metric.params
    d = int(np.prod(inp.x.shape[1:]))
    if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"):
        return n * p.nr_samples * n_steps, 0
    if name == "faithfulness_correlation":
        return 0, n * (p.nr_runs + 1)
    if name == "faithfulness_estimate":
        return 0, n * (d // metric.step(tuple(inp.x.shape[1:])) + 1)
    return 0, 0


def quantus_call(name: str, metric, inp: MetricInput, batch_size: int):
    import quantus

    from xairobust.metrics._quantus import normalise_per_sample

    p = metric.params
    kw: dict = {"disable_warnings": True, "display_progressbar": False, "return_aggregate": False, "normalise_func": normalise_per_sample}
    if name in ("max_sensitivity", "avg_sensitivity"):
        kw |= {"nr_samples": p.nr_samples, "lower_bound": p.radius}
    elif name == "local_lipschitz_estimate":
        kw |= {"nr_samples": p.nr_samples, "perturb_std": p.perturb_std}
    elif name in ("faithfulness_correlation", "faithfulness_estimate"):
        kw |= metric.quantus_kwargs(inp, np.arange(len(inp.x)))
    q = getattr(quantus, QUANTUS[name])(**kw)
    explainer = inp.explain.explainer
    dev = inp.device

    def ig(model, inputs, targets, **_):
        t = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=dev)
        return explainer.attribute(model, t, torch.as_tensor(np.asarray(targets), device=dev), torch.zeros(len(t), dtype=torch.int64)).detach().cpu().numpy()

    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return q(model=inp.model, x_batch=inp.x, y_batch=inp.y, a_batch=inp.a.copy(), device=str(dev),
                 explain_func=ig if name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate") else None,
                 batch_size=batch_size)


def bench_model(model_name: str, args, device) -> dict:
    inp = make_input(model_name, args.n, args.n_steps, device, args.data_dir, args.run if model_name == args.run_model else None)
    shape = tuple(inp.x.shape[1:])
    ppp = args.points_per_pass or native.default_points_per_pass(inp.model, shape, device)
    extra = [p for p in args.precisions if p != "fp32"]  # native_s is fp32 (channels_last)
    rows: dict[str, dict] = {m: {"native_s": [], "quantus_s": [], **{f"native_{p}_s": [] for p in extra}} for m in [*PAPER_METRICS, "suite"]}
    print(f"{model_name}: limits", flush=True)
    lsizes = LIMIT_SIZES.get(model_name, (32, 64, 128)) if device.type == "cpu" else (256, 1024, 4096)
    machine = bl.limits(inp.model, shape, device, tuple(b for b in lsizes if b <= args.probe_max) or lsizes[:1],
                    seconds=0.3, compile=tuple(p for p in args.compile.split(",") if p))
    variants = {p: dataclasses.replace(inp, model=bl.variant(inp.model, shape, "channels_last", p)) for p in extra}
    probes = []
    sizes = (16, 32, 64, 128, 256, 512, 1024) if device.type == "cpu" else (64, 256, 1024, 2048, 4096)
    sizes = tuple(b for b in sizes if b <= args.probe_max)
    over = {m: {"nr_samples": args.nr_samples} for m in SENSITIVITY} if args.nr_samples else {}
    for rep in range(args.repeats):
        _, metrics = build_metrics(ScoreConfig(metrics="paper", metric_params=over, batch_size=args.batch_size, points_per_pass=ppp))
        # one metric set per precision: each has its own shared draws (Max/Avg), never fp32's results
        others = {p: build_metrics(ScoreConfig(metrics="paper", metric_params=over, batch_size=args.batch_size,
                                               points_per_pass=ppp, precision=p))[1] for p in extra}
        for name, metric in metrics.items():  # interleaved per metric: probe, native, quantus
            if name in SENSITIVITY or rep == 0:
                probes.append(probe(inp.model, shape, device, sizes, seconds=0.25))
            t0 = clock()
            metric.score(inp)  # native (avg_sensitivity reads max_sensitivity's shared draws)
            rows[name]["native_s"].append(clock() - t0)
            for p in extra:
                t0 = clock()
                others[p][name].score(variants[p])
                rows[name][f"native_{p}_s"].append(clock() - t0)
            if name in args.skip_quantus:
                continue
            sub, scale = inp, 1.0
            if args.quantus_n and args.quantus_n < len(inp.x) and name in SENSITIVITY:
                k = args.quantus_n  # timed on the first k samples, scaled to n (per-sample cost)
                sub = dataclasses.replace(inp, x=inp.x[:k], y=inp.y[:k], a=inp.a[:k], indices=inp.indices[:k])
                scale = len(inp.x) / k
            t0 = clock()
            quantus_call(name, metric, sub, args.batch_size)
            rows[name]["quantus_s"].append((clock() - t0) * scale)
        rows["suite"]["native_s"].append(sum(rows[m]["native_s"][-1] for m in metrics))
        for p in extra:
            rows["suite"][f"native_{p}_s"].append(sum(rows[m][f"native_{p}_s"][-1] for m in metrics))
        if not args.skip_quantus:
            rows["suite"]["quantus_s"].append(sum(rows[m]["quantus_s"][-1] for m in metrics))
        print(f"  {model_name} repeat {rep + 1}/{args.repeats} done", flush=True)
    fb = max(p["fwd_bwd"]["best_rate"] for p in probes)
    fw = max(p["fwd"]["best_rate"] for p in probes)
    _, metrics = build_metrics(ScoreConfig(metrics="paper", metric_params=over))
    total_fb = total_f = 0
    for name, metric in metrics.items():
        pfb, pf = required_points(name, metric, inp, args.n_steps)
        if name == "avg_sensitivity":
            suite_fb = 0  # shared with max_sensitivity in the suite
        else:
            suite_fb = pfb
        total_fb += suite_fb
        total_f += pf
        rows[name]["limit_s"] = pfb / fb + pf / fw
        rows[name]["points"] = {"fwd_bwd": pfb, "fwd": pf}
    rows["suite"]["limit_s"] = total_fb / fb + total_f / fw
    rows["suite"]["points"] = {"fwd_bwd": total_fb, "fwd": total_f}
    for r in rows.values():
        pts = r.get("points", {"fwd_bwd": 0, "fwd": 0})
        for p in ["fp32", *extra]:
            key = "native_s" if p == "fp32" else f"native_{p}_s"
            best = min(r[key]) if r[key] else None
            r[f"native_{p}_best_s"] = best
            r[f"native_{p}_limits"] = bl.shares(pts["fwd_bwd"], pts["fwd"], best, machine, p) if best and (pts["fwd_bwd"] or pts["fwd"]) else {}
        qb = min(r["quantus_s"]) if r["quantus_s"] else None
        r["quantus_limits"] = bl.shares(pts["fwd_bwd"], pts["fwd"], qb, machine, "fp32") if qb and (pts["fwd_bwd"] or pts["fwd"]) else {}
        for p in extra:
            b = r[f"native_{p}_best_s"]
            r[f"speedup_native_{p}_vs_quantus"] = qb / b if qb and b else None
            r[f"speedup_native_{p}_vs_fp32"] = min(r["native_s"]) / b if r["native_s"] and b else None
        r["native_best_s"] = min(r["native_s"]) if r["native_s"] else None
        r["quantus_best_s"] = min(r["quantus_s"]) if r["quantus_s"] else None
        nb, qb, lim = r["native_best_s"], r["quantus_best_s"], r.get("limit_s", 0)
        r["speedup_vs_quantus"] = qb / nb if nb and qb else None
        r["native_pct_of_limit"] = 100 * lim / nb if nb and lim else None
        r["quantus_pct_of_limit"] = 100 * lim / qb if qb and lim else None
    rows["avg_sensitivity"]["note"] = "native: reads max_sensitivity's perturbed explanations (shared draws); its time is in max_sensitivity"
    return {"model": model_name, "n": args.n, "nr_samples": args.nr_samples or 200, "quantus_n": args.quantus_n or args.n, "ig_steps": args.n_steps, "points_per_pass": ppp, "batch_size": args.batch_size,
            "probe_best": {"fwd_bwd_points_per_s": fb, "fwd_points_per_s": fw,
                           "fwd_bwd_best_batch": probes[-1]["fwd_bwd"]["best_batch"]},
            "probes": probes, "limits": machine, "precisions": ["fp32", *extra], "metrics": rows}


def table(res: dict) -> str:
    lines = [f"{res['model']}: n={res['n']} perturbations={res['nr_samples']} IG steps={res['ig_steps']} points/pass={res['points_per_pass']} "
             f"probe best fwd+bwd {res['probe_best']['fwd_bwd_points_per_s']:.0f} pts/s (batch {res['probe_best']['fwd_bwd_best_batch']}),"
             f" fwd {res['probe_best']['fwd_points_per_s']:.0f} pts/s",
             f"{'metric':26s} {'native s':>9s} {'quantus s':>10s} {'limit s':>8s} {'speedup':>8s} {'native%lim':>10s} {'quantus%lim':>11s}"]
    for name, r in res["metrics"].items():
        if name == "avg_sensitivity":
            r = {**r, "native_best_s": None, "speedup_vs_quantus": None, "native_pct_of_limit": None}
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"{name:26s} {f(r['native_best_s'], '9.2f')} {f(r['quantus_best_s'], '10.2f')} {f(r.get('limit_s'), '8.2f')}"
                     f" {f(r['speedup_vs_quantus'], '8.2f')} {f(r['native_pct_of_limit'], '10.0f')} {f(r['quantus_pct_of_limit'], '11.0f')}")
    lines.append("avg_sensitivity (native): shares max_sensitivity's perturbed explanations; its time is counted there")
    lines.append(bl.limits_table(res["model"], res["limits"]))
    lines.append(f"  {'metric':26s} {'engine/prec':12s} {'s':>8s} {'x quantus':>9s} {'GFLOP/s':>8s} {'%raw fp32':>9s} {'%raw same':>9s}"
                 f" {'%raw best':>9s} {'%peak':>6s}")
    for name, r in res["metrics"].items():
        if name == "avg_sensitivity":
            continue
        cells = [(f"native/{p}", r.get(f"native_{p}_best_s"), r.get(f"native_{p}_limits") or {}) for p in res["precisions"]]
        cells.append(("quantus/fp32", r.get("quantus_best_s"), r.get("quantus_limits") or {}))
        for label, sec, sh in cells:
            if sec is None:
                continue
            qb = r.get("quantus_best_s")
            sp = f"{qb / sec:9.2f}" if qb and not label.startswith("quantus") else f"{'-':>9s}"
            def g(k, fmt, sh=sh):
                return format(sh[k], fmt) if k in sh else "-"
            lines.append(f"  {name:26s} {label:12s} {sec:8.2f} {sp} {g('gflops', '8.1f'):>8s} {g('pct_raw_fp32', '9.0f'):>9s}"
                         f" {g('pct_raw_same_precision', '9.0f'):>9s} {g('pct_raw_best', '9.0f'):>9s} {g('pct_peak', '6.1f'):>6s}")
    return "\n".join(lines)


def deviation(runs: list[str], args) -> dict:
    """bf16 vs fp32 through the real explain + score stages (IG, paper preset) on copies of two runs.

    Same samples, same seeds, same perturbation draws: only the precision differs. Per metric: the
    per-sample relative error |bf16 - fp32| / |fp32| (pooled over both runs), and the Standard-vs-PGD
    paired statistic (mean of PGD - Standard, Wilcoxon) in each precision."""
    import shutil

    import pandas as pd
    from scipy import stats as sst

    from xairobust.runs import load_tensors
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    if len(runs) != 2:
        raise SystemExit("error: --deviation takes two run directories, STD_RUN,PGD_RUN")
    tmp = Path(tempfile.mkdtemp(prefix="bench_deviation_"))
    over = {m: {"nr_samples": args.nr_samples} for m in SENSITIVITY} if args.nr_samples else {}
    vals: dict[tuple[str, int], pd.DataFrame] = {}
    attrs: dict[tuple[str, int], dict] = {}
    cpu: dict[str, float] = {}
    for p in ("fp32", "bf16"):
        for i, run in enumerate(runs):
            d = tmp / p / f"run{i}"
            shutil.copytree(run, d, ignore=shutil.ignore_patterns("attributions", "scores", "manipulation", "visualisations"))
            t0 = time.process_time()
            explain(d, ExplainConfig(explainer="ig", params={"n_steps": args.n_steps}, n=args.deviation_n, device=args.device,
                                     data_dir=args.data_dir, precision=p), quiet=True)
            score(d, ScoreConfig(explainer="ig", metrics="paper", metric_params=over, device=args.device, precision=p), quiet=True)
            cpu[f"{p}/run{i}"] = round(time.process_time() - t0, 2)
            vals[(p, i)] = pd.read_csv(d / "scores" / "ig.csv").pivot(index="index", columns="metric", values="value")
            attrs[(p, i)] = load_tensors(d / "attributions" / "ig.safetensors")
            print(f"  deviation: {p} run {i} done ({cpu[f'{p}/run{i}']} s CPU)", flush=True)
    out: dict = {"runs": runs, "n": args.deviation_n, "ig_steps": args.n_steps, "nr_samples": args.nr_samples or 200,
                 "cpu_s": cpu, "metrics": {}}
    for i in range(2):
        a32, a16 = attrs[("fp32", i)]["attributions"], attrs[("bf16", i)]["attributions"]
        rel = ((a16 - a32).flatten(1).norm(dim=1) / a32.flatten(1).norm(dim=1).clamp_min(1e-30)).numpy()
        out[f"ig_attribution_rel_l2_run{i}"] = {"median": float(np.median(rel)), "max": float(rel.max())}
        out[f"targets_changed_run{i}"] = int((attrs[("fp32", i)]["targets"] != attrs[("bf16", i)]["targets"]).sum())
    for m in vals[("fp32", 0)].columns:
        f = [vals[("fp32", i)][m].to_numpy() for i in range(2)]
        b = [vals[("bf16", i)][m].to_numpy() for i in range(2)]
        rel = np.concatenate([np.abs(bb - ff) / np.maximum(np.abs(ff), 1e-12) for ff, bb in zip(f, b, strict=True)])
        absdev = np.concatenate([np.abs(bb - ff) for ff, bb in zip(f, b, strict=True)])
        row = {"rel_err_median": float(np.nanmedian(rel)), "rel_err_p90": float(np.nanpercentile(rel, 90)),
               "rel_err_max": float(np.nanmax(rel)), "abs_dev_mean": float(np.nanmean(absdev))}
        for p, (s0, s1) in (("fp32", f), ("bf16", b)):
            diff = s1 - s0
            ok = np.isfinite(diff)
            w = sst.wilcoxon(diff[ok]) if ok.sum() > 1 and np.any(diff[ok] != 0) else None
            row[p] = {"mean_diff_pgd_minus_std": float(diff[ok].mean()), "wilcoxon_statistic": None if w is None else float(w.statistic),
                      "p_value": None if w is None else float(w.pvalue)}
        md32 = row["fp32"]["mean_diff_pgd_minus_std"]
        row["mean_diff_change"] = row["bf16"]["mean_diff_pgd_minus_std"] - md32
        row["mean_diff_change_rel"] = row["mean_diff_change"] / abs(md32) if md32 else None
        row["bf16_deviation_exceeds_method_difference"] = bool(row["abs_dev_mean"] > abs(md32))
        out["metrics"][m] = row
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def deviation_table(dev: dict) -> str:
    lines = [f"bf16 vs fp32 (explain + score stages, IG-{dev['ig_steps']}, n={dev['n']}, {dev['nr_samples']} perturbations),"
             f" runs {dev['runs'][0]} (std) / {dev['runs'][1]} (pgd)"]
    for i in range(2):
        a = dev[f"ig_attribution_rel_l2_run{i}"]
        lines.append(f"  run{i}: IG attribution rel. L2 error median {a['median']:.2e} max {a['max']:.2e};"
                     f" explained targets changed {dev[f'targets_changed_run{i}']}")
    lines.append(f"  {'metric':26s} {'rel med':>8s} {'rel p90':>8s} {'rel max':>8s} {'|dev|':>9s} {'diff fp32':>10s} {'diff bf16':>10s}"
                 f" {'p fp32':>8s} {'p bf16':>8s}  dev>diff")
    for m, r in dev["metrics"].items():
        def pv(x):
            return f"{x:8.3g}" if x is not None else f"{'-':>8s}"
        lines.append(f"  {m:26s} {r['rel_err_median']:8.1e} {r['rel_err_p90']:8.1e} {r['rel_err_max']:8.1e} {r['abs_dev_mean']:9.2e}"
                     f" {r['fp32']['mean_diff_pgd_minus_std']:10.3e} {r['bf16']['mean_diff_pgd_minus_std']:10.3e}"
                     f" {pv(r['fp32']['p_value'])} {pv(r['bf16']['p_value'])}  {'YES' if r['bf16_deviation_exceeds_method_difference'] else 'no'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn,cifar_cnn")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--n-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--points-per-pass", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py (real CIFAR inputs)")
    ap.add_argument("--run", default=None, help="a trained run directory to use for --run-model")
    ap.add_argument("--run-model", default="cifar_cnn")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None, help="cpu: process CPU time (default on CPU), wall: wall time (default on GPU)")
    ap.add_argument("--nr-samples", type=int, default=0, help="perturbations of the sensitivity metrics (default: paper's 200)")
    ap.add_argument("--probe-max", type=int, default=4096, help="largest batch size the limit probe tries")
    ap.add_argument("--quantus-n", type=int, default=0, help="time Quantus' sensitivity metrics on this many samples, scaled to n")
    ap.add_argument("--skip-quantus", default="", help="comma-separated metrics not to time through Quantus")
    ap.add_argument("--precisions", default="fp32,bf16", help="precisions the native engine is timed in (fp32 always)")
    ap.add_argument("--compile", default="", help="precisions (e.g. fp32 or fp32,bf16) at which to also measure torch.compile(model) in the raw limit matrix (minutes of C++ compilation on CPU)")
    ap.add_argument("--deviation", default="", help="STD_RUN,PGD_RUN: bf16-vs-fp32 deviation of every metric through the"
                    " real explain + score stages on copies of these trained runs (needs --data-dir for CIFAR)")
    ap.add_argument("--deviation-n", type=int, default=16)
    ap.add_argument("--skip-bench", action="store_true", help="only the --deviation part")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "bench_score.json"))
    args = ap.parse_args()
    args.skip_quantus = set(filter(None, args.skip_quantus.split(",")))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    CLOCK["fn"] = time.process_time if args.clock == "cpu" else time.perf_counter
    results = {"clock": args.clock, "host": platform.node(), "threads": args.threads, "device": str(device), "torch": torch.__version__, "models": []}
    args.precisions = [p for p in args.precisions.split(",") if p]
    results["argv"] = sys.argv
    for name in ([] if args.skip_bench else args.models.split(",")):
        res = bench_model(name, args, device)
        results["models"].append(res)
        print(table(res), flush=True)
    if args.deviation:
        results["deviation"] = deviation(args.deviation.split(","), args)
        print(deviation_table(results["deviation"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
