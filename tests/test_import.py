"""`xairobust import`: every format in its real layout, bit-exact outputs, safe reading, strict keys.

Each checkpoint is built here from a registered model in the exact layout its zoo writes
(prefixes, nesting, normaliser keys); the imported run, loaded as every stage loads runs, must
give the same outputs as the original network bit for bit.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from xairobust.errors import ConfigError
from xairobust.importers.base import FORMATS, PRESETS
from xairobust.models.base import create_model
from xairobust.runs import file_sha256, load_run, read_run_meta
from xairobust.stages.import_ import ImportConfig, import_checkpoint


def imported(tmp_path: Path, ckpt: Path, name: str = "run", **kw) -> tuple[nn.Module, dict]:
    conf = ImportConfig(checkpoint=str(ckpt), **kw)
    out = import_checkpoint(conf, tmp_path / name, quiet=True)
    return load_run(out)


def same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that a mis-mapped BN buffer changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net.eval()


class Normalised(nn.Module):
    """The reference: the original network after (x - mean) / std, computed independently."""

    def __init__(self, net: nn.Module, mean, std) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def test_every_registered_format_is_tested_here():
    assert set(FORMATS.names()) == {"state_dict", "safetensors", "robustbench", "madrylab", "timm", "torchvision"}


# -- plain state dict ------------------------------------------------------------------------


def test_state_dict_with_dataparallel_prefix_and_nesting(tmp_path):
    torch.manual_seed(0)
    net = create_model("digits_cnn", num_outputs=10, in_channels=1).net.eval()
    ckpt = tmp_path / "digits.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 7, "best_acc": 0.9}, ckpt)
    model, meta = imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    x = torch.rand(5, 1, 8, 8)
    assert same_outputs(model, Normalised(net, [0.3], [0.4]), x)
    assert meta["method"] == {"name": "imported", "params": {}, "source_format": "state_dict"}
    assert meta["source"]["sha256"] == file_sha256(ckpt) and meta["source"]["format_detected"] is True
    assert meta["mapping"]["entry"] == "state_dict" and meta["mapping"]["rules"] == ["strip prefix 'module.'"]
    assert meta["mapping"]["renamed"]["head.3.weight"] == "module.head.3.weight"
    assert meta["normalisation"] == {"mean": [0.3], "std": [0.4], "from": "--mean/--std"}
    assert meta["label"] == "digits" and meta["seed"] == 0 and meta["clean_accuracy"] is None
    assert meta["provenance"]["stage"] == "import" and meta["provenance"]["inputs"]["source"]["sha256"] == file_sha256(ckpt)


def test_safetensors_as_it_is_and_xairobust_layout_carries_its_normalisation(tmp_path):
    torch.manual_seed(1)
    model0 = create_model("cifar_cnn", num_outputs=10, in_channels=3, width=4, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.25])
    randomise_bn(model0.net)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model0.net.state_dict().items()}, bare)
    full = tmp_path / "xairobust_model.safetensors"
    save_file({k: v.contiguous() for k, v in model0.state_dict().items()}, full)
    x = torch.rand(3, 3, 32, 32)
    m1, meta1 = imported(tmp_path, bare, "a", model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4},
                         preset="cifar10")
    assert same_outputs(m1, Normalised(model0.net, *PRESETS["cifar10"]), x)
    assert meta1["source"]["format"] == "safetensors" and meta1["source"]["container"] == "safetensors"
    m2, meta2 = imported(tmp_path, full, "b", model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4})
    assert same_outputs(m2, model0, x)
    assert meta2["normalisation"]["from"] == "checkpoint (normalize.mean, normalize.std)"


# -- RobustBench -----------------------------------------------------------------------------


def test_robustbench_wideresnet_with_mu_sigma_sub_block1_and_module_prefix(tmp_path):
    torch.manual_seed(2)
    net = randomise_bn(create_model("wideresnet", depth=10, widen_factor=1).net)
    mu, sigma = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    # Carmon2019Unlabeled-style: sub_block1 weights saved but never used; mu/sigma buffers.
    state.update({f"module.sub_block1.layer.0.bn1.{p}": torch.ones(16) for p in ("weight", "bias")})
    state["mu"] = torch.tensor(mu).view(1, 3, 1, 1)
    state["sigma"] = torch.tensor(sigma).view(1, 3, 1, 1)
    ckpt = tmp_path / "Rice2020Overfitting.pt"
    torch.save({"state_dict": state}, ckpt)
    model, meta = imported(tmp_path, ckpt, model="wideresnet", dataset="cifar10", format="robustbench")
    assert same_outputs(model, Normalised(net, mu, sigma), torch.rand(2, 3, 32, 32))
    assert meta["model"]["kwargs"]["depth"] == 10 and meta["model"]["kwargs"]["widen_factor"] == 1
    assert meta["inferred_model_kwargs"] == {"depth": 10, "widen_factor": 1, "bias_last": True}
    assert meta["normalisation"]["from"] == "checkpoint (mu, sigma)"
    assert "module.sub_block1.layer.0.bn1.weight" in meta["mapping"]["dropped"]
    # auto finds the same (state_dict alone leaves mu/sigma/sub_block1 unexpected).
    _, auto = imported(tmp_path, ckpt, "auto", model="wideresnet", dataset="cifar10")
    assert auto["source"]["format"] == "robustbench" and auto["weights_sha256"] == meta["weights_sha256"]


def test_robustbench_standard_wrn_takes_raw_pixels_with_preset_identity(tmp_path):
    torch.manual_seed(3)
    net = randomise_bn(create_model("wideresnet", depth=10, widen_factor=2).net)
    ckpt = tmp_path / "Standard.pt"
    torch.save(net.state_dict(), ckpt)  # RobustBench 'Standard': a bare state dict, no normalisation
    with pytest.raises(ConfigError, match="does not carry its input normalisation; give --mean/--std"):
        imported(tmp_path, ckpt, "x", model="wideresnet", dataset="cifar10", format="robustbench")
    model, meta = imported(tmp_path, ckpt, model="wideresnet", dataset="cifar10", format="robustbench", preset="identity")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    assert meta["model"]["kwargs"]["widen_factor"] == 2


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_robustbench_preactresnet18_both_variants_under_last(tmp_path, variant):
    torch.manual_seed(4)
    net = randomise_bn(create_model("preactresnet18_rb", variant=variant).net)
    state = dict(net.state_dict())
    if variant == "v1":
        assert not any(k.startswith("bn.") for k in state)
    ckpt = tmp_path / "Andriushchenko2020Understanding.pt"
    torch.save({"last": state, "best": state}, ckpt)  # RobustBench takes checkpoint['last']
    model, meta = imported(tmp_path, ckpt, model="preactresnet18_rb", dataset="cifar10", format="robustbench",
                           mean=[0.4914, 0.4822, 0.4465], std=[0.2471, 0.2435, 0.2616])
    x = torch.rand(2, 3, 32, 32)
    assert same_outputs(model, Normalised(net, [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]), x)
    assert meta["model"]["kwargs"]["variant"] == variant and meta["mapping"]["entry"] == "last"


def test_robustbench_preactresnet_v2_imports_into_xairobust_preactresnet18(tmp_path):
    """v2 (PreActBlockV2 + bn_before_fc) computes exactly xairobust's preactresnet18: the robustbench
    format renames its keys for that target; v1 is refused for it."""
    torch.manual_seed(5)
    rb = randomise_bn(create_model("preactresnet18_rb", variant="v2").net)
    ckpt = tmp_path / "Rice2020Overfitting.pt"
    state = {f"module.{k}": v for k, v in rb.state_dict().items()}
    state.update(mu=torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1), sigma=torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))
    torch.save({"state_dict": state}, ckpt)
    model, meta = imported(tmp_path, ckpt, model="preactresnet18", dataset="cifar10", format="robustbench")
    assert same_outputs(model, Normalised(rb, [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]), torch.rand(2, 3, 32, 32))
    assert meta["mapping"]["renamed"]["stem.weight"] == "module.conv1.weight"
    assert meta["mapping"]["renamed"]["layer2.0.shortcut.weight"] == "module.layer2.0.shortcut.0.weight"
    assert meta["mapping"]["renamed"]["fc.bias"] == "module.linear.bias"
    v1 = create_model("preactresnet18_rb", variant="v1").net
    torch.save(v1.state_dict(), tmp_path / "Wong2020Fast.pt")
    with pytest.raises(ConfigError, match="import it with --model preactresnet18_rb"):
        imported(tmp_path, tmp_path / "Wong2020Fast.pt", "v1", model="preactresnet18", dataset="cifar10",
                 format="robustbench", preset="cifar10")


def test_wrn28_10_is_robustbench_size():
    with torch.device("meta"):
        net = create_model("wrn28_10").net
    keys = list(net.state_dict())
    assert keys[0] == "conv1.weight" and "block1.layer.0.convShortcut.weight" in keys and keys[-1] == "fc.bias"
    assert "block3.layer.3.bn2.running_var" in keys and "block3.layer.4.bn1.weight" not in keys
    assert sum(p.numel() for p in net.parameters()) == 36_479_194  # RobustBench WRN-28-10, 10 classes


# -- MadryLab --------------------------------------------------------------------------------


def test_madrylab_attacker_model_checkpoint(tmp_path):
    torch.manual_seed(6)
    net = randomise_bn(create_model("cifar_cnn", width=4).net)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(3, 1, 1)
    sd = {"module.normalizer.new_mean": mean, "module.normalizer.new_std": std}
    sd.update({f"module.model.{k}": v for k, v in net.state_dict().items()})
    sd.update({"module.attacker.normalize.new_mean": mean.clone(), "module.attacker.normalize.new_std": std.clone()})
    sd.update({f"module.attacker.model.{k}": v.clone() for k, v in net.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ckpt = tmp_path / "cifar_linf_8.pt"
    torch.save({"model": sd, "optimizer": opt.state_dict(), "schedule": None, "epoch": 150, "amp": None}, ckpt)
    model, meta = imported(tmp_path, ckpt, model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4})
    assert same_outputs(model, Normalised(net, mean.flatten().tolist(), std.flatten().tolist()), torch.rand(2, 3, 32, 32))
    assert meta["source"]["format"] == "madrylab" and meta["mapping"]["entry"] == "model"
    assert meta["normalisation"]["from"] == "checkpoint (module.normalizer.new_mean, module.normalizer.new_std)"
    assert meta["mapping"]["dropped"]["module.attacker.model.fc.weight"] == "the attacker's copy of model.fc.weight"
    with pytest.raises(ConfigError, match="carries its normalisation"):
        imported(tmp_path, ckpt, "y", model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4}, preset="imagenet")


# -- timm and torchvision --------------------------------------------------------------------


def test_timm_hub_files_bin_and_safetensors(tmp_path):
    torch.manual_seed(7)
    model0 = create_model("timm:test_resnet", num_outputs=10)
    randomise_bn(model0.net)
    torch.save(model0.net.state_dict(), tmp_path / "pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in model0.net.state_dict().items()}, tmp_path / "model.safetensors")
    x = torch.rand(2, 3, 32, 32)
    ref = Normalised(model0.net, *PRESETS["imagenet"])
    for i, f in enumerate(("pytorch_model.bin", "model.safetensors")):
        model, meta = imported(tmp_path, tmp_path / f, f"r{i}", model="timm:test_resnet", dataset="cifar10",
                               format="timm", preset="imagenet")
        assert same_outputs(model, ref, x) and meta["source"]["format"] == "timm"
    with pytest.raises(ConfigError, match="needs a timm architecture"):
        imported(tmp_path, tmp_path / "pytorch_model.bin", "z", model="cifar_cnn", dataset="cifar10", format="timm",
                 preset="imagenet")


def test_torchvision_resnet50_into_timm_resnet50_bit_for_bit(tmp_path):
    import torchvision

    torch.manual_seed(8)
    tv = randomise_bn(torchvision.models.resnet50(weights=None, num_classes=10))
    ckpt = tmp_path / "resnet50-0676ba61.pth"
    torch.save(tv.state_dict(), ckpt)
    model, meta = imported(tmp_path, ckpt, model="timm:resnet50", dataset="imagenette", format="torchvision",
                           preset="imagenet")
    assert same_outputs(model, Normalised(tv, *PRESETS["imagenet"]), torch.rand(1, 3, 64, 64))
    assert meta["dataset"]["name"] == "imagenette" and meta["model"]["kwargs"]["num_outputs"] == 10
    with pytest.raises(ConfigError, match="no known mapping"):
        imported(tmp_path, ckpt, "v", model="vgg19", dataset="imagenette", format="torchvision", preset="imagenet")


# -- refusals --------------------------------------------------------------------------------


class Payload:
    """Unpickling this would create ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    net = create_model("digits_cnn", in_channels=1).net
    obj = {"state_dict": net.state_dict(), "extra": Payload(marker)}
    ckpt = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save(obj, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(obj, protocol=2))
    # Sanity: a full unpickle of this file does create the marker (the payload is real) ...
    probe = tmp_path / "probe.pkl"
    probe.write_bytes(pickle.dumps(Payload(tmp_path / "probe_marker")))
    pickle.loads(probe.read_bytes())
    assert (tmp_path / "probe_marker").exists()
    # ... and the import refuses it without running it.
    with pytest.raises(ConfigError) as err:
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    assert not marker.exists()
    assert "refused" in str(err.value) and "weights_only=True" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_timm_training_checkpoint_with_pickled_args_is_refused_naming_the_object(tmp_path):
    net = create_model("digits_cnn", in_channels=1).net
    ckpt = tmp_path / "checkpoint-9.pth.tar"
    torch.save({"epoch": 9, "arch": "digits", "state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1)}, ckpt)
    with pytest.raises(ConfigError, match="needs the Python object 'argparse.Namespace'"):
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])


