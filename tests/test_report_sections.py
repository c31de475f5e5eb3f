"""The report's registered sections: every entry is well formed, a new section is one class the
pipeline picks up (renders its file, its inputs hashed into report.json), and sections render
only what they collected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fake import fake_registry, zoo

from xairobust.report import ReportConfig, build_report
from xairobust.report.build import report_inputs
from xairobust.report.sections import SECTIONS, ReportContext, Section, run_folders, sections_for

KINDS = ("report", "manipulation-report", "mer-report")


@pytest.mark.parametrize("name", SECTIONS.names())
def test_every_section_is_well_formed(name):
    section = SECTIONS.get(name)()
    assert isinstance(section, Section) and section.name == name
    assert section.reports and set(section.reports) <= set(KINDS)
    for rel in (*section.reads, *section.optional):
        assert rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts
    assert type(section).collect is not Section.collect and type(section).render is not Section.render


def test_every_report_kind_has_sections_in_a_fixed_order():
    assert [s.name for s in sections_for("report")] == ["scores", "robustness", "seeds", "epochs", "visual", "manipulation", "sanity"]
    assert [s.name for s in sections_for("manipulation-report")] == ["manipulation"]
    assert [s.name for s in sections_for("mer-report")] == ["mer"]


@pytest.fixture()
def extra_section():
    """A section added the way a contributor adds one (a registered class); removed afterwards."""

    class RunCount(Section):
        name = "run_count"
        order = 99
        reads = ("notes",)
        optional = ("run_count.md",)

        def collect(self, ctx: ReportContext):
            found = [r for r in ctx.runs if (r.path / "notes" / "note.json").is_file()]
            return found or None

        def render(self, ctx: ReportContext, data, folder: Path) -> None:
            (folder / "run_count.md").write_text(f"{len(data)} of {len(ctx.runs)} runs have a note\n")

    SECTIONS.register("run_count")(RunCount)
    yield RunCount
    SECTIONS._items.pop("run_count")
    SECTIONS._meta.pop("run_count")


def test_a_new_section_is_picked_up_rendered_and_its_inputs_hashed(extra_section, tmp_path):
    zoo(tmp_path / "runs", n=6, seeds=(0,))
    runs = sorted((tmp_path / "runs").iterdir())
    assert "notes" in run_folders("report")
    out = tmp_path / "report"
    written = build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert out / "run_count.md" not in written  # nothing collected: nothing rendered
    (runs[0] / "notes").mkdir()
    (runs[0] / "notes" / "note.json").write_text(json.dumps({"seen": True}))
    written = build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert (out / "run_count.md").read_text() == f"1 of {len(runs)} runs have a note\n"
    from xairobust.report.collect import run_keys

    # the report's identity covers what it reads (role: the run's key, collect.run_keys, not its path)
    assert report_inputs(runs)[f"{run_keys(runs)[runs[0]]}:notes/note.json"] == runs[0] / "notes" / "note.json"
    (runs[0] / "notes" / "note.json").unlink()
    build_report([tmp_path / "runs"], out, ReportConfig(figures=False), quiet=True, registry=fake_registry())
    assert not (out / "run_count.md").exists()  # an optional file of an earlier report is removed
