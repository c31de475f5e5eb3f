"""Feature extractors for FID and the feature distance of inversions (``FEATURE_EXTRACTORS``).

* ``inception``: the Inception-v3 the field's FID uses (the TF-ported "pt_inception-2015-12-05"
  weights, as in torch-fidelity and torchmetrics), through torchmetrics' ``NoTrainInceptionV3``.
  Layers: ``2048`` (pool3, FID's standard; default for FID), ``768``, ``192`` (the middle block
  the paper's feature distance uses; default for the distance), ``64``. The weights are never
  downloaded: they are read from ``--inception-weights FILE`` or the library's usual cache path
  (``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``), with
  ``torch.load(weights_only=True)`` (or safetensors), never unpickled.
* ``run:<RUN>``: a trained run's representation (input of its final linear layer, or the
  spatial mean of module ``--layer``'s output), e.g. a standard classifier of the same dataset:
  no download, but its numbers are only comparable with numbers from the same run.

Every output records the extractor (name, layer, weights sha256), because FIDs from different
extractors are not comparable.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xairobust.errors import ConfigError
from xairobust.registry import FEATURE_EXTRACTORS
from xairobust.runs import file_sha256, load_run, load_tensors

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
INCEPTION_LAYERS = ("64", "192", "768", "2048")


class Extractor(nn.Module):
    """Images in the model input space (N, C, H, W) -> features (N, D); ``record`` describes it."""

    name: str = ""
    num_features: int = 0

    def record(self) -> dict[str, Any]:
        raise NotImplementedError

    def weights_file(self) -> Path | None:
        """The file its features depend on (an input of the metrics stage's provenance)."""
        return None


def default_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"fid: {path} is not a readable state dict ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"fid: {path} does not hold a state dict")
    return state


@FEATURE_EXTRACTORS.register("inception", download=True)
class InceptionExtractor(Extractor):
    def __init__(self, layer: str | None = None, inception_weights: str | None = None, **_: Any) -> None:
        super().__init__()
        layer = str(layer or "2048")
        if layer not in INCEPTION_LAYERS:
            raise ConfigError(f"fid: inception layer must be one of {', '.join(INCEPTION_LAYERS)}, got '{layer}'")
        path = Path(inception_weights).expanduser() if inception_weights else default_inception_path()
        if not path.is_file():
            raise ConfigError(
                f"fid: Inception-v3 weights not found at {path}; download {INCEPTION_URL} to that path"
                f" (or pass --inception-weights FILE), or use --extractor run:<RUN> which needs no download"
            )
        state = _read_state(path)
        import torch_fidelity.feature_extractor_inceptionv3 as tfi
        from torchmetrics.image.fid import NoTrainInceptionV3

        # torch-fidelity would torch.load(weights_only=False) a given path or download the file:
        # hand it the state dict read above instead.
        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched(tfi, "load_state_dict_from_url", lambda *a, **k: state))
            try:
                self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[layer])
            except RuntimeError as exc:
                raise ConfigError(f"fid: {path} does not fit Inception-v3 ({str(exc).splitlines()[0][:160]})") from None
        self.layer = layer
        self.num_features = int(layer)
        self.path = path
        self.name = "inception"

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise ConfigError(f"fid: the inception extractor needs 1- or 3-channel images, got {x.shape[1]} channels")
        # [0, 1] -> uint8 as the reference implementation expects (rounded, not truncated)
        img = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(img).double()

    def weights_file(self) -> Path:
        return self.path

    def record(self) -> dict[str, Any]:
        return {"extractor": "inception", "layer": self.layer, "weights": str(self.path),
                "weights_sha256": file_sha256(self.path)}


@contextlib.contextmanager
def _patched(obj: Any, attr: str, value: Any):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


@FEATURE_EXTRACTORS.register("run", download=False)
class RunExtractor(Extractor):
    def __init__(self, run: str | None = None, layer: str | None = None, device: Any = "cpu", **_: Any) -> None:
        super().__init__()
        from xairobust.visualize._core import Representation

        if not run:
            raise ConfigError("fid: --extractor run:<RUN> needs a run directory after 'run:'")
        self.model, meta = load_run(run, device)
        self.model.requires_grad_(False)
        shape = tuple(meta["dataset"]["info"]["input_shape"])
        self.input_shape = shape
        self.rep = Representation(self.model, torch.zeros((1, *shape), device=device), layer)
        with torch.no_grad():
            self.num_features = int(self.rep.units(torch.zeros((1, *shape), device=device)).shape[1])
        self.run_dir = Path(run)
        self.meta = meta
        self.name = f"run:{run}"

    def train(self, mode: bool = True) -> RunExtractor:  # never leaves eval mode
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(
                f"fid: extractor {self.name} takes inputs of shape {list(self.input_shape)}, got {list(x.shape[1:])};"
                " use a run trained on the same dataset"
            )
        with torch.no_grad():
            return self.rep.units(x).double()

    def weights_file(self) -> Path:
        return self.run_dir / "model.safetensors"

    def record(self) -> dict[str, Any]:
        return {"extractor": self.name, "layer": self.rep.describe, "run_label": self.meta.get("label"),
                "run_method": (self.meta.get("method") or {}).get("name") if isinstance(self.meta.get("method"), dict)
                else self.meta.get("method"),
                "weights_sha256": self.meta.get("weights_sha256")}


def build_extractor(spec: str, *, layer: str | None = None, inception_weights: str | None = None,
                    device: Any = "cpu") -> Extractor:
    """``inception`` or ``run:<RUN>`` (any other registered name) -> an extractor in eval mode."""
    name, _, arg = spec.partition(":")
    cls = FEATURE_EXTRACTORS.get(name)
    ext = cls(run=arg or None, layer=layer, inception_weights=inception_weights, device=device)
    return ext.to(device).eval()


def extractor_slug(spec: str) -> str:
    """File-name part for an extractor: ``inception``, ``run-<run dir name>``."""
    name, _, arg = spec.partition(":")
    return name if not arg else f"{name}-{Path(arg).name or 'run'}"
