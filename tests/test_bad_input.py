"""The bad-input suite (issue 12): every case through the real CLI, each with one line `error: ...`.

A table of cases, each: the command line, the expected exit status, a substring of the one-line
message, and what it must leave alone. Every case runs in a sandbox folder of its own (copies of
a digits run, its attributions, a tiny CIFAR-10 folder, crafted files) and must

* exit with the expected status (2 for bad input),
* print exactly one line on stderr, starting with ``error:``, containing the substring,
  with no ``internal error`` and no traceback,
* change nothing in its sandbox (no file written, changed or left behind), and
* fail before any long work (a few seconds at most).

Pickle payloads in CIFAR-10 batch files would create a marker file if run; the suite counts
payloads tried and executed (must be 0).

The cases run through ``tests/cli_fork_driver.py``, which imports the CLI once and forks a
child per case that runs the console entry point ``xairobust.cli:run`` (what the installed
``xairobust`` script calls); a few cases also run through the installed console script itself
to show that both see the same thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("cli_fork_driver.py")
MARKER = "PWNED"


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]  # sandbox -> arguments after `xairobust`
    message: str  # substring of the one error line
    setup: Callable[[Path], None] = lambda s: None
    rc: int = 2
    skip: str | None = None  # reason, when the case cannot be made on this machine
    payload: bool = False  # a crafted pickle that would create sandbox/PWNED
    tags: tuple[str, ...] = field(default_factory=tuple)


# --- sandbox builders ------------------------------------------------------------------------------


class World:
    """Templates the cases copy from (built once per session)."""

    run: Path  # digits run with attributions/ig.* (n=8)
    cifar: Path  # folder holding cifar-10-batches-py/ with 20 images per batch


W = World()


def copy_run(sandbox: Path, name: str = "run") -> Path:
    dst = sandbox / name
    shutil.copytree(W.run, dst)
    return dst


def with_run(meta=None, tensors=None, doc=None, raw_meta: str | None = None, name: str = "run"):
    """Setup: a copy of the digits run, with run.json / attribution tensors / ig.json edited."""

    def setup(sandbox: Path) -> None:
        run = copy_run(sandbox, name)
        if raw_meta is not None:
            (run / "run.json").write_text(raw_meta)
        if meta is not None:
            m = json.loads((run / "run.json").read_text())
            meta(m)
            (run / "run.json").write_text(json.dumps(m))
        if tensors is not None:
            from safetensors.torch import load_file, save_file

            path = run / "attributions" / "ig.safetensors"
            t = load_file(path)
            tensors(t)
            save_file({k: v.contiguous() for k, v in t.items()}, path)
        if doc is not None:
            path = run / "attributions" / "ig.json"
            d = json.loads(path.read_text())
            doc(d)
            from xairobust.stages.contract import seal

            path.write_text(json.dumps(seal(d)))  # as if explain had written it (its body hash matches)

    return setup


def with_file(name: str, content: bytes | str):
    def setup(sandbox: Path) -> None:
        path = sandbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def both(*setups):
    def setup(sandbox: Path) -> None:
        for s in setups:
            s(sandbox)

    return setup


def write_cifar(folder: Path, n: int = 20, payloads: dict[str, bytes] | None = None) -> None:
    """cifar-10-batches-py/ with n random images per batch (the official dict layout, protocol 2)."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if payloads and name in payloads:
            (d / name).write_bytes(payloads[name])
            continue
        batch = {"batch_label": name, "labels": [i % 10 for i in range(n)],
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))


def with_cifar(payloads: dict[str, str] | None = None):
    """Setup: a tiny CIFAR-10 folder; ``payloads`` maps batch file names to a payload of _payloads()."""

    def setup(sandbox: Path) -> None:
        if payloads:
            crafted = _payloads(str(sandbox / MARKER))
            write_cifar(sandbox / "data", payloads={name: crafted[kind] for name, kind in payloads.items()})
        else:
            shutil.copytree(W.cifar, sandbox / "data")

    return setup


