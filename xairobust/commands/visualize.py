"""``xairobust visualize`` (inversion, generation, feature visualisation) and ``xairobust fid``."""

from __future__ import annotations

import click

from xairobust.cli_util import config_option, merged_config, model_options, parse_extra_options, quiet_option
from xairobust.runtime import runtime_options

EXTRA = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


def _check_params(params: dict, kind: str, command: click.Command) -> None:
    from xairobust.cli_util import check_extra_keys
    from xairobust.registry import VISUALISATIONS

    check_extra_keys(params, VISUALISATIONS.get(kind), command, f"visualisation '{kind}'")


@click.command(context_settings=EXTRA)
@config_option
@model_options()
@click.option("--kind", help="inversion (default), generation or feature.")
@click.option("--preset", type=click.Choice(["boychev", "quick"]),
              help="boychev: the paper's steps/eps/step (default); quick: fewer steps for CPU runs.")
@click.option("--n", type=int, help="inversion: images; generation: images per class; feature: units (default 10).")
@click.option("--classes", help="generation: classes to draw, e.g. 0,3,5 (default: all).")
@click.option("--units", help="feature: units to maximise, e.g. 130,492 (default: --n units drawn with --seed).")
@click.option("--layer", help="Module (by name) whose output is the representation (default: input of the final linear layer).")
@click.option("--seed", type=int, help="Seed of every draw (default 0).")
@click.option("--batch-size", type=int, help="Images per PGD batch (memory only).")
@click.option("--device", help="auto (default), cpu, cuda, ...")
@runtime_options
@click.option("--data-dir", help="Where datasets live.")
@click.option("--fid", "with_fid", is_flag=True, help="Then compute FID / feature distance (options of `xairobust fid`).")
@click.option("--extractor", help="With --fid: inception (default) or run:<RUN>.")
@click.option("--inception-weights", help="With --fid: Inception-v3 weights file (default: the torch hub cache path).")
@quiet_option
@click.pass_context
def visualize(ctx: click.Context, model_ref, config_path: str | None, quiet: bool, with_fid: bool,
              extractor: str | None, inception_weights: str | None, **options) -> None:
    """Visualise what a run's model learned: writes RUN/visualisations/<kind>.safetensors and .json.

    PGD settings and the kind's options are extra options, e.g. `--kind inversion --steps 1000
    --source noise`, `--kind generation --eps 30 --step-size 0.5 --ridge 1e-4`,
    `--kind feature --top-k 8 --pool 2000`.
    """
    from xairobust import config as cfg
    from xairobust.runs import require_run
    from xairobust.stages.visualize import VisualizeConfig
    from xairobust.stages.visualize import visualize as run_visualize

    params = parse_extra_options(ctx.args, "visualize")
    data = merged_config(config_path, {**options, "params": params})
    run_dir = model_ref.resolve("visualize", data)
    require_run(run_dir)
    conf = cfg.build(VisualizeConfig, data, config_path or "visualize")
    _check_params(dict(conf.params), conf.kind, ctx.command)
    path = run_visualize(run_dir, conf, quiet=quiet)
    click.echo(f"visualisation written to {path}")
    if with_fid:
        from xairobust.stages.visualize import FidConfig, fid

        fconf = cfg.build(FidConfig, {k: v for k, v in {
            "extractor": extractor, "inception_weights": inception_weights,
            "device": options.get("device"), "data_dir": options.get("data_dir")}.items() if v is not None}, "fid")
        if conf.kind == "feature":
            click.echo("--fid: the feature kind has no FID or feature distance; nothing computed")
            return
        click.echo(f"metrics written to {fid(run_dir, fconf, quiet=quiet)}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@model_options(multiple=True)
@click.option("--extractor", help="inception (default; local weights) or run:<RUN> (a trained run's representation).")
@click.option("--inception-weights", help="Inception-v3 weights file (default: the torch hub cache path).")
@click.option("--layer", help="FID features: inception 64|192|768|2048 (default 2048); run: a module name.")
@click.option("--distance-layer", help="Feature distance of inversions: inception default 192 (the paper's).")
@click.option("--kinds", help="generation,inversion (default: both, those present).")
@click.option("--real", type=int, help="Real test images per class for FID (default 0: all).")
@click.option("--batch-size", type=int)
@click.option("--device", help="auto (default), cpu, cuda, ...")
@click.option("--data-dir", help="Where datasets live.")
@quiet_option
def fid_command(model_ref, config_path: str | None, quiet: bool, **options) -> None:
    """FID of generated images and feature distance of inversions, with a recorded extractor.

    Writes RUN/visualisations/metrics_<extractor>.csv (per class / per image) and .json.
    FIDs from different extractors are not comparable; the extractor is in every output.
    """
    from xairobust import config as cfg
    from xairobust.runs import read_json, require_run
    from xairobust.stages.visualize import FidConfig, fid

    data = merged_config(config_path, options)
    run_dirs = model_ref.resolve_all("fid", data)
    conf = cfg.build(FidConfig, data, config_path or "fid")
    for run_dir in run_dirs:
        require_run(run_dir)
        path = fid(run_dir, conf, quiet=quiet)
        doc = read_json(path)
        parts = []
        if "generation" in doc:
            g = doc["generation"]
            parts.append(f"FID {_g(g.get('fid'))} (reference {_g(g.get('fid_reference'))}, class mean {_g(g.get('class_fid_mean'))})")
        if "inversion" in doc:
            i = doc["inversion"]
            sd = i.get("feature_distance_std")  # null for one image: no spread to show
            spread = f" ± {_g(sd)}" if sd is not None else ""
            parts.append(f"feature distance {_g(i.get('feature_distance_mean'))}{spread} (n={i.get('n')})")
        click.echo(f"{run_dir}: {'; '.join(parts)} [{conf.extractor}] -> {path}")


def _g(value) -> str:
    """A summary number, or 'n/a' where the JSON has null (e.g. a class FID from one image per class)."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def register(group: click.Group) -> None:
    group.add_command(visualize)
    group.add_command(fid_command, name="fid")
