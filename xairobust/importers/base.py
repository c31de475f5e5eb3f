"""Reading checkpoint files safely, and the pieces every format shares.

Nothing here unpickles: a ``.safetensors`` file is read with safetensors, anything else with
``torch.load(weights_only=True)``, whose restricted unpickler builds only tensors, containers
and plain numbers and refuses every other global *before* calling it. A checkpoint that needs
more (a pickled ``argparse.Namespace``, a model object, numpy arrays, a payload) is refused with
one line that names what it asked for.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xairobust.errors import ConfigError, RunError
from xairobust.registry import Registry, import_submodules
from xairobust.runs import file_sha256, load_tensors

FORMATS: Registry = Registry("checkpoint format", lambda: import_submodules("xairobust.importers"))

# Named input normalisations for checkpoints that do not carry theirs (mean, std per channel).
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision / timm ImageNet models, MadryLab and RobustBench ImageNet entries.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # The CIFAR-10 statistics RobustBench's normalising entries use (Wong2020Fast,
    # Rice2020Overfitting, ...: mu/sigma buffers of their classes, absent from the checkpoints).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    # Identity: the network takes [0, 1] pixels as they are (RobustBench's 'Standard' WRN-28-10,
    # Andriushchenko2020Understanding's PreActResNet-18 and most RobustBench CIFAR-10 WideResNets).
    "identity": ((0.0,), (1.0,)),  # (one value: every channel)
    # x -> 2x - 1 (Hendrycks2019Using, the AugMix entries).
    "half": ((0.5,), (0.5,)),
}

SAFETENSORS_SUFFIXES = (".safetensors",)
MAX_LISTED = 12  # keys named in one error line; the rest are counted


@dataclass
class Checkpoint:
    """A checkpoint file read without unpickling: ``obj`` is tensors in (nested) dicts."""

    path: Path
    sha256: str
    size_bytes: int
    container: str  # "safetensors" | "torch"
    obj: Any


@dataclass
class Converted:
    """A format's result: the architecture's state dict plus how it was obtained."""

    state: dict[str, Tensor]
    mean: list[float] | None = None  # normalisation carried by the checkpoint, if any
    std: list[float] | None = None
    normalisation_from: str | None = None  # the checkpoint keys it was read from
    clamp: tuple[float, float] | None = None  # the source model clamps its input first (MadryLab: [0, 1])
    entry: str | None = None  # the nested entry used ('state_dict', 'model', ...)
    rules: list[str] = field(default_factory=list)  # renaming rules applied, in order
    renamed: dict[str, str] = field(default_factory=dict)  # new key -> checkpoint key
    dropped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it was dropped

    def mapping(self) -> dict[str, Any]:
        return {"entry": self.entry, "rules": self.rules, "renamed": self.renamed, "dropped": self.dropped}


class Format:
    """Base class of a registered checkpoint format (``@FORMATS.register(name)``)."""

    name: str = ""
    description: str = ""

    def detect(self, ckpt: Checkpoint) -> bool:
        """Whether ``auto`` should try this format on ``ckpt``."""
        return False

    def check_model(self, model: str) -> None:
        """Refuse architectures the format cannot describe (ConfigError); default: any."""

    def convert(self, ckpt: Checkpoint, entry: str | None) -> Converted:
        raise NotImplementedError

    def adapt(self, conv: Converted, model: str) -> None:
        """Rename the zoo's layout into another registered architecture's (default: none)."""


# -- reading -----------------------------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") < (100 << 20)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``path`` with safetensors or ``torch.load(weights_only=True)``; never a full unpickle."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"import: checkpoint not found: {path}")
    sha = file_sha256(path)
    size = path.stat().st_size
    if path.suffix in SAFETENSORS_SUFFIXES or _is_safetensors(path):
        try:
            return Checkpoint(path, sha, size, "safetensors", load_tensors(path))
        except RunError as exc:
            raise ConfigError(f"import: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"import: refused {path}: {_why(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the weights-only reader means "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"import: {path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first})") from None
    return Checkpoint(path, sha, size, "torch", obj)


def _why(exc: BaseException) -> str:
    """One line from torch's weights-only refusal: which global the file asked for."""
    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+)", text)
    what = f"it needs the Python object '{m.group(1)}'" if m else "it holds Python objects beyond tensors and plain containers"
    if not m:
        m2 = re.search(r"Unsupported operand (\d+)", text)
        if m2:
            what = f"it uses pickle operation {m2.group(1)}, which the weights-only reader does not allow"
    return (
        f"{what}, and checkpoints are read with torch.load(weights_only=True) only (a full unpickle can run"
        " arbitrary code). If you trust the file, re-save just its tensors: torch.save(<state dict>, 'clean.pt')"
    )


# -- shared conversion helpers ---------------------------------------------------------------


def is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        shown = ", ".join(repr(k) for k in keys[:8])
        return f"a dict with keys {shown}{', ...' if len(keys) > 8 else ''}"
    return f"a {type(obj).__name__}"


def follow(obj: Any, entry: str, where: Path) -> Any:
    """The nested entry ``entry`` ('state_dict', 'last.model', ...) of ``obj``."""
    cur = obj
    for part in entry.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ConfigError(f"import: {where} has no entry '{entry}' (it is {describe(obj)})")
        cur = cur[part]
    return cur


