"""Run a MER zoo file (configs/zoo/mer*.yaml): train every label x seed, attack, report.

Resumable: a run whose run.json exists is not trained again, and an attack already recorded
for the same weights is not repeated. Entries that need the mid-level annotations are skipped
(with a note) when they are absent, so the CPU zoo runs on the Soundtracks data alone.

    python scripts/run_mer_zoo.py configs/zoo/mer_cpu.yaml [--data-dir DIR] [--only A2E,aA2E] [--seeds 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xairobust import config as cfg
from xairobust.attacks.bim_regression import BIMRegressionParams
from xairobust.data.base import resolve_data_dir
from xairobust.errors import DataError


def expand(zoo: dict, only: set[str] | None, seeds: list[int] | None) -> list[tuple[str, int, dict]]:
    jobs = []
    for entry in zoo["runs"]:
        label = entry["label"]
        if only and label not in only:
            continue
        for seed in seeds if seeds is not None else zoo["seeds"]:
            conf = {**zoo.get("defaults", {}), **entry, "seed": seed}
            jobs.append((label, seed, conf))
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", default=None, help="comma-separated labels")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the file's)")
    ap.add_argument("--out", default=None, help="run folder (default: the file's `out`)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from xairobust.stages.mer_attack import attack_regression_run
    from xairobust.stages.train import TrainConfig, train

    zoo = cfg.load_yaml(args.zoo)
    out = Path(args.out or zoo.get("out", "runs/mer"))
    only = set(args.only.split(",")) if args.only else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    attack = cfg.build(BIMRegressionParams, zoo.get("attack", {}), f"{args.zoo}: attack")
    data_dir = str(resolve_data_dir(args.data_dir))
    for label, seed, conf in expand(zoo, only, seeds):
        run_dir = out / f"{label}_s{seed}"
        conf = {**conf, "data_dir": data_dir}
        t0 = time.perf_counter()
        if not (run_dir / "run.json").is_file():
            try:
                train(cfg.build(TrainConfig, conf, f"{args.zoo}: {label}"), run_dir, quiet=args.quiet)
            except DataError as exc:
                if conf.get("dataset_kwargs", {}).get("midlevel"):
                    print(f"skip {label} s{seed}: {exc}", file=sys.stderr)
                    continue
                raise
        t1 = time.perf_counter()
        e = attack_regression_run(run_dir, attack, data_dir=data_dir, quiet=args.quiet, device=conf.get("device", "cpu"))
        t2 = time.perf_counter()
        print(f"{label} s{seed}: train {t1 - t0:.0f}s, attack {t2 - t1:.0f}s; MAE {e['mae_before']:.4f} ->"
              f" {e['mae_after']:.4f} (ΔMAE {e['delta_mae']:+.4f}), corr {e['corr_before']:.3f} -> {e['corr_after']:.3f},"
              f" SNR {e['snr_db']} dB", flush=True)
    if not args.no_report:
        from xairobust.report.mer import write_report

        rep = zoo.get("report", {})
        write_report([out], rep.get("out", f"results/{zoo.get('name', 'mer')}"), eps=attack.eps,
                     unconstrained=attack.unconstrained_reference,
                     emotions=tuple(rep.get("emotions", ("tension", "tender"))),
                     scatter_models=tuple(rep.get("scatter_models", ("A2B2E", "A2M2E", "aA2B2E"))),
                     ttest_on=rep.get("ttest_on", "after"))
        print((Path(rep.get("out", f"results/{zoo.get('name', 'mer')}")) / "table1.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