# --- pickle payloads (each would create the marker file if the loader ran it) ---------------------


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(m: str = "/nonexistent/PWNED") -> dict[str, bytes]:
    """Crafted batch files; each creates the file ``m`` when unpickled by plain pickle.load."""
    import builtins
    import subprocess as sp

    good = {"batch_label": "x", "labels": [0] * 4, "data": np.zeros((4, 3072), np.uint8), "filenames": ["a"] * 4}
    return {
        "os.system": pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=2),
        "builtins.exec": pickle.dumps(_Reduce(builtins.exec, (f"open({m!r}, 'w').close()",)), protocol=2),
        "builtins.eval": pickle.dumps(_Reduce(builtins.eval, (f"open({m!r}, 'w')",)), protocol=4),
        "subprocess.call": pickle.dumps(_Reduce(sp.call, (["touch", m],)), protocol=2),
        "nested in labels": pickle.dumps({**good, "labels": [_Reduce(os.system, (f"touch {m}",))]}, protocol=2),
        "extra key after data": pickle.dumps({**good, "zz": _Reduce(os.system, (f"touch {m}",))}, protocol=2),
        "protocol 0 INST": f"(S'touch {m}'\nios\nsystem\n.".encode(),
        "object dtype array": pickle.dumps(np.array([_Reduce(os.system, (f"touch {m}",))], dtype=object), protocol=2),
        "builtins.open": pickle.dumps(_Reduce(builtins.open, (m, "w")), protocol=2),
    }


# --- the table -------------------------------------------------------------------------------------


def _r(s: Path) -> str:
    return str(s / "run")


