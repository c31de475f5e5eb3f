"""``xairobust batch ZOO.yaml``: train, attack, explain, score and report a model zoo."""

from __future__ import annotations

import click

from xairobust.cli_util import quiet_option


@click.command("batch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("zoo")
@click.option("--dry-run", is_flag=True, help="Print the plan (what is done, what would run); run nothing.")
@click.option("--executor", default="local", show_default=True, help="Where jobs run: local or ray.")
@click.option("--workers", type=int, help="local: parallel worker processes (default: CPU cores // threads);"
              " ray: CPUs of the Ray started for the batch.")
@click.option("--threads", type=int, help="Torch threads per job (local default: 1; ray default: the CPUs the"
              " zoo's resources give the job).")
@click.option("--address", help="ray: 'auto' or the address of a running cluster (default: start a local Ray).")
@click.option("--root", help="Results root: runs/ and results/ go below it (default: the zoo's root, else .)."
              " With ray, a path every node reaches.")
@quiet_option
def batch(zoo: str, dry_run: bool, executor: str, workers: int | None, threads: int | None, address: str | None,
          root: str | None, quiet: bool) -> None:
    """Run the model zoo ZOO (a YAML file, or a shipped zoo: quickstart, cifar10_cpu, imagenette_paper).

    Jobs whose outputs exist with the same config hash are skipped, so the same command resumes an
    interrupted batch. A failing job is reported (traceback in its run's logs/) and only its
    dependents are skipped; the exit status is 1 if anything failed.
    """
    from xairobust.batch.runner import exit_code, run_batch

    opts = batch_options("batch", dry_run, executor, workers, threads, address, root, quiet)
    result = run_batch(zoo, opts)
    code = exit_code(result)
    if code:
        raise SystemExit(code)


def batch_options(command: str, dry_run: bool, executor: str, workers: int | None, threads: int | None,
                  address: str | None, root: str | None, quiet: bool):
    """The checked BatchOptions of the options above (``study`` takes the same ones)."""
    from xairobust.batch.runner import BatchOptions
    from xairobust.errors import ConfigError

    for option, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{command}: {option} must be >= 1, got {value}")
    return BatchOptions(root=root, executor=executor, workers=workers, threads=threads, address=address,
                        dry_run=dry_run, quiet=quiet)


def register(group: click.Group) -> None:
    group.add_command(batch)
