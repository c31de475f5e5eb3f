"""``--model`` is the trained model in every command that consumes one (issue 21, item 1).

Table-driven over the consuming commands: ``--model`` given a run directory, the run's
``model.safetensors`` or a foreign checkpoint (a torch state dict saved here from the registered
digits_cnn) gives the same output as ``--run RUN``; a second call reuses the imported run; changed
checkpoint bytes are imported again (never reused) or, when the new bytes cannot be imported,
refused with the old import left as it was; bad paths are one line naming the option and file.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from xairobust.runs import load_run, load_tensors

ARCH = ["--arch", "digits_cnn", "--dataset", "digits"]


def _entry(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    from xairobust.cli import run as entry_point

    monkeypatch.setattr(sys, "argv", ["xairobust", *map(str, argv)])
    with pytest.raises(SystemExit) as exc:
        entry_point()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _tensors(path: Path) -> dict[str, list]:
    return {k: v.tolist() for k, v in load_tensors(path).items()}


def _robust(run: Path) -> list:
    doc = json.loads((run / "robustness.json").read_text())
    return [(e["attack"], e["norm"], e["eps"], e["n"], e["robust_accuracy"]) for e in doc["results"]]


def _manip(run: Path) -> str:
    return (run / "manipulation" / "random_saliency.csv").read_text()


def _tune(run: Path) -> list:
    doc = json.loads((run / "tune_lambda.json").read_text())
    return [(t["lambda"], t["max_window_ce_bits"], t["too_high"]) for t in doc["trace"]] + [doc["nsloss0"]]


def _unlabelled(run: Path, text: str) -> str:
    """The table without the run's label (an imported run is labelled by its file name)."""
    return text.replace(json.loads((run / "run.json").read_text())["label"], "LABEL")


def _fid(run: Path) -> str:
    (csv,) = (run / "visualisations").glob("metrics_*.csv")
    return csv.read_text()


# command -> (prerequisite command or None, its arguments, output of the run directory)
COMMANDS = {
    "explain": (None, ["explain", "--n", "2", "--n-steps", "2", "--selection", "first", "--quiet"],
                lambda run: _tensors(run / "attributions" / "ig.safetensors")),
    "attack": (None, ["attack", "--n", "8", "--steps", "1", "--eps", "0.1", "--no-autoattack", "--quiet"], _robust),
    "score": (["explain", "--n", "2", "--n-steps", "2", "--selection", "first", "--quiet"],
              ["score", "--metrics", "sparseness,complexity", "--quiet"],
              lambda run: (run / "scores" / "ig.csv").read_text() + _unlabelled(run, (run / "scores" / "ig.md").read_text())),
    "manipulate": (None, ["manipulate", "--attack", "random", "--explainer", "saliency", "--n", "2", "--steps", "1",
                          "--quiet"], _manip),
    "visualize": (None, ["visualize", "--kind", "inversion", "--preset", "quick", "--n", "2", "--steps", "2", "--quiet"],
                  lambda run: _tensors(run / "visualisations" / "inversion.safetensors")),
    "fid": (["visualize", "--kind", "inversion", "--preset", "quick", "--n", "2", "--steps", "2", "--quiet"],
            ["fid", "--extractor", "run:{base}", "--quiet"], _fid),
    "tune-lambda": (None, ["tune-lambda", "--iterations", "1", "--batches", "1", "--batch-size", "16", "--window", "1",
                           "--quiet"], _tune),
}
FORMS = ("run", "dir", "weights", "checkpoint")


@pytest.fixture(scope="module")
def base(digits_run, tmp_path_factory) -> Path:
    return digits_run


