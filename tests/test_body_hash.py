"""The body hash of a stage document (issue 21 item 3): ``provenance.body_sha256`` covers every
key and value of the document but itself, reads back to the same hash, and any hand edit of a
value, a key or the provenance block is refused on read and recomputed by the stage.

The reference hash in these tests is computed here from the file's bytes with json/hashlib
(sorted keys, separators (",", ":"), ASCII escapes), independently of xairobust's code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from xairobust.runs import read_json
from xairobust.stages.contract import (
    BODY_KEY,
    PROVENANCE_KEY,
    StageIdentity,
    StaleError,
    Written,
    body_sha256,
    changed_body,
    is_current,
    seal,
    verify_chain,
    write_document,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_results.py"

# Values whose JSON text is easy to get wrong: floats that do not print short, subnormals, -0.0,
# big integers, NaN/inf (written as null), non-ASCII and a lone surrogate, tuples, int keys.
AWKWARD = {
    "tenth": 0.1, "third": 1 / 3, "sum": 0.1 + 0.2, "tiny": 5e-324, "small": 1e-300, "big": 1.7976931348623157e308,
    "neg_zero": -0.0, "huge_int": 2**70, "nan": math.nan, "inf": math.inf, "ninf": -math.inf,
    "text": "ε = 8/255, Müller, 中文, 😀, tab\t, quote \" and backslash \\", "surrogate": "\ud800",
    "tuple": (1, 2.5, "x"), "nested": {"b": [1, {"a": None, "c": True}], "a": []}, "int_keys": {1: "one", 2: "two"},
    "empty": "", "bools": [True, False, None],
}


def reference_sha256(doc: dict) -> str:
    """The body hash as docs/contributing.md defines it, from the parsed file (not xairobust's code)."""
    body = dict(doc)
    body[PROVENANCE_KEY] = {k: v for k, v in doc[PROVENANCE_KEY].items() if k != BODY_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


def resolved(tmp_path: Path) -> StageIdentity:
    (tmp_path / "input.bin").write_bytes(b"weights")
    from xairobust.stages.contract import stamp_inputs

    return StageIdentity("test", 1, {"n": 8, "eps": 0.1}, stamp_inputs({"weights": tmp_path / "input.bin"}, tmp_path))


def written_doc(tmp_path: Path, doc: dict | None = None) -> Path:
    (tmp_path / "beside.csv").write_text("index,value\n0,0.5\n")
    path = tmp_path / "doc.json"
    write_document(path, Written(dict(doc or AWKWARD), (tmp_path / "beside.csv",)), resolved(tmp_path))
    return path


def test_the_hash_reads_back_the_same_for_awkward_values(tmp_path):
    path = written_doc(tmp_path)
    doc = read_json(path)
    recorded = doc[PROVENANCE_KEY][BODY_KEY]
    assert recorded == reference_sha256(doc) == body_sha256(doc)
    assert changed_body(doc, path) is None
    assert verify_chain(path, tmp_path, "recompute") == doc
    # what was written is what reads back: NaN/inf as null, tuples as lists, int keys as strings
    assert doc["nan"] is None and doc["inf"] is None and doc["tuple"] == [1, 2.5, "x"] and doc["int_keys"] == {"1": "one", "2": "two"}
    assert doc["tenth"] == 0.1 and doc["tiny"] == 5e-324 and math.copysign(1, doc["neg_zero"]) == -1
    assert doc["text"] == AWKWARD["text"] and doc["surrogate"] == "\ud800" and doc["huge_int"] == 2**70


def test_the_hash_of_the_document_in_memory_is_the_hash_of_the_file(tmp_path):
    """seal() hashes the dict a stage holds (floats, tuples, NaN) as it will read back."""
    sealed = seal({**AWKWARD, PROVENANCE_KEY: {"stage": "test"}})
    path = tmp_path / "doc.json"
    from xairobust.runs import write_json_atomic

    write_json_atomic(path, sealed)
    assert read_json(path)[PROVENANCE_KEY][BODY_KEY] == sealed[PROVENANCE_KEY][BODY_KEY] == reference_sha256(read_json(path))


@pytest.mark.parametrize("dump", [
    lambda d: json.dumps(d),
    lambda d: json.dumps(d, sort_keys=True, indent=4),
    lambda d: json.dumps(d, ensure_ascii=False),
    lambda d: json.dumps(dict(reversed(list(d.items()))), separators=(",", ":")),
], ids=["compact", "sorted-indent4", "utf8", "reversed-keys"])
def test_layout_changes_that_keep_every_value_are_not_edits(tmp_path, dump):
    # a lone surrogate has no UTF-8 form: the UTF-8 dump is tried without it
    path = written_doc(tmp_path, {k: v for k, v in AWKWARD.items() if k != "surrogate"})
    path.write_text(dump(read_json(path)), encoding="utf-8")
    assert changed_body(read_json(path), path) is None
    verify_chain(path, tmp_path, "recompute")


EDITS = {
    "value": lambda d: d.update(tenth=0.2),
    "last digit of a float": lambda d: d.update(tenth=0.10000000000000002),
    "int to float": lambda d: d.update(huge_int=float(2**70)),
    "null to 0": lambda d: d.update(nan=0),
    "string": lambda d: d.update(text=d["text"].replace("ü", "u")),
    "nested value": lambda d: d["nested"]["b"][1].update(c=False),
    "list order": lambda d: d.update(bools=[False, True, None]),
    "key deleted": lambda d: d.pop("empty"),
    "key added": lambda d: d.update(note="x"),
    "key renamed": lambda d: d.update(Tenth=d.pop("tenth")),
    "provenance identity": lambda d: d[PROVENANCE_KEY]["identity"].update(n=9),
    "provenance key added": lambda d: d[PROVENANCE_KEY].update(note="x"),
    "outputs record": lambda d: d["outputs"].update(extra="0" * 64),
    "body hash itself": lambda d: d[PROVENANCE_KEY].update({BODY_KEY: "0" * 64}),
    "body hash not a string": lambda d: d[PROVENANCE_KEY].update({BODY_KEY: None}),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_every_hand_edit_is_refused_in_one_line_and_is_not_current(tmp_path, edit):
    path = written_doc(tmp_path)
    doc = read_json(path)
    EDITS[edit](doc)
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(StaleError) as err:
        verify_chain(path, tmp_path, "xairobust test --run RUN")
    msg = str(err.value)
    assert msg == (f"{path} was changed after it was written (its content no longer has the sha256 recorded in it);"
                   " recompute it with `xairobust test --run RUN`")
    assert not is_current([path], resolved(tmp_path))


def test_a_document_too_deep_to_walk_is_refused_in_one_line(tmp_path):
    """900 nested lists parse (json's C reader) but are too deep to hash again: a one-line refusal."""
    path = written_doc(tmp_path)
    doc = read_json(path)
    doc["deep"] = json.loads("[" * 900 + "]" * 900)
    path.write_text(json.dumps(doc))
    with pytest.raises(StaleError, match=r"doc.json cannot be checked \(nested too deeply to read\); recompute it with `h`"):
        verify_chain(path, tmp_path, "h")
    assert not is_current([path], resolved(tmp_path))


def test_a_document_written_before_body_hashes_is_accepted_as_before(tmp_path):
    """No body hash (older writers, committed results/): inputs and output files are still
    checked; the values cannot be, and a hash added now would vouch for whatever is there."""
    path = written_doc(tmp_path)
    doc = read_json(path)
    del doc[PROVENANCE_KEY][BODY_KEY]
    doc["tenth"] = 0.2
    path.write_text(json.dumps(doc, indent=2))
    assert changed_body(doc, path) is None
    assert verify_chain(path, tmp_path, "h")["tenth"] == 0.2
    assert is_current([path], resolved(tmp_path))
    (tmp_path / "input.bin").write_bytes(b"other weights")  # its inputs are still checked
    with pytest.raises(StaleError, match="input.bin \\(weights\\) changed since it was computed"):
        verify_chain(path, tmp_path, "h")


def test_check_results_re_implements_the_same_hash(tmp_path):
    spec = importlib.util.spec_from_file_location("check_results", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    folder = tmp_path / "results" / "f"
    folder.mkdir(parents=True)
    path = written_doc(folder)
    assert check._body_sha256(read_json(path)) == read_json(path)[PROVENANCE_KEY][BODY_KEY]
    assert check.check_documents(folder) == []
    doc = read_json(path)
    doc["third"] = 0.3333
    path.write_text(json.dumps(doc))
    assert check.check_documents(folder) == [
        f"{path.as_posix()} was changed after it was written (its content no longer has the sha256 recorded in it)"]


# -- the stages: an edited document is recomputed, not trusted ------------------------------------


@pytest.fixture(scope="module")
def scored(digits_run, tmp_path_factory) -> Path:
    from xairobust.stages.attack import AttackConfig, attack
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path_factory.mktemp("body") / "run"
    shutil.copytree(digits_run, run)
    explain(run, ExplainConfig(n=6, selection="first", params={"n_steps": 4}), quiet=True)
    score(run, ScoreConfig(metrics="sparseness"), quiet=True)
    attack(run, AttackConfig(eps=0.1, steps=2, n=16, autoattack=False, device="cpu"), quiet=True)
    return run


def test_every_stage_document_of_a_run_is_sealed(scored):
    for rel in ("run.json", "attributions/ig.json", "scores/ig.json", "robustness.json"):
        doc = read_json(scored / rel)
        assert doc[PROVENANCE_KEY][BODY_KEY] == reference_sha256(doc), rel


def test_an_edited_scores_json_is_recomputed_by_score(scored, tmp_path):
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(scored, run)
    path = run / "scores" / "ig.json"
    mean = read_json(path)["metrics"]["sparseness"]["mean"]
    doc = read_json(path)
    doc["metrics"]["sparseness"]["mean"] = 0.99
    path.write_text(json.dumps(doc))
    score(run, ScoreConfig(metrics="sparseness"), quiet=True)
    doc = read_json(path)
    assert doc["metrics"]["sparseness"]["mean"] == mean and changed_body(doc, path) is None


def test_an_edited_robustness_json_is_recomputed_by_attack_and_none_of_its_entries_kept(scored, tmp_path):
    from xairobust.stages.attack import AttackConfig, attack

    run = tmp_path / "run"
    shutil.copytree(scored, run)
    path = run / "robustness.json"
    original = read_json(path)
    conf = AttackConfig(eps=0.1, steps=2, n=16, autoattack=False, device="cpu")
    doc = read_json(path)
    doc["results"][0]["robust_accuracy"] = doc["robust_accuracy"] = 0.9
    doc["results"].append({**doc["results"][0], "eps": 0.2})  # a planted entry: not kept
    path.write_text(json.dumps(doc))
    from xairobust.stages.contract import STAGES

    assert not STAGES.get("attack")().is_current(run, conf)
    attack(run, conf, quiet=True)
    doc = read_json(path)
    assert [e["eps"] for e in doc["results"]] == [0.1]
    assert doc["robust_accuracy"] == original["robust_accuracy"] and changed_body(doc, path) is None
