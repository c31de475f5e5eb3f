"""``xairobust manipulate``: attack a run's explanations (keeping its predictions) and measure the damage."""

from __future__ import annotations

import click

from xairobust.cli_util import (
    config_option,
    merged_config,
    model_options,
    parse_extra_options,
    quiet_option,
    threat_options,
)
from xairobust.runtime import runtime_options

EXTRA = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


@click.command(context_settings=EXTRA)
@config_option
@model_options()
@click.option("--attack", help="topk (default), masscenter, random, targeted.")
@click.option("--explainer", help="Explainer attacked: ig (default), saliency, input_x_gradient, smoothgrad, smoothgrad_ig.")
@threat_options("Attack steps (default 20; random: draws).", norm_choice=True)
@click.option("--beta", type=float, help="Softplus beta of the smoothed copy attacked (default 10).")
@click.option("--topk", type=float, help="Top-k attack: fraction of features pushed down (default 0.1).")
@click.option("--expl-weight", type=float, help="Targeted: weight of the explanation term (default 1).")
@click.option("--out-weight", type=float, help="Targeted: weight of the output term, gamma (default 1).")
@click.option("--fool-measure", help="Measure whose value below --fool-threshold counts as fooled (default topk_10).")
@click.option("--fool-threshold", type=float, help="Threshold of the fooling success rate (default 0.5).")
@click.option("--transfer-to", help="Comma-separated explainers the perturbation is also scored with.")
@click.option("--n", type=int, help="Test samples (default 64).")
@click.option("--selection", type=click.Choice(["stratified", "first", "random"]))
@click.option("--seed", type=int)
@click.option("--batch-size", type=int)
@click.option("--device", help="auto (default), cpu, cuda, ...")
@runtime_options
@click.option("--data-dir", help="Where datasets live.")
@quiet_option
@click.pass_context
def manipulate(ctx: click.Context, model_ref, config_path: str | None, quiet: bool, **options) -> None:
    """Manipulate explanations of a run: writes RUN/manipulation/<attack>_<explainer>.{safetensors,csv,json}.

    Explainer parameters are extra options (e.g. `--n-steps 16` for ig). Example:
    `xairobust manipulate --model runs/digits_pgd --attack topk --explainer ig --eps 0.1 --transfer-to saliency`.
    """
    from xairobust import config as cfg
    from xairobust.runs import read_json, require_run
    from xairobust.stages.manipulate import ManipulateConfig
    from xairobust.stages.manipulate import manipulate as run_manipulate

    params = parse_extra_options(ctx.args, "manipulate")
    data = merged_config(config_path, {**options, "params": params})
    run_dir = model_ref.resolve("manipulate", data)
    require_run(run_dir)
    conf = cfg.build(ManipulateConfig, data, config_path or "manipulate")
    path = run_manipulate(run_dir, conf, quiet=quiet)
    doc = read_json(path)
    for explainer, means in doc["means"].items():
        shown = ", ".join(f"{k} {means[k]:.3f}" for k in ("topk_10", "spearman", "ssim", "fooled") if k in means)
        click.echo(f"{doc['attack']} -> {explainer}: {shown}")
    if doc["cost"]["attack_over_explain"] is not None:
        click.echo(f"cost: {doc['cost']['attack_over_explain']}x one {conf.explainer} explanation per image")
    click.echo(f"written to {path}")




@click.command("manipulation-report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, help="Folder for manipulation.md/.csv, manipulation_stats.csv and figures/.")
@click.option("--baseline", default="standard", show_default=True, help="Label every method is tested against.")
@click.option("--test", type=click.Choice(["wilcoxon", "ttest"]), default="wilcoxon", show_default=True)
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--force", is_flag=True, help="Write into an --out folder that holds files xairobust did not write.")
def manipulation_report(runs: tuple[str, ...], out: str, baseline: str, test: str, alpha: float, force: bool) -> None:
    """Only the manipulation section of a report (`xairobust report` adds it to full reports)."""
    from xairobust.errors import ConfigError
    from xairobust.report.build import REPORT_JSON
    from xairobust.report.manipulation import report
    from xairobust.validate import check_not_foreign, check_output_dir

    if not 0 < alpha < 1:  # also NaN
        raise ConfigError(f"manipulation-report: --alpha must be in (0, 1), got {alpha}")
    check_output_dir(out, "--out")
    check_not_foreign(out, "manipulation-report: --out", force, markers=(REPORT_JSON,))

    written = report(list(runs), out, baseline=baseline, test=test, alpha=alpha, formats=("png", "pdf"))
    if not written:
        from xairobust.errors import RunError

        raise RunError("manipulation-report: none of the runs has manipulation/*.json; run `xairobust manipulate` first")
    click.echo(f"manipulation report written to {out} ({len(written)} files)")


def register(group: click.Group) -> None:
    group.add_command(manipulate)
    group.add_command(manipulation_report)
