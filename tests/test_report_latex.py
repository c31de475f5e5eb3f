"""The LaTeX table compiles with pdflatex (skipped with the reason when pdflatex is absent)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from report_fake import fake_registry, write_run, zoo

from xairobust.report import ReportConfig, build_report
from xairobust.report.render import tex_escape


def test_tex_escape():
    assert tex_escape("adv_train 50% & #1 {x} $y ~^\\") == (
        r"adv\_train 50\% \& \#1 \{x\} \$y \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )


@pytest.mark.parametrize("combined", [False, True])
def test_table_tex_compiles(tmp_path, combined):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    runs = tmp_path / "runs"
    zoo(runs, n=8, seeds=(0, 1))
    tricky = {"max_sens": np.full(8, 0.3), "faith_corr": np.full(8, 0.1), "sparse": np.full(8, 0.6),
              "odd_metric%&": np.full(8, 1.0)}  # an unregistered metric name with special characters
    write_run(runs, "adv", label="adv_train λ=1 & 50% #2 ΑΩ", seed=0, scores={"ig": tricky, "gradient_shap": tricky})
    out = tmp_path / "out"
    build_report([runs], out, ReportConfig(figures=False, combined=combined), quiet=True, registry=fake_registry())
    res = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"],
        cwd=out, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout[-2000:]
    assert (out / "table.pdf").stat().st_size > 1000
    # the fragment for \input{} compiles inside a paper that loads booktabs and graphicx
    (out / "paper.tex").write_text(
        "\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage{booktabs}\\usepackage{graphicx}\n"
        "\\begin{document}\\input{table_body.tex}\\end{document}\n"
    )
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                         cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]


def test_tex_escape_unicode():
    assert tex_escape("NsLoss λ=60, Δ ± 1") == r"NsLoss $\lambda$=60, $\Delta$ $\pm$ 1"
    assert tex_escape("café ☃") == "café ?"
    assert tex_escape("ΑΒο") == "ABo"  # LaTeX has no \\Alpha, \\Beta, \\omicron
