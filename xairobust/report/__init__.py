"""Reports: tables (LaTeX/CSV/Markdown), paired statistics against the baseline, and figures.

Entry point: ``build_report(run_dirs, out, conf, quiet=False)`` with ``ReportConfig``. Every report
kind is one pipeline (pipeline.py: collect -> compare -> render) over the registered sections of
``xairobust.report.sections`` (one file each).
"""

from xairobust.report.build import ReportConfig, build_report

__all__ = ["ReportConfig", "build_report"]
