"""Every report kind rendered on fixed fake runs equals the pinned bytes in tests/golden/report/.

The pins were written by the report code before issue 17's report refactoring (one pipeline with
registered sections); a change to any table, CSV or Markdown output fails here, naming the file.
Regenerate on purpose only (a change of an output's meaning): XAIROBUST_REGOLD=1 pytest this file.
"""

from __future__ import annotations

import os
from pathlib import Path

from report_golden import render_all

GOLDEN = Path(__file__).parent / "golden" / "report"


def test_every_report_output_is_byte_identical_to_the_pinned_one(tmp_path):
    got = render_all(tmp_path)
    if os.environ.get("XAIROBUST_REGOLD") == "1":
        for name, text in got.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(text)
    pinned = {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(pinned), "the set of report files changed"
    for name in pinned:
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