def test_strict_key_failures_list_the_keys(tmp_path):
    net = create_model("digits_cnn", in_channels=1).net
    state = dict(net.state_dict())
    state.pop("head.3.bias")
    state["extra.weight"] = torch.zeros(1)
    ckpt = tmp_path / "broken.pt"
    torch.save(state, ckpt)
    with pytest.raises(ConfigError) as err:
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4], format="state_dict")
    msg = str(err.value)
    assert "strict key matching" in msg and "missing keys (1): head.3.bias" in msg and "unexpected keys (1): extra.weight" in msg


def test_another_class_count_is_a_shape_mismatch_with_the_fix(tmp_path):
    torch.manual_seed(9)
    net = create_model("digits_cnn", num_outputs=5, in_channels=1).net.eval()
    ckpt = tmp_path / "five.pt"
    torch.save(net.state_dict(), ckpt)
    with pytest.raises(ConfigError, match=r"head.3.weight \(5, 64\) in the checkpoint vs \(10, 64\).*--num-outputs 5"):
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    model, meta = imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4], num_outputs=5)
    assert meta["head"] == {"num_outputs": 5, "dataset_classes": 10, "matches_dataset": False}
    assert same_outputs(model, Normalised(net, [0.3], [0.4]), torch.rand(2, 1, 8, 8))


