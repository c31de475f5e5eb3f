"""``xairobust explain``: attributions of test samples for a run (explainer params as extra options)."""

from __future__ import annotations

import click

from xairobust.cli_util import config_option, merged_config, model_options, parse_extra_options, quiet_option
from xairobust.runtime import runtime_options

EXTRA = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


@click.command(context_settings=EXTRA)
@config_option
@model_options()
@click.option("--explainer", help="ig (default), saliency, input_x_gradient, smoothgrad, smoothgrad_ig, gradcam, lrp, lime,"
              " kernel_shap, gradient_shap, expected_gradients (`xairobust list explainers` for their options).")
@click.option("--n", type=int, help="Test samples to explain (default 200).")
@click.option("--target", help="Output explained: pred (default), label, or an output index (regression).")
@click.option("--selection", type=click.Choice(["stratified", "first", "random"]), help="How the n samples are chosen.")
@click.option("--seed", type=int, help="Base of the per-sample seeds (default 0).")
@click.option("--background-size", type=int, help="Training inputs drawn as baselines (expected_gradients).")
@click.option("--batch-size", type=int, help="Samples per explainer call (memory only).")
@click.option("--points-per-pass", type=int, help="Model points per explainer pass, e.g. IG samples x steps (0 = auto from memory; speed only).")
@click.option("--device", help="auto (default), cpu, cuda, ...")
@runtime_options
@click.option("--data-dir", help="Where datasets live.")
@quiet_option
@click.pass_context
def explain(ctx: click.Context, model_ref, config_path: str | None, quiet: bool,
            **options) -> None:
    """Explain test samples of a trained model: writes RUN/attributions/<explainer>.safetensors and .json.

    Explainer parameters are extra options, e.g. `--explainer ig --n-steps 32 --baseline blurred`,
    `--explainer gradient_shap --n-samples 50 --stdevs 0.1`, `--explainer gradcam --layer net.stage4`,
    `--explainer lime --segmentation slic --n-segments 50`; they are checked against the
    explainer's parameters (unknown ones get a did-you-mean error).
    """
    from xairobust import config as cfg
    from xairobust.runs import check_run
    from xairobust.stages.explain import ExplainConfig
    from xairobust.stages.explain import explain as run_explain
    from xairobust.validate import check_output_dir

    params = parse_extra_options(ctx.args, "explain")
    data = merged_config(config_path, {**options, "params": params})
    run_dir = model_ref.resolve("explain", data)
    check_run(run_dir)  # a damaged run.json or a run that does not fit its dataset: one line, now
    check_output_dir(run_dir, "--model")
    conf = cfg.build(ExplainConfig, data, config_path or "explain")
    path = run_explain(run_dir, conf, quiet=quiet)
    click.echo(f"attributions written to {path}")


def register(group: click.Group) -> None:
    group.add_command(explain)
