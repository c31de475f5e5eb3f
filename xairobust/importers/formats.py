"""The registered checkpoint formats: how each zoo lays out its files.

Every format turns a :class:`~xairobust.importers.base.Checkpoint` into the architecture's state
dict, recording each renaming rule, every key it drops and why, and the input normalisation when
the file carries one. Key matching against the architecture is strict afterwards (in the import
stage), so a rule that strips too much or too little shows up as missing / unexpected keys.
"""

from __future__ import annotations

from xairobust.errors import ConfigError
from xairobust.importers.base import (
    FORMATS,
    Checkpoint,
    Converted,
    Format,
    drop,
    rename,
    strip_prefix,
    take_normalisation,
    unwrap,
    xairobust_layout,
)


def _is_timm_model(model: str) -> bool:
    from xairobust.registry import MODELS

    if model.startswith("timm:"):
        return True
    return "timm" in str(MODELS.meta(model).get("source", "")) if model in MODELS else False


@FORMATS.register("state_dict", description="a plain PyTorch state dict (DataParallel 'module.' prefix allowed)")
class StateDictFormat(Format):
    """``torch.save(model.state_dict())``, possibly under 'state_dict' / 'model_state_dict' /
    'model' / 'net', possibly saved from ``nn.DataParallel`` (every key starts with 'module.').
    A state dict saved from an xairobust model (``net.*`` + ``normalize.mean/std``) carries its
    normalisation."""

    name = "state_dict"
    candidates = ("state_dict", "model_state_dict", "model", "net")

    def detect(self, ckpt: Checkpoint) -> bool:
        return ckpt.container == "torch"

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        state, used = unwrap(ckpt, entry, self.candidates)
        conv = Converted(state=dict(state), entry=used)
        strip_prefix(conv, "module.")
        xairobust_layout(conv)
        return conv


@FORMATS.register("safetensors", description="a .safetensors file, keys as the architecture names them")
class SafetensorsFormat(Format):
    """A safetensors file (timm / Hugging Face hub ``model.safetensors``, an xairobust run's
    ``model.safetensors``, ...): read without pickle; keys as they are (a DataParallel
    'module.' prefix and xairobust's own layout are recognised)."""

    name = "safetensors"

    def detect(self, ckpt: Checkpoint) -> bool:
        return ckpt.container == "safetensors"

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        if ckpt.container != "safetensors":
            raise ConfigError(f"import: --format safetensors, but {ckpt.path} is not a safetensors file")
        if entry:
            raise ConfigError("import: --key does not apply to a safetensors file (it has no nesting)")
        conv = Converted(state=dict(ckpt.obj))
        strip_prefix(conv, "module.")
        xairobust_layout(conv)
        return conv


