"""``xairobust demo``: the quickstart zoo (train -> attack -> explain -> score -> report on digits)."""

from __future__ import annotations

from pathlib import Path

import click

from xairobust.cli_util import quiet_option


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="xairobust-demo", show_default=True,
              help="Results root: runs/quickstart/ and results/quickstart/ are written below it.")
@click.option("--workers", type=int, help="Parallel worker processes (default: one per CPU core).")
@quiet_option
def demo(out: str, workers: int | None, quiet: bool) -> None:
    """Run the quickstart zoo: the four training methods on digits, 2 seeds, three explainers,
    the paper's seven metrics, then the comparison table. About 5 minutes on 2 CPU cores;
    running it again reuses everything already computed.
    """
    from xairobust.batch.runner import BatchOptions, exit_code, run_batch
    from xairobust.validate import check_output_dir

    check_output_dir(out, "--out")  # a file named as --out, or a read-only place: one line, nothing run
    opts = BatchOptions(root=out, workers=workers, threads=1, quiet=quiet, skip_missing_stages=True)
    result = run_batch("quickstart", opts)
    tables = [d / "table.md" for d in result.report_dirs() if (d / "table.md").is_file()]
    for table in tables:
        click.echo(f"\n{table.read_text().rstrip()}\n")
    for d in result.report_dirs():
        shown = _shown(d)
        click.echo(f"table: {shown}/table.tex (also table.md, table.csv; figures in {shown}/figures)")
    code = exit_code(result)
    if code:
        raise SystemExit(code)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def register(group: click.Group) -> None:
    group.add_command(demo)