def test_reimport_is_a_noop_and_another_checkpoint_needs_force(tmp_path):
    net = create_model("digits_cnn", in_channels=1).net
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(net.state_dict(), a)
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, b)
    conf = ImportConfig(checkpoint=str(a), model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    out = import_checkpoint(conf, tmp_path / "run", quiet=True)
    stamp = (out / "run.json").stat().st_mtime_ns
    import_checkpoint(conf, out, quiet=True)
    assert (out / "run.json").stat().st_mtime_ns == stamp
    other = ImportConfig(checkpoint=str(b), model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    with pytest.raises(ConfigError, match="already holds a run"):
        import_checkpoint(other, out, quiet=True)
    import_checkpoint(other, out, quiet=True, force=True)
    assert read_run_meta(out)["source"]["sha256"] == file_sha256(b)


# -- verification, the CLI and the whole pipeline --------------------------------------------


def test_cli_import_with_verify_then_attack_explain_score_report(tmp_path, digits_run):
    """A trained run's weights exported as a plain state dict, imported with --verify, then
    through attack -> explain -> score -> report; its clean accuracy equals the original's."""
    from test_cli import assert_one_line_error, cli

    from xairobust.data.base import get_dataset
    from xairobust.evaluation import evaluate
    from xairobust.report.build import ReportConfig, build_report
    from xairobust.stages.attack import AttackConfig, attack
    from xairobust.stages.explain import ExplainConfig, explain
    from xairobust.stages.score import ScoreConfig, score

    original, meta0 = load_run(digits_run)
    ckpt = tmp_path / "exported.pt"
    torch.save(original.net.state_dict(), ckpt)
    mean, std = meta0["model"]["kwargs"]["mean"], meta0["model"]["kwargs"]["std"]
    run = tmp_path / "imported_run"
    proc = cli("import", str(ckpt), "--model", "digits_cnn", "--dataset", "digits", "--mean", ",".join(map(str, mean)),
               "--std", ",".join(map(str, std)), "--verify", "200", "--label", "Imported", "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((run / "run.json").read_text())
    test = get_dataset("digits", "test")
    expected = evaluate(original, test.subset(torch.arange(200)))["accuracy"]
    assert meta["clean_accuracy"] == expected and meta["test"]["n"] == 200
    x = test.inputs(slice(0, 16))
    assert same_outputs(load_run(run)[0], original, x)

    attack(run, AttackConfig(eps=0.1, steps=3, n=32, autoattack=False), quiet=True)
    explain(run, ExplainConfig(explainer="ig", n=8, params={"n_steps": 8}), quiet=True)
    score(run, ScoreConfig(explainer="ig", metrics=["sparseness", "complexity"]), quiet=True)
    files = build_report([run], tmp_path / "report", ReportConfig(baseline="Imported", figures=False), quiet=True)
    table = (tmp_path / "report" / "table.csv").read_text()
    assert "Imported" in table and files

    bad = cli("import", str(ckpt), "--model", "digits_cnn", "--dataset", "digits", "--out", str(tmp_path / "r2"))
    assert_one_line_error(bad, "does not carry its input normalisation")


def test_key_selects_a_nested_entry_and_a_scalar_normalisation_covers_every_channel(tmp_path):
    torch.manual_seed(10)
    net = randomise_bn(create_model("cifar_cnn", width=4).net)
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": net.state_dict(), "state_dict_ema": ema}, ckpt)
    ref = create_model("cifar_cnn", width=4).net
    ref.load_state_dict(ema)
    model, meta = imported(tmp_path, ckpt, model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4},
                           key="state_dict_ema", mean=[0.5], std=[0.5])
    assert same_outputs(model, Normalised(ref, [0.5] * 3, [0.5] * 3), torch.rand(2, 3, 32, 32))
    assert meta["mapping"]["entry"] == "state_dict_ema" and meta["normalisation"]["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(ConfigError, match="has no entry 'nope'"):
        imported(tmp_path, ckpt, "x", model="cifar_cnn", dataset="cifar10", model_kwargs={"width": 4}, key="nope",
                 preset="half")


def test_cli_model_kwargs_parse_and_config_checks():
    from xairobust.commands.import_ import _mapping

    assert _mapping("{depth: 34, widen_factor: 10}") == {"depth": 34, "widen_factor": 10}
    with pytest.raises(ConfigError, match="must be a mapping"):
        _mapping("34")
    with pytest.raises(ConfigError, match="unknown --preset 'imagenett'. Did you mean 'imagenet'"):
        ImportConfig(checkpoint="x.pt", model="digits_cnn", dataset="digits", preset="imagenett")
    with pytest.raises(ConfigError, match="unknown --format 'robustbenhc'"):
        ImportConfig(checkpoint="x.pt", model="digits_cnn", dataset="digits", format="robustbenhc")
    with pytest.raises(ConfigError, match="--preset or --mean/--std, not both"):
        ImportConfig(checkpoint="x.pt", model="digits_cnn", dataset="digits", preset="half", mean=[0.5], std=[0.5])


def test_verify_needs_the_datasets_class_count(tmp_path):
    ckpt = tmp_path / "five.pt"
    torch.save(create_model("digits_cnn", num_outputs=5, in_channels=1).net.state_dict(), ckpt)
    with pytest.raises(ConfigError, match="--verify needs the model's 5 outputs"):
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4], num_outputs=5, verify=10)


def test_half_precision_checkpoint_is_recorded_and_loads_as_float32(tmp_path):
    torch.manual_seed(11)
    net = create_model("digits_cnn", in_channels=1).net.eval()
    ckpt = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, ckpt)
    model, meta = imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    ref = create_model("digits_cnn", in_channels=1).net
    ref.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    assert meta["source"]["dtypes"] == ["float16"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert same_outputs(model, Normalised(ref, [0.3], [0.4]), torch.rand(3, 1, 8, 8))


@pytest.mark.parametrize("content", [b"\x00" * 64, b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_unreadable_files_are_one_line_errors(tmp_path, content):
    ckpt = tmp_path / "junk.pt"
    ckpt.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        imported(tmp_path, ckpt, model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])
    assert "\n" not in str(err.value) and "junk.pt" in str(err.value)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match="not a valid safetensors file"):
        imported(tmp_path, bad, "b", model="digits_cnn", dataset="digits", mean=[0.3], std=[0.4])


def test_several_checkpoints_in_one_call_each_into_its_own_run(tmp_path):
    from click.testing import CliRunner

    from xairobust.cli import main

    for i in range(2):
        torch.manual_seed(i)
        torch.save(create_model("digits_cnn", in_channels=1).net.state_dict(), tmp_path / f"m{i}.pt")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    files = [str(tmp_path / n) for n in ("m0.pt", "bad.pt", "m1.pt")]
    result = CliRunner().invoke(main, ["import", *files, "--model", "digits_cnn", "--dataset", "digits",
                                       "--preset", "half", "--out", str(tmp_path / "runs"), "--quiet"])
    assert isinstance(result.exception, ConfigError) and "1 of 3 checkpoints failed" in str(result.exception)
    for i in range(2):
        meta = read_run_meta(tmp_path / "runs" / f"m{i}")
        assert meta["label"] == f"m{i}" and meta["normalisation"]["mean"] == [0.5]
