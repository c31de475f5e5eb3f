"""Every report kind rendered on fixed fake runs equals the pinned bytes in tests/golden/report/.

The pins were written by the report code before issue 17's report refactoring (one pipeline with
registered sections); a change to any table, CSV or Markdown output fails here, naming the file.
Regenerate on purpose only (a change of an output's meaning): XAIROBUST_REGOLD=1 pytest this file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from report_golden import render_all

GOLDEN = Path(__file__).parent / "golden" / "report"

# Model fits (OLS slopes and CIs, MixedLM's REML estimates) are linear algebra in numpy/scipy/
# statsmodels: their last digits move with the BLAS and library versions a fresh install takes
# (measured: 1e-13 relative on the slopes, and a variance component at its 0 boundary of 4e-14
# vs 6e-14). These files are compared value by value instead: text columns exactly, numbers to
# 1e-9 relative (1e-12 absolute), still far below anything a table prints.
FITTED = {"dose_response.csv", "mixed.csv", "confound.csv"}


def _same_fit(got: str, pinned: str) -> bool:
    a, b = pd.read_csv(io.StringIO(got)), pd.read_csv(io.StringIO(pinned))
    if list(a.columns) != list(b.columns) or a.shape != b.shape:
        return False
    numeric = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]
    text = [c for c in a.columns if c not in numeric]
    return bool(a[text].fillna("").astype(str).equals(b[text].fillna("").astype(str))
                and np.allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), rtol=1e-9, atol=1e-12,
                                equal_nan=True))


def test_every_report_output_is_byte_identical_to_the_pinned_one(tmp_path):
    got = render_all(tmp_path)
    if os.environ.get("XAIROBUST_REGOLD") == "1":
        for name, text in got.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(text)
    pinned = {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(pinned), "the set of report files changed"
    for name in pinned:
        if Path(name).name in FITTED and got[name] != pinned[name]:
            assert _same_fit(got[name], pinned[name]), f"{name} differs from tests/golden/report/{name} beyond 1e-9"
            continue
        assert got[name] == pinned[name], f"{name} differs from tests/golden/report/{name}"


def test_sanity_rows_are_the_table_means_on_common_correct_samples():
    """The sanity section's explainer rows are means over the same (common-correct) samples as
    table.csv. Before: the section re-collected every sample while the verdicts beside them quoted
    tests on the common-correct ones (0.969 vs the table's 0.990 for Standard's Max-Sensitivity)."""
    import pandas as pd
    import pytest

    folder = Path(__file__).parent / "golden" / "report" / "common_correct"
    table = pd.read_csv(folder / "table.csv")
    sanity = pd.read_csv(folder / "sanity.csv")
    rows = sanity[~sanity["control"]]
    assert len(rows) == 9
    for r in rows.itertuples():
        hit = table[(table["explainer"] == r.explainer) & (table["method"] == r.label)]
        assert len(hit) == 1
        assert hit[f"{r.metric}_mean"].iloc[0] == pytest.approx(r.mean, rel=1e-12)
