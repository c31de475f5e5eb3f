import json

from xairobust.runs import load_run


def test_digits_run_has_its_files(digits_run):
    for name in ("model.safetensors", "run.json", "config.yaml", "history.csv"):
        assert (digits_run / name).is_file(), name
    model, meta = load_run(digits_run)
    assert not model.training
    assert meta == json.loads((digits_run / "run.json").read_text())
    assert meta["epochs_run"] == 2
