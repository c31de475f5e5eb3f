"""The bad-input suite for the newer commands (issue 21): manipulate, manipulation-report,
visualize, fid, import, report on manipulation / visualisation output, batch with `run:` entries.

The same table-driven form as tests/test_bad_input.py (its helpers and fork driver are reused):
every case runs through the console entry point in a sandbox of its own and must exit with the
expected status, print exactly one ``error:`` line containing the expected text (no traceback,
no ``internal error``) and leave its sandbox byte for byte as it was.

Two kinds of damaged file are tried for every per-sample CSV a report reads:

* a hand edit the stage's JSON does not vouch for (its recorded sha256, ``outputs``) is refused
  by name before anything is read from it;
* a malformed file whose JSON *does* vouch for it (``restamp_*``: as if a bug had written it)
  reaches the structural checks (columns, numbers, duplicates, index range, header only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_bad_input import DRIVER, ROOT, Case, _slug, _snapshot, both, with_file

from xairobust.runs import file_sha256
from xairobust.stages.contract import seal


class World:
    run: Path  # digits run: attributions/ig, scores/ig, manipulation/topk_ig, visualisations + metrics
    nan_run: Path  # the same run with every weight NaN (run.json's checksum matches: a diverged training)
    ckpts: Path  # crafted checkpoint files


W = World()
MANIP = "manipulation/topk_ig"


def _r(s: Path, name: str = "run") -> str:
    return str(s / name)


def with_run(name: str = "run", template: str = "run"):
    def setup(sandbox: Path) -> None:
        shutil.copytree(getattr(W, template), sandbox / name)

    return setup


def with_nan_run(name: str = "nan"):
    return with_run(name, "nan_run")


def with_ckpts(sandbox: Path) -> None:
    shutil.copytree(W.ckpts, sandbox / "ckpt")


def edit_text(rel: str, fn, stamp: str | None = None):
    """Setup: rewrite ``run/rel`` with ``fn(text)``; ``stamp``: the JSON (beside it) that then
    records the new sha256, its own body hash recomputed too (the file is malformed, but its
    document vouches for it, as if a bug had written both)."""

    def setup(sandbox: Path) -> None:
        path = sandbox / "run" / rel
        data = fn(path.read_bytes())
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        if stamp is not None:
            doc_path = sandbox / "run" / stamp
            d = json.loads(doc_path.read_text())
            d["outputs"][path.name] = file_sha256(path)
            doc_path.write_text(json.dumps(seal(d)))

    return setup


def edit_json(rel: str, fn, sealed: bool = False):
    """Setup: edit the document ``run/rel`` with ``fn(doc)``; ``sealed``: its body hash recomputed
    (as if the tool had written it so), else a hand edit."""

    def setup(sandbox: Path) -> None:
        path = sandbox / "run" / rel
        d = json.loads(path.read_text())
        before = json.dumps(d, sort_keys=True)
        fn(d)
        assert json.dumps(d, sort_keys=True) != before, f"the edit of {rel} changed nothing"
        path.write_text(json.dumps(seal(d) if sealed else d))

    return setup


def edit_attributions(fn):
    """Setup: change attributions/ig.safetensors and record its sha256 in ig.json."""

    def setup(sandbox: Path) -> None:
        from safetensors.torch import load_file, save_file

        path = sandbox / "run" / "attributions" / "ig.safetensors"
        t = load_file(path)
        fn(t)
        save_file({k: v.contiguous() for k, v in t.items()}, path)
        doc = path.with_suffix(".json")
        d = json.loads(doc.read_text())
        d["outputs"] = {path.name: file_sha256(path)}
        doc.write_text(json.dumps(seal(d)))

    return setup


def flip(b: bytes) -> bytes:
    """One byte of the data section changed (the end of a tensor file may be zeros already)."""
    k = len(b) - 40
    return b[:k] + bytes([b[k] ^ 0x55]) + b[k + 1:]


def lines(text: bytes) -> list[str]:
    return text.decode().splitlines(keepends=True)


def header_only(b: bytes) -> str:
    return lines(b)[0]


def duplicated(b: bytes) -> str:
    ls = lines(b)
    return "".join(ls + ls[1:])


def value_set(b: bytes, what: str = "1.0") -> str:
    ls = lines(b)
    parts = ls[1].rstrip("\n").split(",")
    parts[-1] = what
    return "".join([ls[0], ",".join(parts) + "\n", *ls[2:]])


def index_set(b: bytes, index: str) -> str:
    ls = lines(b)
    out = [ls[0]]
    for line in ls[1:]:
        parts = line.split(",", 1)
        out.append(f"{index},{parts[1]}" if parts[0] == "0" else line)
    return "".join(out)


def drop_column(b: bytes, name: str) -> str:
    ls = [line.rstrip("\n").split(",") for line in lines(b)]
    k = ls[0].index(name)
    return "".join(",".join(p[:k] + p[k + 1:]) + "\n" for p in ls)


GARBAGE = bytes(range(256)) * 3
DEEP = "[" * 100_000 + "]" * 100_000


def zoo(entries: str) -> str:
    return f"name: z\ndatasets: [digits]\nmodels: [digits_cnn]\nmethods:\n{entries}seeds: 1\n"


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    damaged = "the weights are damaged"
    sha = "was changed after it was written"

    # -- a run whose weights are NaN (checksum intact): every consumer refuses it by tensor name
    for cmd, argv in [
        ("manipulate", lambda s: ["manipulate", "--run", _r(s, "nan"), "--n", "2", "--steps", "1"]),
        ("explain", lambda s: ["explain", "--run", _r(s, "nan"), "--n", "2"]),
        ("attack", lambda s: ["attack", "--run", _r(s, "nan"), "--no-autoattack", "--n", "2"]),
        ("visualize", lambda s: ["visualize", "--run", _r(s, "nan"), "--preset", "quick", "--n", "1"]),
        ("fid extractor", lambda s: ["fid", "--run", _r(s), "--extractor", f"run:{_r(s, 'nan')}"]),
        ("train --init", lambda s: ["train", "--epochs", "1", "--init", _r(s, "nan"), "--out", str(s / "out")]),
    ]:
        add(Case(f"NaN weights: {cmd}", argv, damaged, both(with_run(), with_nan_run()), tags=("nan",)))

    # -- import: values load_state_dict would take silently
    for label, file, msg in [
        ("all NaN", "nan.pt", "'net.features.0.bias' (16 of 16 values are NaN/inf)"),
        ("one inf", "inf.pt", "(1 of 4608 values are NaN/inf)"),
        ("NaN in safetensors", "nan.safetensors", damaged),
        ("int64 weight", "int64.pt", "is int64 but the model's 'features.2.weight' is float32"),
        ("bool weight", "bool.pt", "is bool but the model's"),
        ("NaN normalisation", "nan_norm.pt", "the normalisation"),
        ("nested too deeply", "deep.pt", "is not a readable PyTorch checkpoint"),
    ]:
        add(Case(f"import {label}", lambda s, file=file: ["import", str(s / "ckpt" / file), "--model", "digits_cnn",
                                                         "--dataset", "digits", "--out", str(s / "imp")],
                 msg, with_ckpts, tags=("import",)))
    add(Case("import --out holds user files",
             lambda s: ["import", str(s / "ckpt" / "good.pt"), "--model", "digits_cnn", "--dataset", "digits",
                        "--out", str(s / "mine")],
             "holds files xairobust did not write (notes.txt)", both(with_ckpts, with_file("mine/notes.txt", "mine"))))

    # -- manipulate: options
    for args, msg in [
        (["--eps", "inf"], "--eps must be a finite number"),
        (["--eps", "0"], "--eps must be > 0"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--topk", "2"], "--topk must be a fraction in (0, 1]"),
        (["--fool-threshold", "nan"], "--fool-threshold must be a finite number"),
        (["--attack", "topkk"], "topkk"),
        (["--explainer", "igg"], "igg"),
    ]:
        add(Case(f"manipulate {' '.join(args)}", lambda s, args=args: ["manipulate", "--run", _r(s), "--n", "2", *args],
                 msg, with_run()))
    add(Case("manipulate run.json nested too deeply", lambda s: ["manipulate", "--run", _r(s)], "nested too deeply",
             both(with_run(), with_file("run/run.json", DEEP))))

    # -- manipulation output read by manipulation-report and report
    def mrep(s: Path) -> list[str]:
        return ["manipulation-report", _r(s), "--out", str(s / "rep")]

    for label, fn in [("value set to 1.0", value_set), ("header only", header_only), ("duplicated rows", duplicated),
                      ("garbage bytes", lambda b: GARBAGE)]:
        add(Case(f"manipulation-report CSV {label}", mrep, sha, both(with_run(), edit_text(f"{MANIP}.csv", fn))))
    add(Case("report manipulation CSV value set to 1.0", lambda s: ["report", _r(s), "--out", str(s / "rep")], sha,
             both(with_run(), edit_text(f"{MANIP}.csv", value_set))))
    add(Case("manipulation-report tensors edited", mrep, sha,
             both(with_run(), edit_text(f"{MANIP}.safetensors", flip))))
    add(Case("manipulation-report CSV deleted", mrep, "no longer exists",
             lambda s: (with_run()(s), (s / "run" / f"{MANIP}.csv").unlink())))
    stamp = f"{MANIP}.json"
    for label, fn, msg in [
        ("header only", header_only, "no manipulation rows (only a header)"),
        ("duplicated rows", duplicated, "a duplicated row (index 0, explainer ig, metric com_shift appears twice)"),
        ("index beyond the split", lambda b: index_set(b, "100000"), "sample index 100000 is outside the test split (the test split has"),
        ("negative index", lambda b: index_set(b, "-1"), "sample index -1 is outside the test split"),
        ("non-numeric value", lambda b: value_set(b, "high"), "'value' is not a number ('high')"),
        ("fractional index", lambda b: index_set(b, "0.5"), "'index' must hold integer sample indices"),
        ("column missing", lambda b: drop_column(b, "explainer"), "missing column(s) explainer"),
        ("garbage bytes", lambda b: GARBAGE, "not a valid manipulation CSV"),
        ("one sample missing", lambda b: "".join(ln for ln in lines(b) if not ln.startswith("0,")),
         "holds 7 samples but topk_ig.json says 8"),
    ]:
        add(Case(f"manipulation-report vouched CSV {label}", mrep, msg,
                 both(with_run(), edit_text(f"{MANIP}.csv", fn, stamp=stamp))))
    add(Case("report vouched manipulation CSV duplicated", lambda s: ["report", _r(s), "--out", str(s / "rep")],
             "a duplicated row", both(with_run(), edit_text(f"{MANIP}.csv", duplicated, stamp=stamp))))
    add(Case("manipulation-report JSON nested too deeply", mrep, "nested too deeply",
             both(with_run(), with_file(f"run/{MANIP}.json", DEEP))))
    add(Case("manipulation-report JSON without attack", mrep, "'attack' and 'explainer' must be names",
             both(with_run(), edit_json(f"{MANIP}.json", lambda d: d.pop("attack")))))
    add(Case("manipulation-report outputs record malformed", mrep, "record is malformed",
             both(with_run(), edit_json(f"{MANIP}.json", lambda d: d.update(outputs={"../../x": "0"}), sealed=True))))
    add(Case("manipulation-report --alpha 2", lambda s: [*mrep(s), "--alpha", "2"], "--alpha must be in (0, 1)", with_run()))
    add(Case("manipulation-report --out holds user files", lambda s: ["manipulation-report", _r(s), "--out", str(s / "mine")],
             "holds files xairobust did not write (manipulation.csv)", both(with_run(), with_file("mine/manipulation.csv", "x"))))
    add(Case("manipulation-report --out is a file", lambda s: ["manipulation-report", _r(s), "--out", str(s / "f")],
             "is a file, not a folder", both(with_run(), with_file("f", "x"))))

    # -- report: scores, attributions, visualisation metrics; --out
    def rep(s: Path) -> list[str]:
        return ["report", _r(s), "--out", str(s / "rep"), "--no-figures"]

    add(Case("report scores CSV value edited", rep, sha, both(with_run(), edit_text("scores/ig.csv", value_set))))
    add(Case("report vouched scores CSV header only", rep, "no scores rows (only a header)",
             both(with_run(), edit_text("scores/ig.csv", header_only, stamp="scores/ig.json"))))
    add(Case("report vouched scores CSV index beyond int", rep, "'index' must hold integer sample indices",
             both(with_run(), edit_text("scores/ig.csv", lambda b: index_set(b, "inf"), stamp="scores/ig.json"))))
    add(Case("report attributions edited", rep, sha,
             both(with_run(), edit_text("attributions/ig.safetensors", flip))))
    add(Case("report --out holds a user's table.csv", lambda s: ["report", _r(s), "--out", str(s / "mine")],
             "holds files xairobust did not write (table.csv)", both(with_run(), with_file("mine/table.csv", "mine"))))
    vis = "visualisations/metrics_run-template.csv"
    add(Case("report visual metrics CSV edited", rep, sha, both(with_run(), edit_text(vis, value_set))))
    add(Case("report vouched visual metrics CSV non-numeric", rep, "'value' is not a number ('x')",
             both(with_run(), edit_text(vis, lambda b: value_set(b, "x"), stamp="visualisations/metrics_run-template.json"))))
    add(Case("report vouched visual metrics CSV duplicated", rep, "sample 0 scored twice for 'class_fid'",
             both(with_run(), edit_text(vis, duplicated, stamp="visualisations/metrics_run-template.json"))))
    add(Case("report run.json nested too deeply", rep, "nested too deeply", both(with_run(), with_file("run/run.json", DEEP))))

    # -- a hand-edited value in a stage's own JSON document (its body hash, provenance.body_sha256):
    #    refused by name, with the command that recomputes it, before anything is read from it
    body = "was changed after it was written (its content no longer has the sha256 recorded in it); recompute it with"

    def entry(key, value):
        return lambda d: d["results"][0].update({key: value})

    for label, rel, fn, argv, msg in [
        ("robust accuracy edited", "robustness.json", lambda d: d.update(robust_accuracy=0.9), rep,
         f"robustness.json {body} `xairobust attack --run"),
        ("entry value edited", "robustness.json", entry("robust_accuracy", 0.9), rep, f"robustness.json {body}"),
        ("key deleted", "robustness.json", lambda d: d.pop("headline"), rep, f"robustness.json {body}"),
        ("key added", "robustness.json", lambda d: d.update(note="checked by hand"), rep, f"robustness.json {body}"),
        ("mean edited", "scores/ig.json", lambda d: d["metrics"]["sparseness"].update(mean=0.99), rep,
         f"scores/ig.json {body} `xairobust score --run"),
        ("key deleted", "scores/ig.json", lambda d: d.pop("degenerate_attributions"), rep, f"scores/ig.json {body}"),
        ("provenance identity edited", "scores/ig.json", lambda d: d["provenance"]["identity"].update(n=4), rep,
         f"scores/ig.json {body}"),
        ("value edited", "attributions/ig.json", lambda d: d.update(prediction_matches_label=0.123), rep,
         f"attributions/ig.json {body} `xairobust explain --run"),
        ("mean edited", f"{MANIP}.json", lambda d: d["means"].update({k: 1.0 for k in d["means"]}), rep,
         f"topk_ig.json {body} `xairobust manipulate --run"),
        ("key added", "visualisations/metrics_run-template.json", lambda d: d.update(extra=1), rep,
         f"metrics_run-template.json {body} `xairobust fid --run"),
        ("clean accuracy edited", "run.json", lambda d: d.update(clean_accuracy=0.99), rep,
         "run.json was changed after it was written (its content no longer has the sha256 recorded in it); retrain it with"),
    ]:
        add(Case(f"report {rel} {label}", argv, msg, both(with_run(), edit_json(rel, fn))))
    add(Case("report scores/ig.json nested 900 deep", rep, "scores/ig.json cannot be checked (nested too deeply to read)",
             both(with_run(), edit_json("scores/ig.json", lambda d: d.update(deep=json.loads("[" * 900 + "]" * 900))))))
    add(Case("score attributions/ig.json value edited", lambda s: ["score", "--run", _r(s), "--metrics", "sparseness"],
             f"attributions/ig.json {body} `xairobust explain --run",
             both(with_run(), edit_json("attributions/ig.json", lambda d: d.update(n=4)))))
    add(Case("manipulation-report topk_ig.json mean edited", mrep, f"topk_ig.json {body}",
             both(with_run(), edit_json(f"{MANIP}.json", lambda d: d["means"].update({k: 0.0 for k in d["means"]})))))
    add(Case("fid inversion.json value edited", lambda s: ["fid", "--run", _r(s), "--extractor", f"run:{_r(s)}"],
             f"inversion.json {body}", both(with_run(), edit_json("visualisations/inversion.json", lambda d: d.update(n=3)))))
    add(Case("train run.json edited", lambda s: ["train", "--config", str(s / "run" / "config.yaml"), "--out", _r(s)],
             f"run/run.json {body} `xairobust train --config",
             both(with_run(), edit_json("run.json", lambda d: d.update(clean_accuracy=0.99)))))

    # -- visualize / fid
    for args, msg in [
        (["--kind", "nonsense"], "nonsense"),
        (["--n", "0"], "--n must be"),
        (["--eps", "nan"], "must be a finite number"),
    ]:
        add(Case(f"visualize {' '.join(args)}", lambda s, args=args: ["visualize", "--run", _r(s), "--preset", "quick", *args],
                 msg, with_run()))
    add(Case("fid inversion tensors edited", lambda s: ["fid", "--run", _r(s), "--extractor", f"run:{_r(s)}"], sha,
             both(with_run(), edit_text("visualisations/inversion.safetensors", flip))))
    add(Case("fid visualisation JSON nested too deeply", lambda s: ["fid", "--run", _r(s), "--extractor", f"run:{_r(s)}"],
             "nested too deeply", both(with_run(), with_file("run/visualisations/inversion.json", DEEP))))
    add(Case("fid --real -1", lambda s: ["fid", "--run", _r(s), "--extractor", f"run:{_r(s)}", "--real", "-1"], "--real",
             with_run()))

    # -- score: degenerate attributions
    add(Case("score all-zero attributions", lambda s: ["score", "--run", _r(s), "--metrics", "sparseness"],
             "8 of 8 samples have degenerate attributions (8 all zero, 0 constant",
             both(with_run(), edit_attributions(lambda t: t["attributions"].zero_()))))
    add(Case("score constant attributions", lambda s: ["score", "--run", _r(s), "--metrics", "sparseness"],
             "1 of 8 samples have degenerate attributions (0 all zero, 1 constant",
             both(with_run(), edit_attributions(lambda t: t["attributions"][3].fill_(0.25)))))

    # -- train --out
    add(Case("train --out holds user files", lambda s: ["train", "--epochs", "1", "--out", str(s / "mine")],
             "holds files xairobust did not write (holiday.jpg, notes)",
             both(with_file("mine/holiday.jpg", b"\xff\xd8"), with_file("mine/notes/todo.txt", "x"))))

    # -- batch / demo
    def loop(s: Path) -> None:
        os.symlink(s / "loop2", s / "loop1")
        os.symlink(s / "loop1", s / "loop2")

    add(Case("batch run: symlink loop", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], "cannot resolve the path",
             both(loop, with_file("zoo.yaml", zoo("  - run: loop1\n")))))
    add(Case("batch run: nested too deeply", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], "nested too deeply",
             both(with_run(), with_file("run/run.json", DEEP), with_file("zoo.yaml", zoo("  - run: run\n")))))
    add(Case("batch run: a file", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], "run directory not found",
             both(with_file("f", "x"), with_file("zoo.yaml", zoo("  - run: f\n")))))
    add(Case("batch run: listed twice", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], "is listed twice",
             both(with_run(), with_file("zoo.yaml", zoo("  - run: run\n  - run: run\n")))))
    add(Case("batch --root below a file", lambda s: ["batch", "quickstart", "--root", str(s / "f" / "x"), "-q"],
             "is a file, not a folder", with_file("f", "x")))
    add(Case("batch zoo root below a file", lambda s: ["batch", str(s / "zoo.yaml"), "-q"], "is a file, not a folder",
             both(with_file("f", "x"), with_file("zoo.yaml", "root: f/x\n" + zoo("  - name: standard\n")))))
    add(Case("batch --root in /proc", lambda s: ["batch", "quickstart", "--root", "/proc/xairobust-test", "-q"],
             "cannot write in /proc", skip=None if Path("/proc/self").exists() else "no /proc"))
    add(Case("demo --out a file", lambda s: ["demo", "--out", str(s / "f"), "-q"], "is a file, not a folder",
             with_file("f", "x")))
    return c


CASES = cases()
IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


def _checkpoints(folder: Path, run: Path) -> None:
    """Crafted checkpoints of the digits_cnn in ``run`` (its state dict, xairobust layout)."""
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    sd = load_file(run / "model.safetensors")
    torch.save(sd, folder / "good.pt")
    nan = {k: torch.full_like(v, float("nan")) if k.startswith("net.") else v for k, v in sd.items()}
    torch.save(nan, folder / "nan.pt")
    save_file(nan, folder / "nan.safetensors")
    inf = dict(sd)
    inf["net.features.2.weight"] = sd["net.features.2.weight"].clone()
    inf["net.features.2.weight"].view(-1)[7] = float("inf")
    torch.save(inf, folder / "inf.pt")
    torch.save({**sd, "net.features.2.weight": (sd["net.features.2.weight"] * 100).round().long()}, folder / "int64.pt")
    torch.save({**sd, "net.head.3.bias": sd["net.head.3.bias"] > 0}, folder / "bool.pt")
    torch.save({**sd, "normalize.std": torch.full_like(sd["normalize.std"], float("nan"))}, folder / "nan_norm.pt")
    deep: dict = {}
    node = deep
    for _ in range(2000):  # a pickle nested this deep is refused by the reader (one line), not a crash
        node["x"] = {}
        node = node["x"]
    try:
        torch.save(deep, folder / "deep.pt")
    except RecursionError:
        (folder / "deep.pt").write_bytes(b"\x80\x02" + b"}q\x00(X\x01\x00\x00\x00x" * 5000)


@pytest.fixture(scope="module")
def outcome(digits_run, tmp_path_factory):
    from xairobust.stages.attack import AttackConfig, attack
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.manipulate import ManipulateConfig, manipulate
    from xairobust.stages.score import ScoreConfig, score
    from xairobust.stages.visualize import FidConfig, VisualizeConfig, fid, visualize

    base = tmp_path_factory.mktemp("bad_input_newer")
    W.run = base / "template"
    shutil.copytree(digits_run, W.run)
    explain(W.run, ExplainConfig(n=8, selection="first", params={"n_steps": 4}), quiet=True)
    score(W.run, ScoreConfig(metrics="sparseness"), quiet=True)
    manipulate(W.run, ManipulateConfig(n=8, steps=2, selection="first", params={"n_steps": 4}, device="cpu"), quiet=True)
    for kind, n in (("inversion", 2), ("generation", 2)):
        visualize(W.run, VisualizeConfig(kind=kind, preset="quick", params={"steps": 2}, n=n, device="cpu"), quiet=True)
    fid(W.run, FidConfig(extractor=f"run:{W.run}", device="cpu"), quiet=True)
    assert (W.run / "visualisations" / "metrics_run-template.csv").is_file()
    attack(W.run, AttackConfig(eps=0.1, steps=2, n=8, autoattack=False, device="cpu"), quiet=True)
    # A diverged run: NaN weights, with run.json's checksum recomputed (so only the values are wrong).
    from safetensors.torch import load_file, save_file

    W.nan_run = base / "nan_template"
    shutil.copytree(digits_run, W.nan_run)
    sd = load_file(W.nan_run / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if k.startswith("net.") else v for k, v in sd.items()},
              W.nan_run / "model.safetensors")
    meta = json.loads((W.nan_run / "run.json").read_text())
    meta["weights_sha256"] = file_sha256(W.nan_run / "model.safetensors")
    (W.nan_run / "run.json").write_text(json.dumps(meta))
    W.ckpts = base / "ckpts"
    _checkpoints(W.ckpts, digits_run)

    runnable = [c for c in CASES if c.skip is None]
    sandboxes: dict[str, Path] = {}
    for case in runnable:
        s = base / "cases" / _slug(case.id)
        s.mkdir(parents=True)
        case.setup(s)
        sandboxes[case.id] = s
    before = {cid: _snapshot(s) for cid, s in sandboxes.items()}
    spec = [{"id": c.id, "argv": c.argv(sandboxes[c.id]), "cwd": str(sandboxes[c.id]),
             "env": {"XAIROBUST_DATA": str(sandboxes[c.id] / "data"), "HOME": str(sandboxes[c.id])}} for c in runnable]
    (base / "cases.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("XAIROBUST_DEBUG", None)
    proc = subprocess.run([sys.executable, str(DRIVER), str(base / "cases.json"), str(base / "results.json"),
                           "--jobs", "2", "--timeout", "60"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((base / "results.json").read_text())
    after = {cid: _snapshot(s) for cid, s in sandboxes.items()}
    passing = sum(
        1 for c in runnable
        if results[c.id]["rc"] == c.rc and "internal error" not in results[c.id]["stderr"]
        and c.message in results[c.id]["stderr"] and before[c.id] == after[c.id]
    )
    print(f"\nnewer bad-input suite: {len(CASES)} cases, {len(runnable)} run, {passing} passing")
    return {"results": results, "before": before, "after": after}


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    for command in ("manipulate", "manipulation-report", "visualize", "fid", "import", "report", "batch"):
        assert any(c.id.startswith(command) or f": {command}" in c.id for c in CASES), command


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_newer_bad_input_is_one_clear_line_and_changes_nothing(case: Case, outcome):
    if case.skip:
        pytest.skip(case.skip)
    res = outcome["results"][case.id]
    err = res["stderr"]
    shown = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert res["rc"] == case.rc, (res["rc"], err)
    assert len(shown) == 1 and shown[0].startswith("error: "), err
    assert case.message in shown[0], shown[0]
    assert outcome["after"][case.id] == outcome["before"][case.id], "the case changed its sandbox"
    assert res["seconds"] < 30, f"failed only after {res['seconds']:.1f} s"
