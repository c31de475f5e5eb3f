"""The safety checks of issue 12 that are not a refusal: what still works, and how.

(The refusals are the table of tests/test_bad_input.py.)
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xairobust.errors import ConfigError, DataError


def _entry(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    from xairobust.cli import run as entry_point

    monkeypatch.setattr(sys, "argv", ["xairobust", *argv])
    with pytest.raises(SystemExit) as exc:
        entry_point()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


# --- YAML ---------------------------------------------------------------------------------------


def test_the_issue_alias_bomb_is_refused_in_under_a_second(tmp_path):
    from xairobust.config import load_yaml

    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML aliases"):
        load_yaml(path)
    assert time.perf_counter() - start < 1.0


def test_every_shipped_yaml_file_loads_with_the_strict_loader():
    from xairobust.config import load_yaml

    files = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        assert isinstance(load_yaml(path), dict), path


def test_yaml_limits_are_one_line_each(tmp_path):
    from xairobust.config import YAML_MAX_BYTES, load_yaml

    cases = {
        "big.yaml": (b"a: 1\n" + b"#" * YAML_MAX_BYTES, "too large"),
        "bin.yaml": (b"a: 1\n\x00\x01", "binary file"),
        "latin.yaml": ("a: caf\xe9\n".encode("latin1"), "not UTF-8"),
        "tag.yaml": (b"a: !!python/name:os.system\n", "invalid YAML"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError) as exc:
            load_yaml(tmp_path / name)
        assert message in str(exc.value) and name in str(exc.value) and "\n" not in str(exc.value)


# --- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf"), "1/0"])
def test_float_fields_refuse_non_finite_values_with_the_cli_name(value):
    from xairobust.config import build
    from xairobust.stages.train import TrainConfig

    with pytest.raises(ConfigError, match=r"--weight-decay must be a (finite )?number"):
        build(TrainConfig, {"weight_decay": value}, "train")


def test_int_fields_refuse_inf_without_an_overflow():
    from xairobust.config import build
    from xairobust.stages.train import TrainConfig

    with pytest.raises(ConfigError, match="--epochs must be an integer"):
        build(TrainConfig, {"epochs": float("inf")}, "train")


def test_json_never_holds_nan_or_infinity(tmp_path):
    from xairobust.runs import read_json, write_json_atomic

    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": np.float64("nan")}, "e": 0.5})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(path) == {"a": None, "b": [1.0, None, None], "c": {"d": None}, "e": 0.5}
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


# --- CIFAR-10 without pickle ------------------------------------------------------------------------


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"batch_label": "b", "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


def _write_cifar(root: Path, n: int = 6) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _batch(n, i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    return batches


def test_restricted_unpickler_reads_what_pickle_reads(tmp_path):
    """The same arrays as plain pickle.load (the independent reference), for protocols 2 and 4."""
    from xairobust.data.cifar10 import restricted_load

    for protocol in (2, 4):
        batch = _batch(5, protocol)
        path = tmp_path / f"b{protocol}"
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        got = restricted_load(path)
        assert np.array_equal(got["data"], batch["data"]) and got["labels"] == batch["labels"]
        assert got["filenames"] == batch["filenames"]


def test_restricted_unpickler_reads_the_official_python2_layout(tmp_path):
    """A batch in the official files' opcodes (Python 2, protocol 2, numpy.core.multiarray)."""
    from xairobust.data.cifar10 import restricted_load

    data = bytes(range(256)) * 12  # one image, 3072 bytes
    body = (
        b"\x80\x02}q\x01(U\x06labelsq\x02]q\x03K\x07aU\x04dataq\x04"
        b"cnumpy.core.multiarray\n_reconstruct\nq\x05cnumpy\nndarray\nq\x06K\x00\x85U\x01b\x87Rq\x07"
        b"(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\t(K\x03U\x01|NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK\x00tb\x89T\x00\x0c\x00\x00" + data + b"tbu."
    )
    path = tmp_path / "official"
    path.write_bytes(body)
    reference = pickle.loads(body, encoding="latin1")
    got = restricted_load(path)
    assert got["labels"] == reference["labels"] == [7]
    assert got["data"].dtype == np.uint8 and np.array_equal(got["data"], reference["data"])