def _checkpoint(run: Path, path: Path) -> Path:
    """A foreign checkpoint: the run's model saved as a plain torch state dict."""
    model, _ = load_run(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _model_args(form: str, sandbox: Path, base: Path) -> tuple[list[str], Path]:
    """(the option and value(s) for ``form``, the run directory the outputs land in)."""
    if form == "checkpoint":
        ckpt = _checkpoint(base, sandbox / "ckpt.pt")
        return ["--model", str(ckpt), *ARCH], sandbox / "ckpt.pt.run"
    run = sandbox / "run"
    shutil.copytree(base, run)
    value = {"run": ["--run", str(run)], "dir": ["--model", str(run)],
             "weights": ["--model", str(run / "model.safetensors")]}[form]
    return value, run


def _fill(args: list[str], base: Path) -> list[str]:
    return [a.replace("{base}", str(base)) for a in args]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_model_run_dir_weights_and_checkpoint_give_the_output_of_run(command, base, tmp_path, monkeypatch, capsys):
    before, args, output = COMMANDS[command]
    results, errors = {}, []
    for form in FORMS:
        sandbox = tmp_path / form
        option, run = _model_args(form, sandbox, base)
        if before is not None:
            code, out, err = _entry(monkeypatch, capsys, *_fill(before, base)[:1], *option, *_fill(before, base)[1:])
            assert code == 0, err
            errors.append(err)
            if form == "checkpoint":  # the prerequisite imported it; the command itself reuses it
                option = ["--model", str(sandbox / "ckpt.pt")]
        code, out, err = _entry(monkeypatch, capsys, *_fill(args, base)[:1], *option, *_fill(args, base)[1:])
        assert code == 0, f"{form}: {err}"
        errors.append(err)
        results[form] = output(run)
    for form in FORMS[1:]:
        assert results[form] == results["run"], form
    assert not any("deprecat" in e.lower() for e in errors), errors
    assert errors[-1].count("imported") == (1 if before is None else 0)  # once, by the first call


def test_score_epochs_takes_model_too(tmp_path, monkeypatch, capsys):
    from xairobust.stages.train import TrainConfig, train

    run = train(TrainConfig(epochs=2, save_every=1, seed=0), tmp_path / "saved", quiet=True)
    outs = {}
    for i, option in enumerate(([str(run)], ["--model", str(run)], ["--run", str(run / "model.safetensors")])):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(run, copy)
        value = [o.replace(str(run), str(copy)) for o in option]
        code, out, err = _entry(monkeypatch, capsys, "score-epochs", *value, "--n", "2", "--metrics", "sparseness",
                                "--quiet")
        assert code == 0 and err == "", err
        outs[i] = sorted((p.name, p.read_text()) for p in (copy / "scores" / "epochs").glob("*.csv"))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 2
    # a foreign checkpoint has no per-epoch checkpoints: said in one line, after its import
    ckpt = _checkpoint(run, tmp_path / "foreign" / "c.pt")
    code, out, err = _entry(monkeypatch, capsys, "score-epochs", "--model", ckpt, *ARCH, "--quiet")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:") and "checkpoints" in err


def test_train_init_takes_a_checkpoint_file_and_gives_the_weights_of_init_run(base, tmp_path, monkeypatch, capsys):
    ckpt = _checkpoint(base, tmp_path / "init.pt")
    copy = tmp_path / "init_run"
    shutil.copytree(base, copy)
    shas = []
    for init, out in ((copy, tmp_path / "a"), (ckpt, tmp_path / "b"), (copy / "model.safetensors", tmp_path / "c")):
        code, _, err = _entry(monkeypatch, capsys, "train", "--epochs", "1", "--init", init, "--out", out, "--quiet")
        assert code == 0, err
        assert "deprecat" not in err.lower()
        shas.append(json.loads((out / "run.json").read_text())["weights_sha256"])
    assert shas[0] == shas[1] == shas[2]
    assert (tmp_path / "init.pt.run" / "run.json").is_file()  # architecture and data: those of the run trained


def test_a_second_call_reuses_the_import_and_changed_bytes_are_imported_again(base, tmp_path, monkeypatch, capsys):
    ckpt = _checkpoint(base, tmp_path / "m.pt")
    run = tmp_path / "m.pt.run"
    explain = ["explain", "--n", "2", "--n-steps", "2", "--selection", "first", "--quiet"]
    code, _, err = _entry(monkeypatch, capsys, *explain, "--model", ckpt, *ARCH)
    assert code == 0 and "imported" in err, err
    record = (run / "run.json").read_bytes()
    first = load_tensors(run / "attributions" / "ig.safetensors")["attributions"]

    code, _, err = _entry(monkeypatch, capsys, *explain, "--model", ckpt)  # no --arch: the import is reused
    assert code == 0 and err == "", err
    assert (run / "run.json").read_bytes() == record

    # other weights under the same name: imported again, earlier results moved aside, new result
    model, _ = load_run(base)
    state = model.state_dict()
    state["net.head.3.weight"] = state["net.head.3.weight"] * 2
    torch.save(state, ckpt)
    from xairobust.runs import file_sha256

    code, _, err = _entry(monkeypatch, capsys, *explain, "--model", ckpt)
    assert code == 0, err
    assert "changed since it was imported" in err and "deprecat" not in err.lower()
    meta = json.loads((run / "run.json").read_text())
    assert meta["source"]["sha256"] == file_sha256(ckpt)
    (aside,) = (run / ".replaced").iterdir()
    assert torch.equal(load_tensors(aside / "attributions" / "ig.safetensors")["attributions"], first)
    assert not torch.equal(load_tensors(run / "attributions" / "ig.safetensors")["attributions"], first)

    # bytes that cannot be imported: refused, the import left as it was (nothing stale is used)
    ckpt.write_bytes(b"not a checkpoint at all")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, err = _entry(monkeypatch, capsys, *explain, "--model", ckpt)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: explain: --model {ckpt}:") and "left as it was" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_file_may_name_its_architecture_and_dataset(base, tmp_path, monkeypatch, capsys):
    model, _ = load_run(base)
    ckpt = tmp_path / "named.pt"
    torch.save({"arch": "digits_cnn", "dataset": "digits", "state_dict": model.state_dict()}, ckpt)
    code, _, err = _entry(monkeypatch, capsys, "attack", "--model", ckpt, "--n", "4", "--steps", "1",
                          "--no-autoattack", "--quiet")
    assert code == 0, err
    meta = json.loads((tmp_path / "named.pt.run" / "run.json").read_text())
    assert (meta["model"]["name"], meta["dataset"]["name"]) == ("digits_cnn", "digits")


def _bad_cases(base: Path, tmp: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir(parents=True)
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"\x00garbage")
    bare = tmp / "bare.pt"
    model, _ = load_run(base)
    torch.save({k[4:]: v for k, v in model.state_dict().items() if k.startswith("net.")}, bare)
    blocked = tmp / "blocked.pt"
    shutil.copy(bare, blocked)
    (tmp / "blocked.pt.run").mkdir()
    (tmp / "blocked.pt.run" / "notes.txt").write_text("mine")
    copy = tmp / "run"
    shutil.copytree(base, copy)
    return [
        (["--model", tmp / "missing.pt"], "no such file or directory"),
        (["--model", empty], "not a run directory"),
        (["--model", garbage, *ARCH], "garbage.pt: refused"),
        (["--model", bare], "give --arch ARCH and --dataset DATASET"),
        (["--model", bare, *ARCH], "--input-norm"),
        (["--model", bare, "--arch", "digits_cnnn", "--dataset", "digits"], "not a registered model"),
        (["--model", blocked, *ARCH, "--input-norm", "0.5/0.25"], "holds other files"),
        (["--model", copy, "--arch", "digits_cnn"], "apply to a checkpoint file only"),
        (["--model", copy, "--run", empty], "give one model"),
        (["--model", ""], "an empty path"),
    ]


SINGLE = ["explain", "attack", "score", "manipulate", "visualize", "tune-lambda"]


@pytest.mark.parametrize("command", [*SINGLE, "fid", "score-epochs"])
def test_bad_model_paths_are_one_line_naming_the_option_and_file(command, base, tmp_path, monkeypatch, capsys):
    count = len(_bad_cases(base, tmp_path / "probe"))
    for i in range(count):
        sandbox = tmp_path / f"case{i}"
        option, message = _bad_cases(base, sandbox)[i]  # a fresh sandbox per case
        if command in ("fid", "score-epochs", "score") and "give one model" in message:
            continue  # these take several models
        before = {p: p.read_bytes() if p.is_file() else None for p in sandbox.rglob("*")}
        code, out, err = _entry(monkeypatch, capsys, command, *option, "--quiet")
        assert code == 2, (option, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"error: {command}: "), line
        assert message in line, (message, line)
        assert "--model" in line or "--run" in line
        assert "internal error" not in line and "deprecat" not in line.lower()
        assert {p: p.read_bytes() if p.is_file() else None for p in sandbox.rglob("*")} == before  # nothing written


def test_train_keeps_model_for_the_architecture_and_says_so(monkeypatch, capsys):
    code, out, _ = _entry(monkeypatch, capsys, "train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "--model TEXT Architecture to train" in flat and "timm's convention" in flat
    assert "--init MODEL" in flat and "checkpoint file" in flat
    for command in [*SINGLE, "fid", "score-epochs"]:
        code, out, _ = _entry(monkeypatch, capsys, command, "--help")
        flat = " ".join(out.split())
        assert code == 0 and "--model MODEL" in flat and "--run MODEL Same as --model." in flat, command
        assert "deprecat" not in flat.lower()


def test_every_consuming_command_uses_the_one_helper():
    """No command may declare --model/--run itself (the options would drift again)."""
    import click

    from xairobust.cli import main

    ctx = click.Context(main)
    for name in [*SINGLE, "fid", "score-epochs"]:
        cmd = main.get_command(ctx, name)
        opts = {o: p.name for p in cmd.params for o in getattr(p, "opts", [])}
        assert opts["--model"] == "model_paths" and opts["--run"] == "run_paths", name
        assert opts["--arch"] == "arch" and opts["--input-norm"] == "input_norm", name
