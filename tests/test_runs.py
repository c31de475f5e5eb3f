import json

import pytest
import torch

from xairobust import create_model, get_dataset, load_run
from xairobust.errors import RunError
from xairobust.runs import atomic_path, load_tensors, save_tensors, tensor_bytes
from xairobust.stages.train import TrainConfig, train


def test_round_trip_is_bit_identical(digits_run):
    state = load_tensors(digits_run / "model.safetensors")
    model, meta = load_run(digits_run)
    for name, tensor in model.state_dict().items():
        assert tensor_bytes(tensor) == tensor_bytes(state[name]), name
    assert meta["model"]["name"] == "digits_cnn"
    assert meta["method"]["name"] == "standard"
    assert meta["input_space"] == "pixels in [0, 1]"
    assert set(meta["versions"]) >= {"torch", "python"}
    # The recorded clean accuracy is the loaded model's accuracy on the test split.
    test = get_dataset("digits", "test")
    with torch.no_grad():
        acc = (model(test.inputs()).argmax(1) == test.y).float().mean().item()
    assert meta["clean_accuracy"] == pytest.approx(acc, abs=1e-7)


def test_same_seed_gives_identical_weights(tmp_path, digits_run):
    again = train(TrainConfig(epochs=2, seed=0), tmp_path / "again", quiet=True)
    a = load_tensors(digits_run / "model.safetensors")
    b = load_tensors(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train(TrainConfig(epochs=2, seed=1), tmp_path / "other", quiet=True)
    c = load_tensors(other / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tampered_weights_are_refused(tmp_path, digits_run):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(RunError, match="checksum does not match"):
        load_run(copy)
    # Without the checksum the file is still only parsed, never unpickled: garbage is a RunError.
    meta = json.loads((copy / "run.json").read_text())
    meta.pop("weights_sha256")
    (copy / "run.json").write_text(json.dumps(meta))
    (copy / "model.safetensors").write_bytes(b"\x80\x04garbage-pickle")
    with pytest.raises(RunError, match="not a valid safetensors file"):
        load_run(copy)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "t.safetensors"
    save_tensors(target, {"a": torch.zeros(3)})
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_create_model_normalises_inside(digits_run):
    model = create_model("digits_cnn", num_outputs=10, in_channels=1, mean=[0.5], std=[0.25])
    x = torch.full((1, 1, 8, 8), 0.75)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))


def test_digits_split_is_fixed_stratified_and_in_range():
    train_split, test_split = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert len(train_split) + len(test_split) == 1797
    assert float(train_split.inputs().min()) == 0.0 and float(train_split.inputs().max()) == 1.0
    counts = torch.bincount(test_split.y, minlength=10)
    full = torch.bincount(torch.cat([train_split.y, test_split.y]), minlength=10)
    # Stratified: every class's test share is within one sample of 25 %.
    assert torch.all((counts.float() - full.float() * 0.25).abs() <= 1.0)
    assert torch.equal(get_dataset("digits", "test").x, test_split.x)


def test_digits_normalisation_constants_match_the_training_pixels():
    x = get_dataset("digits", "train").inputs()
    info = get_dataset("digits", "train").info
    assert info.mean[0] == pytest.approx(float(x.mean()), abs=5e-4)
    assert info.std[0] == pytest.approx(float(x.std()), abs=5e-4)


def test_retraining_the_same_config_is_a_no_op_and_another_config_is_refused(tmp_path):
    from xairobust.errors import ConfigError

    out = train(TrainConfig(epochs=1, seed=0), tmp_path / "r", quiet=True)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    train(TrainConfig(epochs=1, seed=0), out, quiet=True)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="already holds a run with another config"):
        train(TrainConfig(epochs=1, seed=1), out, quiet=True)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    train(TrainConfig(epochs=1, seed=1), out, quiet=True, force=True)
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "w.safetensors", {"a": torch.zeros(1)})
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