def test_cifar_is_converted_once_to_a_safetensors_cache(tmp_path, monkeypatch):
    import xairobust.data.cifar10 as c10
    from xairobust.data.base import get_dataset

    batches = _write_cifar(tmp_path)
    c10._decode.cache_clear()
    first = get_dataset("cifar10", "train", tmp_path)
    cache = tmp_path / "cache" / "cifar-10-batches-py_train.safetensors"
    assert cache.is_file()
    expected = np.concatenate([batches[f"data_batch_{k}"]["data"] for k in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(first.x.numpy(), expected)

    # A second process (cleared in-memory cache) reads the safetensors file, never the pickles.
    c10._decode.cache_clear()
    monkeypatch.setattr(c10, "restricted_load", lambda path: pytest.fail(f"unpickled {path} again"))
    second = get_dataset("cifar10", "train", tmp_path)
    assert torch.equal(second.x, first.x) and torch.equal(second.y, first.y)

    # A changed batch file invalidates the cache (and is read again, restricted).
    monkeypatch.undo()
    c10._decode.cache_clear()
    changed = _batch(6, 99)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(changed, protocol=2))
    third = get_dataset("cifar10", "train", tmp_path)
    assert np.array_equal(third.x[12:18].reshape(6, -1).numpy(), changed["data"])
    c10._decode.cache_clear()


def test_a_payload_is_refused_by_data_check_and_nothing_runs(tmp_path):
    import os

    import xairobust.data.cifar10 as c10

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Payload(), protocol=2))
    c10._decode.cache_clear()
    with pytest.raises(DataError, match=r"test_batch is not a plain CIFAR-10 batch: it asks to build posix\.system"):
        c10.Cifar10().check(tmp_path)
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "cache").exists()  # a diagnosis writes nothing


# --- run directories: --run, --model RUN, labels -------------------------------------------------------


def test_model_run_works_with_no_note(digits_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    code, out, err = _entry(monkeypatch, capsys, "explain", "--model", str(run), "--n", "2", "--n-steps", "2", "--quiet")
    assert code == 0 and err == "", err  # --model is the trained model (issue 21); --run its synonym
    code, out, err = _entry(monkeypatch, capsys, "explain", "--run", str(run), "--n", "2", "--n-steps", "2", "--quiet")
    assert code == 0 and err == "", err


def test_a_label_never_makes_train_write_outside_runs(tmp_path, monkeypatch, capsys):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, out, err = _entry(monkeypatch, capsys, "train", "--epochs", "1", "--label", "../../x", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir() and "runs" not in p.parts) == ["a", "b"]
    (run,) = (work / "runs").iterdir()
    assert run.name == "digits_digits_cnn_x_s0"
    assert json.loads((run / "run.json").read_text())["label"] == "../../x"  # the row name is kept as given


def test_allow_nonfinite_scores_the_other_samples_and_counts(digits_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from xairobust.errors import RunError
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    path = explain(run, ExplainConfig(n=6, selection="first", params={"n_steps": 4}), quiet=True)
    clean = score(run, ScoreConfig(metrics="sparseness,complexity"), quiet=True).read_text()
    t = load_file(path)
    t["attributions"][1].view(-1)[3] = float("nan")
    t["attributions"][4].view(-1)[0] = float("inf")
    save_file(t, path)
    with pytest.raises(RunError, match="2 of 6 samples have NaN/inf attributions"):
        score(run, ScoreConfig(metrics="sparseness,complexity"), quiet=True)
    csv_path = score(run, ScoreConfig(metrics="sparseness,complexity", allow_nonfinite=True), quiet=True)
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    clean_rows = [line.split(",") for line in clean.splitlines()[1:]]
    assert len(rows) == len(clean_rows) == 12
    for row, ref in zip(rows, clean_rows, strict=True):
        if row[0] in ("1", "4"):  # test indices 1 and 4 (selection=first): skipped, NaN
            assert math.isnan(float(row[3]))
        else:  # the other samples score exactly as before (per-sample metrics)
            assert row == ref
    doc_text = csv_path.with_suffix(".json").read_text()
    assert "NaN" not in doc_text and "Infinity" not in doc_text
    doc = json.loads(doc_text)
    assert doc["metrics"]["sparseness"]["nonfinite_attributions"] == {"count": 2, "indices": [1, 4]}


def test_output_checks_leave_nothing_behind(tmp_path):
    from xairobust.validate import check_output_dir, check_output_file

    check_output_dir(tmp_path / "new" / "deeper", "--out")
    check_output_file(tmp_path / "new" / "t.json", "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_dir(tmp_path / "f" / "sub", "--out")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path, "--out")


def test_restricted_unpickler_reads_a_batch_with_the_official_header(tmp_path):
    """The official test_batch's own pickle header (from ../shared/data), completed as build_batches.py does."""
    from conftest import shared_data

    from xairobust.data.cifar10 import restricted_load

    header = (shared_data("cifar10") / "headers" / "test_batch.hdr").read_bytes()
    pixels = np.random.default_rng(0).integers(0, 256, 30_720_000, dtype=np.uint8).tobytes()
    files = [f"f{i}.png".encode() for i in range(10_000)]
    body = bytearray(header) + pixels + b"tb" + b"U\x09filenames" + b"]"
    for s in range(0, 10_000, 1000):
        body += b"(" + b"".join(b"U" + bytes([len(f)]) + f for f in files[s:s + 1000]) + b"e"
    body += b"u."
    path = tmp_path / "test_batch"
    path.write_bytes(bytes(body))
    reference = pickle.loads(bytes(body), encoding="latin1")
    got = restricted_load(path)
    assert got.keys() == reference.keys()
    assert got["labels"] == reference["labels"] and np.array_equal(got["data"], reference["data"])
    assert got["data"].shape == (10_000, 3072) and got["data"].dtype == np.uint8