@FORMATS.register("robustbench", description="RobustBench model-zoo checkpoints (CIFAR-10 / ImageNet)")
class RobustBenchFormat(Format):
    """RobustBench's ``.pt`` files, read as ``robustbench.utils.load_model`` reads them: the
    weights at the top level or under 'state_dict' (Kireev2021Effectiveness and
    Andriushchenko2020Understanding: under 'last'), then a leading 'module.' and a leading
    'model.' removed. The ``mu``/``sigma`` buffers of normalising entries (and ImageNet's
    ``normalize.mean``/``normalize.std``) become the run's normalisation when the file has them;
    ``sub_block1.*`` (a block RobustBench's WideResNet builds but never calls) is dropped."""

    name = "robustbench"
    candidates = ("state_dict", "last", "model")

    def detect(self, ckpt: Checkpoint) -> bool:
        return ckpt.container == "torch"

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        state, used = unwrap(ckpt, entry, self.candidates)
        conv = Converted(state=dict(state), entry=used)
        norm_keys = ("mu", "sigma", "normalize.mean", "normalize.std", "module.mu", "module.sigma")
        strip_prefix(conv, "module.", ignore=norm_keys)
        for prefix in ("model.", "module."):
            strip_prefix(conv, prefix, ignore=norm_keys + ("mu", "sigma"))
        if not take_normalisation(conv, "mu", "sigma"):
            take_normalisation(conv, "normalize.mean", "normalize.std")
        for key in [k for k in conv.state if k.startswith("sub_block1.")]:
            drop(conv, key, "RobustBench's WideResNet builds sub_block1 but its forward never uses it")
        return conv

    def adapt(self, conv: Converted, model: str) -> None:
        """RobustBench's PreActResNet-18 with ``PreActBlockV2`` and ``bn_before_fc`` (Rice2020Overfitting
        L2, Kireev2021Effectiveness) computes exactly xairobust's ``preactresnet18``: rename its keys
        (conv1 -> stem, shortcut.0 -> shortcut, linear -> fc) when that is the target. The v1 block
        (no final ``bn``) computes another function and is refused for it."""
        if model != "preactresnet18" or "linear.weight" not in conv.state:
            return
        if "bn.weight" not in conv.state:
            raise ConfigError(
                "import: this RobustBench PreActResNet-18 has no final BatchNorm (PreActBlock, v1): it computes another"
                " function than xairobust's preactresnet18; import it with --model preactresnet18_rb"
            )
        rename(conv, r"^conv1\.", "stem.", "RobustBench PreActResNet 'conv1.' -> preactresnet18 'stem.'")
        rename(conv, r"\.shortcut\.0\.", ".shortcut.", "'shortcut.0.' -> 'shortcut.'")
        rename(conv, r"^linear\.", "fc.", "'linear.' -> 'fc.'")


@FORMATS.register("madrylab", description="MadryLab `robustness` checkpoints (module.model.* + normalizer)")
class MadryLabFormat(Format):
    """``robustness`` library checkpoints (``robustness.train`` saves ``{'model': ...,
    'optimizer': ..., 'schedule': ..., 'epoch': ...}``; older ones use 'state_dict'). The model
    is an ``AttackerModel`` in ``DataParallel``: ``module.normalizer.new_mean/new_std`` (the input
    normalisation), ``module.model.*`` (the classifier) and ``module.attacker.model.*`` /
    ``module.attacker.normalize.*`` (the same weights again, held by the attacker). The classifier
    is imported; the attacker's copies are checked to be identical and dropped."""

    name = "madrylab"
    candidates = ("model", "state_dict")

    def detect(self, ckpt: Checkpoint) -> bool:
        try:
            state, _ = unwrap(ckpt, None, self.candidates)
        except ConfigError:
            return False
        return any(k.endswith("normalizer.new_mean") for k in state)

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        state, used = unwrap(ckpt, entry, self.candidates)
        conv = Converted(state=dict(state), entry=used)
        strip_prefix(conv, "module.")
        if not take_normalisation(conv, "normalizer.new_mean", "normalizer.new_std"):
            raise ConfigError(
                f"import: {ckpt.path} has no normalizer.new_mean / normalizer.new_std, so it is not a MadryLab"
                " `robustness` checkpoint; try --format state_dict"
            )
        model_keys = {k[len("model."):]: k for k in conv.state if k.startswith("model.")}
        for key in list(conv.state):
            if key.startswith("attacker."):
                rest = key[len("attacker."):]
                value = conv.state[key]
                if rest.startswith("model."):
                    twin = conv.state.get(rest)
                    same = twin is not None and twin.shape == value.shape and bool((twin == value).all())
                    why = "the attacker's copy of model." + rest[len("model."):]
                    if not same:
                        why += " (differs from the model's; the model's is used)"
                elif rest in ("normalize.new_mean", "normalize.new_std"):
                    why = "the attacker's copy of the normaliser"
                    mine = conv.mean if rest.endswith("mean") else conv.std
                    if [float(v) for v in value.double().flatten()] != mine:
                        why += " (differs from normalizer.*; normalizer.* is used)"
                else:
                    why = "attacker state"
                drop(conv, key, why)
        if not model_keys:
            raise ConfigError(f"import: {ckpt.path} has no module.model.* weights (a MadryLab checkpoint keeps the classifier there)")
        strip_prefix(conv, "model.")
        # robustness.tools.helpers.InputNormalize: x = clamp(x, 0, 1), then (x - mean) / std.
        conv.clamp = (0.0, 1.0)
        return conv

    # robustness.cifar_models.ResNet18 / ResNet50 (CIFAR stem) compute what timm's ResNets with
    # the CIFAR stem compute (resnet18_cifar, resnet50_cifar); only the names differ.
    CIFAR_RESNETS = ("resnet18_cifar", "resnet50_cifar")

    def adapt(self, conv: Converted, model: str) -> None:
        if model not in self.CIFAR_RESNETS or "linear.weight" not in conv.state:
            return
        rename(conv, r"\.shortcut\.0\.", ".downsample.0.", "MadryLab CIFAR ResNet 'shortcut.0.' -> timm 'downsample.0.'")
        rename(conv, r"\.shortcut\.1\.", ".downsample.1.", "'shortcut.1.' -> 'downsample.1.'")
        rename(conv, r"^linear\.", "fc.", "'linear.' -> 'fc.'")


