"""``xairobust import``: a downloaded checkpoint -> a run directory every stage accepts."""

from __future__ import annotations

import click

from xairobust.cli_util import config_option, merged_config, quiet_option


def _mapping(text: str | None) -> dict | None:
    """``--model-kwargs "{depth: 34, widen_factor: 10}"`` (YAML / JSON flow mapping)."""
    if text is None:
        return None
    import yaml

    from xairobust.errors import ConfigError

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"import: --model-kwargs is not a YAML mapping ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"import: --model-kwargs must be a mapping such as '{{depth: 34}}', got {text!r}")
    return value


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoints", nargs=-1)
@config_option
@click.option("--model", help="Registered architecture the weights are for (`xairobust list models`), e.g. wideresnet, timm:resnet50.")
@click.option("--dataset", help="Dataset the model classifies (`xairobust list datasets`): sets the input shape and classes.")
@click.option("--out", help="Run directory to write (default: runs/imported/<checkpoint stem>); with several"
              " checkpoints, the folder their run directories (<stem>) go into.")
@click.option("--format", "format_", help="auto (default), state_dict, robustbench, madrylab, timm, torchvision, safetensors.")
@click.option("--key", help="Nested entry that holds the weights, e.g. state_dict, last, model (default: found by the format).")
@click.option("--mean", help="Per-channel mean of the model's input normalisation, for inputs in [0, 1] (e.g. 0.485,0.456,0.406).")
@click.option("--std", help="Per-channel std, with --mean.")
@click.option("--preset", help="Named normalisation instead of --mean/--std: imagenet, cifar10, identity, half.")
@click.option("--model-kwargs", help="Architecture options as a YAML mapping, e.g. '{depth: 34, widen_factor: 10}'.")
@click.option("--num-outputs", type=int, help="Classifier outputs when they differ from the dataset's classes (e.g. 1000 for an ImageNet model used as init:).")
@click.option("--label", help="Row name in reports (default: the checkpoint's file name without suffix).")
@click.option("--seed", type=int, help="Index that tells several checkpoints of one label apart in reports (default 0).")
@click.option("--verify", type=int, help="Evaluate clean accuracy on the first N test images and record it in run.json.")
@click.option("--batch-size", type=int, help="Batch size of --verify.")
@click.option("--device", help="auto (default), cpu, cuda, ...")
@click.option("--data-dir", help="Where datasets live (for --verify).")
@click.option("--force", is_flag=True, help="Replace a run of another checkpoint or settings in --out.")
@quiet_option
def import_command(checkpoints: tuple[str, ...], config_path: str | None, quiet: bool, force: bool, format_: str | None,
                   model_kwargs: str | None, out: str | None, **options) -> None:
    """Import CHECKPOINT... (local files) as run directories: model.safetensors + run.json + config.yaml.

    The file is read without unpickling (torch.load(weights_only=True) or safetensors) and loaded
    into the registered architecture with strict key matching. The normalisation is read from the
    checkpoint when it carries one (MadryLab, RobustBench's mu/sigma), else give --mean/--std or
    --preset. Several checkpoints of one architecture import in one call, each into --out/<stem>
    (a failing one is reported and the others go on). Example:

    \b
        xairobust import Standard.pt --model wrn28_10 --dataset cifar10 --preset identity --verify 500 --out runs/rb_standard
        xairobust import downloads/*.pt --model wideresnet --dataset cifar10 --format robustbench --out runs/imported
    """
    from pathlib import Path

    from xairobust import config as cfg
    from xairobust.errors import ConfigError, XaiRobustError
    from xairobust.runs import read_run_meta
    from xairobust.stages.import_ import ImportConfig, import_checkpoint

    data = merged_config(config_path, {**options, "format": format_, "model_kwargs": _mapping(model_kwargs)})
    out = out or data.pop("out", None)
    data.pop("out", None)
    files = list(checkpoints) or ([data["checkpoint"]] if data.get("checkpoint") else [])
    if not files:
        raise ConfigError("import: give the checkpoint file: `xairobust import CHECKPOINT --model ARCH --dataset DS`")
    several = len(files) > 1
    if several and data.get("label"):
        raise ConfigError("import: --label names one run; with several checkpoints each is labelled by its file name")
    failed = 0
    for path in files:
        conf = cfg.build(ImportConfig, {**data, "checkpoint": path}, config_path or "import")
        stem = Path(conf.checkpoint).stem
        run_dir = Path(out) / stem if several else Path(out or f"runs/imported/{stem}")
        if several and out is None:
            run_dir = Path("runs/imported") / stem
        try:
            import_checkpoint(conf, run_dir, quiet=quiet, force=force)
        except XaiRobustError as exc:
            if not several:
                raise
            failed += 1
            click.echo(f"failed: {path}: {exc}", err=True)
            continue
        meta = read_run_meta(run_dir)
        acc = meta.get("clean_accuracy")
        extra = f"; clean accuracy {acc:.4f} on {meta['test']['n']} test images" if acc is not None else ""
        click.echo(f"imported {conf.checkpoint} ({meta['source']['format']}) to {run_dir}{extra}")
    if failed:
        raise ConfigError(f"import: {failed} of {len(files)} checkpoints failed (see above)")


def register(group: click.Group) -> None:
    group.add_command(import_command)