def unwrap(ckpt: Checkpoint, entry: str | None, candidates: tuple[str, ...]) -> tuple[dict[str, Tensor], str | None]:
    """(the tensors dict, the entry used): ``entry`` if given, else the top level when it is a
    state dict, else the first of ``candidates`` present."""
    obj = ckpt.obj
    if entry:
        found = follow(obj, entry, ckpt.path)
        used: str | None = entry
    elif is_tensor_dict(obj):
        found, used = obj, None
    else:
        used = next((c for c in candidates if isinstance(obj, Mapping) and c in obj), None)
        if used is None:
            raise ConfigError(
                f"import: {ckpt.path} is {describe(obj)}; none of {', '.join(candidates)} holds the weights:"
                " name the entry with --key"
            )
        found = obj[used]
    if not isinstance(found, Mapping):
        raise ConfigError(f"import: entry '{used}' of {ckpt.path} is {describe(found)}, not a state dict")
    state = {}
    skipped = []
    for k, v in found.items():
        if isinstance(k, str) and isinstance(v, Tensor):
            state[k] = v
        else:
            skipped.append(str(k))
    if not state:
        raise ConfigError(f"import: entry '{used or '(top level)'}' of {ckpt.path} holds no tensors ({describe(found)})")
    if skipped:
        raise ConfigError(
            f"import: entry '{used or '(top level)'}' of {ckpt.path} mixes tensors with other values"
            f" ({', '.join(skipped[:MAX_LISTED])}); name the state dict with --key"
        )
    return state, used


def strip_prefix(conv: Converted, prefix: str, ignore: tuple[str, ...] = ()) -> bool:
    """Remove ``prefix`` from every key when all keys (except ``ignore``) carry it; True if done."""
    keys = [k for k in conv.state if k not in ignore]
    if not keys or not all(k.startswith(prefix) for k in keys):
        return False
    new: dict[str, Tensor] = {}
    for k, v in conv.state.items():
        nk = k[len(prefix):] if k.startswith(prefix) else k
        original = conv.renamed.pop(k, k)
        if nk != original:
            conv.renamed[nk] = original
        new[nk] = v
    conv.state = new
    conv.rules.append(f"strip prefix '{prefix}'")
    return True


def rename(conv: Converted, pattern: str, repl: str, rule: str) -> None:
    """Apply the regex ``pattern`` -> ``repl`` to every key (recorded as ``rule``)."""
    new: dict[str, Tensor] = {}
    changed = False
    for k, v in conv.state.items():
        nk = re.sub(pattern, repl, k)
        if nk != k:
            changed = True
            conv.renamed[nk] = conv.renamed.pop(k, k)
        new[nk] = v
    if changed:
        conv.state = new
        conv.rules.append(rule)


def drop(conv: Converted, key: str, reason: str) -> Tensor:
    value = conv.state.pop(key)
    conv.dropped[conv.renamed.pop(key, key)] = reason
    return value


def take_normalisation(conv: Converted, mean_key: str, std_key: str) -> bool:
    """Move a (mean, std) pair of buffers out of the state into the normalisation; True if found."""
    if mean_key not in conv.state or std_key not in conv.state:
        return False
    source = f"{conv.renamed.get(mean_key, mean_key)}, {conv.renamed.get(std_key, std_key)}"
    mean = drop(conv, mean_key, "input normalisation (recorded as the run's mean)")
    std = drop(conv, std_key, "input normalisation (recorded as the run's std)")
    conv.mean = [float(v) for v in mean.double().flatten()]
    conv.std = [float(v) for v in std.double().flatten()]
    conv.normalisation_from = source
    return True


def xairobust_layout(conv: Converted) -> None:
    """A state dict saved from an xairobust model (``normalize.mean/std`` + ``net.*``)."""
    if "normalize.mean" in conv.state and all(k.startswith(("net.", "normalize.")) for k in conv.state):
        take_normalisation(conv, "normalize.mean", "normalize.std")
        strip_prefix(conv, "net.")


@dataclass
class KeyReport:
    """How a converted state dict differs from the architecture's."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, checkpoint shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def line(self) -> str:
        def listed(keys: list[str]) -> str:
            more = f", ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
            return ", ".join(keys[:MAX_LISTED]) + more

        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {listed(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {listed(self.unexpected)}")
        if self.shapes:
            shown = [f"{k} {tuple(a)} in the checkpoint vs {tuple(b)} in the model" for k, a, b in self.shapes]
            parts.append(f"shape mismatches ({len(shown)}): {listed(shown)}")
        return "; ".join(parts)


def compare_keys(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> KeyReport:
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [(k, tuple(state[k].shape), tuple(target[k].shape)) for k in target
              if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    return KeyReport(missing, unexpected, shapes)


def resolve_preset(name: str) -> tuple[list[float], list[float]]:
    if name not in PRESETS:
        from xairobust.registry import did_you_mean

        raise ConfigError(f"import: unknown --preset '{name}'.{did_you_mean(name, list(PRESETS))} Known: {', '.join(PRESETS)}")
    mean, std = PRESETS[name]
    return list(mean), list(std)
