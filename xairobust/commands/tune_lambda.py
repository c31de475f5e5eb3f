"""``xairobust tune-lambda``: choose NsLoss's lambda for a standard run (Moshe et al., sec. 4.4).

The protocol and its computation are in :mod:`xairobust.stages.tune_lambda`; this module parses
the options and prints the search.
"""

from __future__ import annotations

import click

from xairobust.cli_util import config_option, merged_config, model_options, quiet_option


@click.command("tune-lambda", context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@model_options()
@click.option("--eps-ns", help="NsLoss perturbation radius (L2, input space).")
@click.option("--perturbations", type=int, help="N perturbations per sample (default 5).")
@click.option("--layers", help="Comma-separated glob patterns of measured modules (default: every conv/linear).")
@click.option("--granularity", help="element (default) or channel.")
@click.option("--lr", type=float, help="Fine-tuning learning rate per candidate (default 1e-4, as the paper).")
@click.option("--optimizer", help="sgd (default), adam or adamw.")
@click.option("--batch-size", type=int, help="Batch size for NsLoss_0 and training (default 64).")
@click.option("--batches", type=int, help="Random batches per split for NsLoss_0 (default 10).")
@click.option("--iterations", type=int, help="Binary-search candidates (default 5).")
@click.option("--window", type=int, help="Batches averaged before comparing CE with log2(C) (default 5).")
@click.option("--tolerance", type=float, help="Count CE >= (1 - tol) * log2(C) bits as too high (default 0).")
@click.option("--seed", type=int)
@click.option("--device", help="auto (default), cpu, cuda, ...")
@click.option("--data-dir", help="Where datasets live.")
@click.option("--out", help="JSON file to write (default RUN/tune_lambda.json).")
@quiet_option
def tune_lambda_command(config_path: str | None, quiet: bool, model_ref,
                        **options) -> None:
    """Choose NsLoss's lambda for a standard run with the paper's protocol (sec. 4.4)."""
    from xairobust.runs import check_run
    from xairobust.stages.tune_lambda import tune_lambda
    from xairobust.validate import check_output_file

    data = merged_config(config_path, options)
    run = model_ref.resolve("tune-lambda", data)
    check_run(run)
    # the result is written after minutes of fine-tuning: a bad --out must fail now
    check_output_file(data["out"] if data.get("out") else f"{run}/tune_lambda.json", "--out")
    path, result = tune_lambda(run, data, quiet=quiet)
    for t in result["trace"]:
        click.echo(f"lambda {t['lambda']:.5g}: max windowed CE {t['max_window_ce_bits']:.4f} bits -> {'too high' if t['too_high'] else 'ok'}")
    click.echo(f"NsLoss_0 {result['nsloss0']:.5g}, lambda_0 {result['lambda0']:.5g}, chosen lambda {result['chosen_lambda']}")
    click.echo(f"written to {path}")


def register(group: click.Group) -> None:
    group.add_command(tune_lambda_command)
