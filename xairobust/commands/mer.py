"""``xairobust mer-attack`` and ``xairobust mer-report``: the music-emotion robustness study.

``mer-attack`` runs the BIM regression attack on regression runs and records ΔMAE etc. in
their robustness.json; ``mer-report`` writes Table 1, Fig. 3, Fig. 4 and the t-tests.
"""

from __future__ import annotations

from pathlib import Path

import click

from xairobust.cli_util import quiet_option


@click.command("mer-attack", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--eps", type=float, help="L-inf radius (standardised spectrogram units; default 0.001).")
@click.option("--step-size", type=float, help="Sign-step size eta (default 0.002).")
@click.option("--max-iter", type=int, help="Iterations (default 1000).")
@click.option("--corr-threshold", type=str,
              help="Stop a sample when its prediction/target correlation is <= this ('none': off; default -1).")
@click.option("--mse-threshold", type=str, help="Stop a sample when its MSE is >= this ('none': off, default).")
@click.option("--unconstrained-reference", is_flag=True, default=None,
              help="Reproduce the reference code (Adam steps, clip never applied): perturbations leave the eps-ball.")
@click.option("--split", help="Dataset split (default test).")
@click.option("--n", type=int, default=None, help="Attack only the first N samples of the split.")
@click.option("--batch-size", type=int, help="Samples per batch (default 36).")
@click.option("--device", help="auto (cuda when available; default), cpu, cuda:1, ...")
@click.option("--data-dir", default=None, help="Where datasets live (default: $XAIROBUST_DATA, else ~/.cache/xairobust/data).")
@click.option("--force", is_flag=True, help="Attack again even when this result exists for these weights.")
@quiet_option
def mer_attack(runs, force, quiet, **options) -> None:
    """BIM regression attack on RUNS: MAE/correlation before and after, ΔMAE, SNR -> robustness.json.

    The same attack, config and defaults as `xairobust attack --attack bim-regression`
    (stages.mer_attack.BIMAttackConfig).
    """
    from xairobust import config as cfg
    from xairobust.runs import require_run
    from xairobust.stages.mer_attack import BIMAttackConfig, run_bim

    conf = cfg.build(BIMAttackConfig, {k: v for k, v in options.items() if v is not None}, "mer-attack")
    from xairobust.runs import check_run

    dirs = [require_run(r) for r in runs]  # validate every path before attacking any
    for run_dir in dirs:
        check_run(run_dir)
    for run_dir in dirs:
        e = run_bim(run_dir, conf, force=force, quiet=quiet)
        snr = "n/a" if e["snr_db"] is None else f"{e['snr_db']:.1f} dB"
        click.echo(
            f"{run_dir}: MAE {e['mae_before']:.4f} -> {e['mae_after']:.4f} (ΔMAE {e['delta_mae']:+.4f}),"
            f" corr {e['corr_before']:.3f} -> {e['corr_after']:.3f}, SNR {snr}, L-inf {e['linf_max']:.2g}"
        )


@click.command("mer-report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, help="Output folder (table1.*, ttests.*, figures/, summary.json).")
@click.option("--eps", type=float, default=None, help="Which attack radius to report (default: the latest result).")
@click.option("--unconstrained-reference", is_flag=True, help="Report the reference-mode (unclipped) attack results.")
@click.option("--emotions", default="tension,tender", show_default=True, help="Emotions of the scatter figure.")
@click.option("--scatter-models", default="A2B2E,A2M2E,aA2B2E", show_default=True, help="Labels shown in the scatter figure.")
@click.option("--scatter-seed", type=int, default=None, help="Seed of the runs in the scatter figure (default: lowest).")
@click.option("--ttest-on", type=click.Choice(["after", "delta"]), default="after", show_default=True,
              help="Per-excerpt statistic: MAE after the attack (the reference's test) or ΔMAE.")
@click.option("--pairs", default="A2E:A2M2E,A2B2E:A2M2E", show_default=True,
              help="Label pairs to t-test (Bonferroni over all of them), e.g. A2E:aA2E.")
def mer_report(runs, out, eps, unconstrained_reference, emotions, scatter_models, scatter_seed, ttest_on,
               pairs) -> None:
    """Table 1, ΔMAE box plot, true-vs-predicted scatter and t-tests for attacked MER runs."""
    from xairobust.errors import ConfigError
    from xairobust.report.mer import write_report
    from xairobust.validate import check_output_dir

    check_output_dir(out, "--out")

    pair_list = []
    for item in (p.strip() for p in pairs.split(",") if p.strip()):
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise ConfigError(f"mer-report: --pairs takes A:B items separated by commas, got '{item}'")
        pair_list.append((a, b))

    summary = write_report(
        list(runs), out, eps=eps, unconstrained=unconstrained_reference,
        emotions=tuple(e.strip() for e in emotions.split(",") if e.strip()),
        scatter_models=tuple(m.strip() for m in scatter_models.split(",") if m.strip()),
        scatter_seed=scatter_seed, ttest_on=ttest_on, pairs=tuple(pair_list),
    )
    click.echo((Path(out) / "table1.md").read_text(), nl=False)
    click.echo((Path(out) / "ttests.md").read_text(), nl=False)
    click.echo(f"report of {len(summary['runs'])} run(s) written to {out}")


def register(group: click.Group) -> None:
    group.add_command(mer_attack)
    group.add_command(mer_report)