@FORMATS.register("timm", description="timm weight files (pytorch_model.bin / .pth / model.safetensors)")
class TimmFormat(Format):
    """Weights of a timm architecture under timm's key names: a hub ``pytorch_model.bin`` or
    ``model.safetensors``, or a state dict ('state_dict' of a timm training checkpoint -- whose
    pickled ``args`` make the whole file refused; re-save its 'state_dict'). Needs a timm model
    (``timm:<arch>``, ``resnet18_cifar``, ``vgg19``, ``vgg19_bn``)."""

    name = "timm"
    candidates = ("state_dict", "model")

    def check_model(self, model: str) -> None:
        if not _is_timm_model(model):
            raise ConfigError(f"import: --format timm needs a timm architecture (timm:<name>, vgg19, ...), not '{model}'")

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        if ckpt.container == "safetensors":
            conv = Converted(state=dict(ckpt.obj))
        else:
            state, used = unwrap(ckpt, entry, self.candidates)
            conv = Converted(state=dict(state), entry=used)
        strip_prefix(conv, "module.")
        return conv


@FORMATS.register("torchvision", description="torchvision weight files, into timm ResNets (same key names)")
class TorchvisionFormat(Format):
    """A torchvision ``torch.save(model.state_dict())`` file (e.g. ``resnet50-0676ba61.pth``).
    timm's ResNet family (``timm:resnet18/34/50/101/152``, ``timm:wide_resnet50_2``,
    ``timm:resnext50_32x4d``, ...) has torchvision's parameter names and computes the same
    function, so the keys map one to one (checked bit for bit for ResNet-50 in the tests)."""

    name = "torchvision"
    TIMM_SAME_LAYOUT = ("resnet", "wide_resnet", "resnext")

    def check_model(self, model: str) -> None:
        arch = model[len("timm:"):] if model.startswith("timm:") else ""
        if not arch.startswith(self.TIMM_SAME_LAYOUT):
            raise ConfigError(
                f"import: --format torchvision maps torchvision's ResNet layout onto timm's ResNets"
                f" (timm:resnet50, timm:wide_resnet50_2, ...); '{model}' has no known mapping"
            )

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        if ckpt.container == "safetensors":
            conv = Converted(state=dict(ckpt.obj))
        else:
            state, used = unwrap(ckpt, entry, ("state_dict", "model"))
            conv = Converted(state=dict(state), entry=used)
        strip_prefix(conv, "module.")
        conv.rules.append("torchvision ResNet names = timm ResNet names (one to one)")
        return conv


# `auto` tries these in order and takes the first whose result fits the architecture exactly.
AUTO_ORDER = ("safetensors", "madrylab", "state_dict", "robustbench")
