"""``xairobust study ZOO.yaml``: run a zoo (the batch), then write ``results/<study>/index.html``."""

from __future__ import annotations

import shlex
import sys

import click

from xairobust.commands.batch import batch as _batch
from xairobust.commands.batch import batch_options


@click.command("study", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--common-correct/--all-samples", "common_correct", default=True, show_default=True,
              help="Restrict every comparison to the images all its models classify correctly (the"
                   " clean-accuracy confound); --all-samples keeps every explained image.")
def study(zoo: str, dry_run: bool, executor: str, workers: int | None, threads: int | None, address: str | None,
          root: str | None, quiet: bool, common_correct: bool) -> None:
    """Run the zoo ZOO (a YAML file or a shipped zoo, as `batch`), then write one self-contained page,
    results/<zoo>/index.html: the headline figure (each metric vs robust accuracy, one colour per
    training family), the dose-response slopes and rank correlations, the clean-accuracy confound
    (common-correct images, slopes adjusted for clean accuracy), seed-level tests and the mixed
    model, the comparison tables, and a paragraph written from the numbers.

    Everything the batch already computed is reused, so running it again only redoes the page.
    """
    from xairobust.batch.runner import exit_code, run_batch
    from xairobust.batch.zoo import load_zoo
    from xairobust.report.study import build_study, study_sections, study_zoo

    opts = batch_options("study", dry_run, executor, workers, threads, address, root, quiet)
    loaded = study_zoo(load_zoo(zoo), common_correct)
    result = run_batch(loaded, opts)
    page = result.root / result.plan.results_dir / "index.html"
    if dry_run:
        click.echo(f"study: would write {page}")
        return
    sections = study_sections(result)
    if sections:
        info_cmd = "xairobust " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        build_study(sections, page.parent, _info(loaded, info_cmd), quiet=quiet)
        click.echo(f"study page: {page}")
    code = exit_code(result)
    if code or not sections:
        raise SystemExit(code or 1)


def _info(zoo, command: str):
    from xairobust.report.study import StudyInfo

    return StudyInfo(name=zoo.name, description=zoo.description, command=command, zoo_file=str(zoo.source))


# The batch's options, defined once (commands/batch.py): the argument ZOO, --dry-run, --executor,
# --workers, --threads, --address, --root, --quiet.
study.params[:0] = list(_batch.params)


def register(group: click.Group) -> None:
    group.add_command(study)