def cases() -> list[Case]:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    assert len(bomb) < 1100  # the 1 kB alias bomb (9**9 leaves)
    binary = bytes(range(256)) * 4
    latin1 = "epochs: 1\nlabel: caf\xe9\n".encode("latin1")
    huge = "epochs: 1\n" + "# padding\n" * 110_000
    tag = "epochs: !!python/object/apply:os.system ['touch PWNED']\n"
    zoo_bomb = "name: z\ndatasets: [digits]\nmodels: [digits_cnn]\nmethods: &m [standard]\nseeds: 1\nx: *m\n"
    train = ["train", "--epochs", "1"]

    def out(s: Path) -> list[str]:
        return ["--out", str(s / "out")]

    c: list[Case] = []
    add = c.append

    # YAML files: configs (train, score, report) and zoo files (batch --dry-run)
    for label, content, msg in [
        ("alias bomb", bomb, "aliases"),
        ("binary", binary, "binary file"),
        ("latin-1", latin1, "not UTF-8"),
        ("over 1 MB", huge, "too large"),
        ("python tag", tag, "invalid YAML"),
        ("syntax", "a: [1, 2\n", "invalid YAML (line"),
        ("top-level list", "- 1\n- 2\n", "top level must be a mapping"),
    ]:
        add(Case(f"train --config {label}", lambda s: [*train, "--config", str(s / "c.yaml"), *out(s)], msg,
                 with_file("c.yaml", content)))
        add(Case(f"batch zoo {label}", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], msg,
                 with_file("zoo.yaml", content)))
    add(Case("batch zoo alias", lambda s: ["batch", str(s / "zoo.yaml"), "--dry-run"], "aliases",
             with_file("zoo.yaml", zoo_bomb)))
    add(Case("score --config alias bomb", lambda s: ["score", "--run", _r(s), "--config", str(s / "c.yaml")], "aliases",
             both(with_run(), with_file("c.yaml", bomb))))
    add(Case("report --config binary", lambda s: ["report", _r(s), "--out", str(s / "rep"), "--config", str(s / "c.yaml")],
             "binary file", both(with_run(), with_file("c.yaml", binary))))
    add(Case("train --config yaml directory", lambda s: [*train, "--config", str(s), *out(s)], "", rc=2))

    # numeric options: NaN/inf/out of range, with the option's name
    for args, msg in [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "-0.1"], "--lr must be > 0"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--method", "nsloss", "--eps-ns", "inf"], "--eps-ns must be a finite number"),
        (["--method", "nsloss", "--lam", "nan"], "--lam must be a finite number"),
        (["--method", "pgd", "--eps", "nan"], "--eps must be a finite number"),
        (["--method", "pgd", "--eps", "1/0"], "--eps must be a number"),
        (["--method", "pgd", "--step-size", "-inf"], "--step-size must be a finite number"),
        (["--method", "jacobian", "--lam", "inf"], "--lam must be a finite number"),
    ]:
        add(Case(f"train {' '.join(args)}", lambda s, args=args: [*train, *args, *out(s)], msg))
    for yaml_text, msg in [
        ("momentum: .nan\n", "--momentum must be a finite number"),
        ("momentum: 1.5\n", "--momentum must be in [0, 1]"),
        ("epochs: .inf\n", "--epochs must be an integer"),
        ("weight_decay: -.inf\n", "--weight-decay must be a finite number"),
        ("val_fraction: 1\n", "--val-fraction must be in [0, 1)"),
        ("dataset: digits\nmethod: pgd\nmethod_params: {eps: .inf}\n", "--eps must be a finite number"),
    ]:
        add(Case(f"train yaml {yaml_text.strip().splitlines()[-1]}",
                 lambda s: ["train", "--config", str(s / "c.yaml"), *out(s)], msg, with_file("c.yaml", yaml_text)))
    for args, msg in [
        (["--eps", "inf"], "--eps must be a finite number"),
        (["--eps", "nan"], "--eps must be a finite number"),
        (["--eps", "-0.1"], "--eps must be > 0"),
        (["--eps", "8/0"], "--eps must be a number"),
        (["--step-size", "inf"], "--step-size must be a finite number"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--restarts", "0"], "--restarts must be >= 1"),
        (["--n", "0"], "--n must be >= 1"),
        (["--attack", "bim-regression", "--eps", "inf"], "--eps must be a finite number"),
    ]:
        aa = [] if "bim-regression" in args else ["--no-autoattack"]
        add(Case(f"attack {' '.join(args)}", lambda s, args=args, aa=aa: ["attack", "--run", _r(s), *aa, *args],
                 msg, with_run()))
    for args, msg in [
        (["--n", "0"], "--n must be >= 1"),
        (["--n-steps", "1"], "--n-steps must be >= 2"),
        (["--blur-sigma", "inf"], "--blur-sigma must be a finite number"),
        (["--uniform-low", "nan"], "--uniform-low must be a finite number"),
        (["--explainer", "gradient_shap", "--stdevs", "-inf"], "--stdevs must be a finite number"),
        (["--target", "minus"], "--target must be pred, label or an output index"),
    ]:
        add(Case(f"explain {' '.join(args)}", lambda s, args=args: ["explain", "--run", _r(s), *args], msg, with_run()))
    for args, msg in [
        (["--n", "0"], "--n must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--set", "max_sensitivity.radius=inf"], "--radius must be a finite number"),
        (["--set", "max_sensitivity.radius=nan"], "--radius must be a finite number"),
        (["--set", "nonsense"], "--set expects METRIC.PARAM=VALUE"),
    ]:
        add(Case(f"score {' '.join(args)}", lambda s, args=args: ["score", "--run", _r(s), *args], msg, with_run()))
    for args, msg in [
        (["--tolerance", "nan"], "--tolerance"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--eps-ns", "inf"], "--eps-ns must be a finite number"),
    ]:
        add(Case(f"tune-lambda {' '.join(args)}",
                 lambda s, args=args: ["tune-lambda", "--run", _r(s), *args, "--out", str(s / "t.json")], msg, with_run()))
    for args, msg in [
        (["--alpha", "2"], "--alpha must be in (0, 1)"),
        (["--alpha", "nan"], "--alpha must be a finite number"),
        (["--ci-level", "inf"], "--ci-level must be a finite number"),
    ]:
        add(Case(f"report {' '.join(args)}", lambda s, args=args: ["report", _r(s), "--out", str(s / "rep"), *args], msg,
                 with_run()))
    for args, msg in [
        (["--eps", "inf"], "--eps must be a finite number"),
        (["--step-size", "nan"], "--step-size must be a finite number"),
    ]:
        add(Case(f"mer-attack {' '.join(args)}", lambda s, args=args: ["mer-attack", _r(s), *args], msg, with_run()))

    # run.json: missing keys, wrong types, a run that does not fit its dataset
    for label, edit, msg in [
        ("missing dataset", lambda m: m.pop("dataset"), "missing key 'dataset'"),
        ("missing model", lambda m: m.pop("model"), "missing key 'model.name'"),
        ("model is a number", lambda m: m.update(model=3), "'model' must be a mapping"),
        ("info is a string", lambda m: m["dataset"].update(info="x"), "'dataset.info' must be a mapping"),
        ("num_outputs a string", lambda m: m["dataset"]["info"].update(num_outputs="ten"), "'dataset.info.num_outputs' must be"),
        ("input_shape wrong", lambda m: m["dataset"]["info"].update(input_shape=[1, 8, -8]), "input_shape' must be a list"),
        ("digits run on CIFAR-10", lambda m: m["dataset"].update(name="cifar10"), "cannot be used on 'cifar10'"),
        ("unknown dataset", lambda m: m["dataset"].update(name="digitz"), "digitz"),
        ("channels disagree", lambda m: m["model"]["kwargs"].update(in_channels=3), "input channel"),
    ]:
        add(Case(f"explain run.json {label}", lambda s: ["explain", "--run", _r(s), "--data-dir", str(s / "data")], msg,
                 both(with_run(meta=edit), with_cifar())))
    add(Case("attack run.json digits run on CIFAR-10", lambda s: ["attack", "--run", _r(s), "--data-dir", str(s / "data")],
             "cannot be used on 'cifar10'", both(with_run(meta=lambda m: m["dataset"].update(name="cifar10")), with_cifar())))
    add(Case("score run.json missing dataset", lambda s: ["score", "--run", _r(s)], "missing key 'dataset'",
             with_run(meta=lambda m: m.pop("dataset"))))
    add(Case("report run.json seed a string", lambda s: ["report", _r(s), "--out", str(s / "rep")],
             "'seed' must be an integer", with_run(meta=lambda m: m.update(seed="zero"))))
    add(Case("mer-attack run.json missing model", lambda s: ["mer-attack", _r(s)], "missing key 'model.name'",
             with_run(meta=lambda m: m.pop("model"))))
    add(Case("score-epochs run.json missing dataset", lambda s: ["score-epochs", _r(s)], "missing key 'dataset'",
             both(with_run(meta=lambda m: m.pop("dataset")), with_file("run/checkpoints/epoch_001.safetensors", b""))))
    add(Case("tune-lambda run.json missing dataset", lambda s: ["tune-lambda", "--run", _r(s)], "missing key 'dataset'",
             with_run(meta=lambda m: m.pop("dataset"))))
    add(Case("explain run.json not JSON", lambda s: ["explain", "--run", _r(s)], "not valid JSON",
             with_run(raw_meta="{ nope")))
    add(Case("train --init damaged run", lambda s: [*train, "--init", _r(s), *out(s)], "missing key 'dataset'",
             with_run(meta=lambda m: m.pop("dataset"))))

    # attribution files: shapes, dtypes, indices, NaN/inf
    import torch

    for label, edit, msg in [
        ("attributions cropped", lambda t: t.update(attributions=t["attributions"][:, :, :4]), "'attributions' has shape"),
        ("attributions int32", lambda t: t.update(attributions=t["attributions"].to(torch.int32)), "dtype int32"),
        ("attributions float16", lambda t: t.update(attributions=t["attributions"].half()), "dtype float16"),
        ("inputs RGB", lambda t: t.update(inputs=t["inputs"].repeat(1, 3, 1, 1), attributions=t["attributions"].repeat(1, 3, 1, 1)),
         "this run's inputs are (N, 1, 8, 8)"),
        ("all NaN", lambda t: t.update(attributions=torch.full_like(t["attributions"], float("nan"))), "8 of 8 samples have NaN/inf"),
        ("one NaN feature", lambda t: t["attributions"].view(-1)[5].fill_(float("nan")), "1 of 8 samples have NaN/inf"),
        ("inf", lambda t: t["attributions"][2].fill_(float("inf")), "1 of 8 samples have NaN/inf"),
        ("indices beyond the split", lambda t: t.update(indices=t["indices"] + 100_000), "outside the test split"),
        ("negative indices", lambda t: t.update(indices=t["indices"] - 100), "outside the test split"),
        ("duplicate indices", lambda t: t.update(indices=torch.zeros_like(t["indices"])), "lists a sample twice"),
        ("targets out of range", lambda t: t.update(targets=t["targets"] + 10), "target indices must be in 0..9"),
        ("no targets", lambda t: t.pop("targets"), "no 'targets' tensor"),
        ("targets 2-D", lambda t: t.update(targets=t["targets"][:, None]), "'targets' has shape"),
    ]:
        add(Case(f"score {label}", lambda s: ["score", "--run", _r(s), "--metrics", "sparseness"], msg,
                 with_run(tensors=edit)))
    add(Case("score ig.json params not a mapping", lambda s: ["score", "--run", _r(s)], "'params' must be a mapping",
             with_run(doc=lambda d: d.update(params="x"))))
    add(Case("score ig.json seed a string", lambda s: ["score", "--run", _r(s)], "'seed' must be an integer",
             with_run(doc=lambda d: d.update(seed="0"))))
    add(Case("score attributions not safetensors", lambda s: ["score", "--run", _r(s)], "not a valid safetensors file",
             both(with_run(), with_file("run/attributions/ig.safetensors", b"\x80\x04garbage"))))

    # output paths, checked before any work
    add(Case("train --out is a file", lambda s: [*train, "--out", str(s / "f")], "is a file, not a folder", with_file("f", "x")))
    add(Case("train --out below a file", lambda s: [*train, "--out", str(s / "f" / "run")], "is a file, not a folder",
             with_file("f", "x")))
    add(Case("train --out in /proc", lambda s: [*train, "--out", "/proc/xairobust-test/run"], "cannot write in /proc",
             skip=None if Path("/proc/self").exists() else "no /proc"))
    add(Case("train --out read-only", lambda s: [*train, "--out", str(s / "ro" / "run")], "cannot write in",
             lambda s: (s / "ro").mkdir(mode=0o555),
             skip="root ignores permissions" if hasattr(os, "geteuid") and os.geteuid() == 0 else None))
    add(Case("tune-lambda --out DIR", lambda s: ["tune-lambda", "--run", _r(s), "--out", str(s)], "is a folder", with_run()))
    add(Case("tune-lambda --out below a file", lambda s: ["tune-lambda", "--run", _r(s), "--out", str(s / "f" / "t.json")],
             "is a file, not a folder", both(with_run(), with_file("f", "x"))))
    add(Case("report --out is a file", lambda s: ["report", _r(s), "--out", str(s / "f")], "is a file, not a folder",
             both(with_run(), with_file("f", "x"))))
    add(Case("mer-report --out is a file", lambda s: ["mer-report", _r(s), "--out", str(s / "f")], "is a file, not a folder",
             both(with_run(), with_file("f", "x"))))

    # found beyond the list (each was an internal error or ran on silently)
    for label, yaml_text, msg in [
        ("model_kwargs width nan", "model_kwargs: {width: .nan}\n", "bad model option"),
        ("model_kwargs width -1", "model_kwargs: {width: -1}\n", "bad model option"),
        ("model_kwargs num_outputs 0", "model_kwargs: {num_outputs: 0}\n", "num_outputs come from the dataset; remove them"),
        ("digits takes no dataset_kwargs", "dataset_kwargs: {foo: 1}\n", "dataset 'digits' takes no options"),
        ("val_fraction leaves nothing", "val_fraction: 0.9999\n", "no training samples left"),
        ("cifar padding inf", "dataset: cifar10\nmodel: cifar_cnn\ndataset_kwargs: {padding: .inf}\n", "padding must be an integer"),
    ]:
        add(Case(f"train yaml {label}", lambda s: ["train", "--config", str(s / "c.yaml"), "--data-dir", str(s / "data"),
                                                    *out(s)], msg, both(with_file("c.yaml", yaml_text), with_cifar())))
    add(Case("train digits_cnn on CIFAR-10", lambda s: [*train, "--dataset", "cifar10", "--model", "digits_cnn",
                                                        "--data-dir", str(s / "data"), *out(s)],
             "the model does not take this dataset's inputs (3, 32, 32)", with_cifar()))
    add(Case("train --seed 2**70", lambda s: [*train, "--seed", str(2**70), *out(s)], "--seed must be in 0..2**63-1"))
    add(Case("explain --seed -1", lambda s: ["explain", "--run", _r(s), "--seed", "-1"], "--seed must be in 0..2**63-1",
             with_run()))
    add(Case("batch --workers 0", lambda s: ["batch", "quickstart", "--workers", "0", "--dry-run"], "--workers must be >= 1"))
    add(Case("batch --threads -1", lambda s: ["batch", "quickstart", "--threads", "-1", "--dry-run"], "--threads must be >= 1"))

    # --run / --model
    add(Case("explain without --model", lambda s: ["explain"], "explain: --model is required"))
    add(Case("attack --run and --model disagree", lambda s: ["attack", "--run", _r(s), "--model", str(s)],
             "give one model (--model, or its synonym --run)", with_run()))
    add(Case("score --run not a run", lambda s: ["score", "--run", str(s)], "not a run directory"))

    # pickle payloads in CIFAR-10 batch files: refused by `data check` and `train`, nothing runs
    for label in _payloads():
        add(Case(f"data check payload {label}", lambda s: ["data", "check", "cifar10", "--data-dir", str(s / "data")],
                 "refused", with_cifar({"data_batch_1": label}), payload=True))
        add(Case(f"train payload {label}",
                 lambda s: [*train, "--dataset", "cifar10", "--model", "cifar_cnn", "--data-dir", str(s / "data"), *out(s)],
                 "refused", with_cifar({"data_batch_1": label}), payload=True))
    add(Case("data check payload in test_batch", lambda s: ["data", "check", "--data-dir", str(s / "data")], "refused",
             with_cifar({"test_batch": "os.system"}), payload=True))
    return c


CASES = cases()
IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or 'dir' (folders), for 'nothing changed' checks."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir():
            snap[rel] = "dir"
        elif p.is_file():
            snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            snap[rel] = "other"
    return snap


@pytest.fixture(scope="module")
def outcome(digits_run, tmp_path_factory):
    """Build the sandboxes, run every case once (in parallel), return {id: (result, before, after, sandbox)}."""
    from xairobust.stages.explain import ExplainConfig, explain

    base = tmp_path_factory.mktemp("bad_input")
    W.run = base / "template_run"
    shutil.copytree(digits_run, W.run)
    explain(W.run, ExplainConfig(n=8, selection="first", params={"n_steps": 4}), quiet=True)
    W.cifar = base / "template_cifar"
    write_cifar(W.cifar)

    runnable = [c for c in CASES if c.skip is None]
    payload_list = []
    sandboxes: dict[str, Path] = {}
    for case in runnable:
        s = base / "cases" / _slug(case.id)
        s.mkdir(parents=True)
        case.setup(s)
        sandboxes[case.id] = s
    before = {cid: _snapshot(s) for cid, s in sandboxes.items()}
    payload_list = [c.id for c in runnable if c.payload]
    spec = [{"id": c.id, "argv": c.argv(sandboxes[c.id]), "cwd": str(sandboxes[c.id]),
             "env": {"XAIROBUST_DATA": str(sandboxes[c.id] / "data"), "HOME": str(sandboxes[c.id])}} for c in runnable]
    (base / "cases.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("XAIROBUST_DEBUG", None)
    proc = subprocess.run([sys.executable, str(DRIVER), str(base / "cases.json"), str(base / "results.json"),
                           "--jobs", "2", "--timeout", "60"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((base / "results.json").read_text())
    # Restore permissions so that pytest can clean up the read-only sandbox.
    for s in sandboxes.values():
        for p in s.rglob("*"):
            if p.is_dir() and not os.access(p, os.W_OK):
                p.chmod(0o755)
    after = {cid: _snapshot(s) for cid, s in sandboxes.items()}
    executed = [cid for cid in payload_list if (sandboxes[cid] / MARKER).exists()]
    summary = {"cases": len(CASES), "run": len(runnable), "payloads_tried": len(payload_list),
               "payloads_executed": len(executed)}
    (base / "summary.json").write_text(json.dumps(summary))
    print(f"\nbad-input suite: {summary}")
    slow = sorted(((r["seconds"], cid) for cid, r in results.items()), reverse=True)[:5]
    print("slowest cases:", ", ".join(f"{cid} {sec:.1f}s" for sec, cid in slow))
    return {"results": results, "before": before, "after": after, "sandboxes": sandboxes, "summary": summary}


def test_the_table_is_large_enough():
    assert len(CASES) >= 60
    assert sum(c.payload for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_is_one_clear_line_and_changes_nothing(case: Case, outcome):
    if case.skip:
        pytest.skip(case.skip)
    res = outcome["results"][case.id]
    err = res["stderr"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert res["rc"] == case.rc, (res["rc"], err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0], lines[0]
    assert outcome["after"][case.id] == outcome["before"][case.id], "the case changed its sandbox"
    assert res["seconds"] < 30, f"failed only after {res['seconds']:.1f} s"
    if case.payload:
        assert not (outcome["sandboxes"][case.id] / MARKER).exists(), "the pickle payload ran"


def test_no_payload_ran(outcome):
    s = outcome["summary"]
    assert s["payloads_tried"] >= 10 and s["payloads_executed"] == 0, s


def test_the_installed_console_script_sees_the_same(outcome, tmp_path):
    """A few cases again through the real `xairobust` executable: same status and message."""
    script = shutil.which("xairobust")
    if script is None:
        pytest.skip("the xairobust console script is not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    picked = ["train --lr inf", "batch zoo alias bomb", "explain run.json digits run on CIFAR-10"]
    procs = {}
    for cid in picked:
        case = next(c for c in CASES if c.id == cid)
        s = tmp_path / _slug(cid)
        s.mkdir()
        case.setup(s)
        procs[cid] = subprocess.Popen([script, *case.argv(s)], cwd=s, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    for cid, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        expected = outcome["results"][cid]
        strip = str(tmp_path / _slug(cid))
        mine = err.replace(strip, "S")
        theirs = expected["stderr"].replace(str(outcome["sandboxes"][cid]), "S")
        assert proc.returncode == expected["rc"] and mine == theirs, (cid, mine, theirs)


def test_grep_finds_no_unrestricted_unpickling():
    """`pickle.load` only inside the restricted unpickler; torch.load only with weights_only=True."""
    offenders = []
    for path in (ROOT / "xairobust").rglob("*.py"):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bpickle\.loads?\(", code) or re.search(r"\bpickle\.Unpickler\b", code) and "class _BatchUnpickler" not in code:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
            if re.search(r"\btorch\.load\(", code) and "weights_only=True" not in code:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders
