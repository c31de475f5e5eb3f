"""``xairobust report RUNS... --out results/NAME``: tables, statistics and figures of a model zoo."""

from __future__ import annotations

from pathlib import Path

import click

from xairobust.cli_util import config_option, merged_config, quiet_option
from xairobust.errors import ConfigError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", help="Folder to write (e.g. results/NAME); required.")
@config_option
@click.option("--explainer", help="Explainer(s) to report, e.g. ig or ig,gradient_shap (default: all scored).")
@click.option("--combined/--separate", "combined", default=None,
              help="One table with a block per explainer, or one table per explainer (default).")
@click.option("--baseline", help="Run label or method name (case-insensitive) every method is tested against"
                                 " (default: standard); one that matches no run is an error.")
@click.option("--test", type=click.Choice(["wilcoxon", "ttest"]), help="Paired test (default: wilcoxon).")
@click.option("--correction", type=click.Choice(["holm", "bonferroni", "none"]),
              help="Multiple-comparison correction over all comparisons (default: holm).")
@click.option("--alpha", type=float, help="Significance level of the table's * marker (default: 0.05).")
@click.option("--pairing", type=click.Choice(["mean", "pool"]),
              help="Seeds: pair per seed, then average each sample's pairs (mean, default) or pool them.")
@click.option("--bootstrap", type=int, help="BCa bootstrap resamples for CIs of the mean difference (0: off).")
@click.option("--ci-level", type=float, help="Bootstrap confidence level (default: 0.95).")
@click.option("--seed", type=int, help="Bootstrap seed (default: 0).")
@click.option("--digits", type=int, help="Significant digits of each column's largest value (default: 3).")
@click.option("--order", help="Row order after the baseline, e.g. nsloss,jacobian,pgd.")
@click.option("--common-correct/--all-samples", "common_correct", default=None,
              help="Compare only the samples every model of a table classifies correctly (count in the caption;"
                   " default: all samples).")
@click.option("--mixed/--no-mixed", "mixed", default=None,
              help="Also fit the crossed mixed model value ~ method + (1|seed) + (1|run) + (1|sample) (mixed.csv,"
                   " seeds.md; seconds per metric; default: no).")
@click.option("--figures/--no-figures", "figures", default=None, help="Write figures (default: yes).")
@click.option("--plot", type=click.Choice(["box", "violin"]), help="Per-metric distribution plot (default: box).")
@click.option("--grid-images", type=int, help="Test images in the attribution grid (default: 6).")
@click.option("--controls/--no-controls", "controls", default=None,
              help="Sanity section: control rows, blur control, MPRT per layer, verdicts (default: on when scored).")
@click.option("--formats", help="Figure formats, e.g. pdf,png (default) or svg.")
@click.option("--force", is_flag=True, help="Write into an --out folder that holds files xairobust did not write.")
@quiet_option
def report(runs: tuple[str, ...], out: str | None, config_path: str | None, quiet: bool, force: bool, **options) -> None:
    """Tables (table.tex/.csv/.md), stats.csv and figures/ for run directories.

    RUNS are run directories or folders holding them (`xairobust report runs/*`). Rows are methods
    (run.json label; mean ± std over seeds), columns the scored metrics grouped by criterion with
    their direction, plus clean and robust accuracy. Every method is compared with the baseline,
    paired on test samples; see docs for the pairing of seeds.
    """
    from xairobust import config as cfg
    from xairobust.report import ReportConfig, build_report

    data = merged_config(config_path, options)
    # `out` and `runs` may come from the YAML file too; the command line wins
    out = out or data.pop("out", None)
    data.pop("out", None)
    listed = data.pop("runs", [])
    paths = list(runs) or ([listed] if isinstance(listed, str) else list(listed))
    if not out:
        raise ConfigError("report: --out is required, e.g. --out results/zoo")
    if not paths:
        raise ConfigError("report: give the run directories, e.g. `xairobust report runs/* --out results/zoo`")
    conf = cfg.build(ReportConfig, data, config_path or "report")
    from xairobust.report.build import REPORT_JSON
    from xairobust.validate import check_not_foreign, check_output_dir

    check_output_dir(out, "--out")
    check_not_foreign(out, "report: --out", force, markers=(REPORT_JSON,))  # e.g. a user's own table.csv
    written = build_report([Path(p) for p in paths], Path(out), conf, quiet=quiet)
    click.echo(f"report written to {out} ({len(written)} files): {Path(out) / 'table.md'}")


def register(group: click.Group) -> None:
    group.add_command(report)
