"""The blur control (issue 18 item 3): a Gaussian-blurred copy of another explainer's maps.

Removal-based faithfulness (ROAR, ROAD, pixel flipping) is biased toward spatially smooth maps
(Song et al., arXiv 2304.13836), and Sparseness/Complexity reward smoothness too; robust models
produce smoother maps. ``blur`` explains with ``base`` (default IG, with ``base_params``) and
blurs each channel of the result with a Gaussian of ``sigma`` pixels (``scipy.ndimage.
gaussian_filter`` semantics: ``mode='reflect'``, ``truncate=4.0``; tests/test_blurred.py checks
the equality). Scoring ``blur`` on the Standard model shows whether blurring alone reproduces a
robust model's advantage. Being a registered explainer, every stage takes it; the re-explanations
of the sensitivity metrics are blurred too (the control is "this explainer, blurred").

Smoothness
----------
``roughness(a)`` = total variation per pixel of |a| in units of its mean: with m = |a|,
(sum |m[i+1, j] - m[i, j]| + sum |m[i, j+1] - m[i, j]|, over channels) / (C * H * W) / mean(m).
It is scale-free (maps of models with different gradient scales compare), 0 for a constant map,
~1.33 for i.i.d. uniform noise; lower = smoother. The smoothness of a set of maps is the mean of
the per-sample roughness (all-zero maps left out). |a| is used because it is the heat map a
reader sees and what Sparseness/Complexity score.

sigma
-----
``sigma`` blurs with that many pixels (default 1; 0 = the base maps unchanged). Given ``match``
(a run directory: the most robust model's run; in a zoo also a method label, which the batch
planner resolves to the run of that label with the same dataset, model and seed -- docs/batch.md)
sigma is instead chosen automatically -- the
setting a study uses: the smallest sigma at which the roughness of this run's blurred base maps
equals that of the match run's base maps (a grid of 0.25 px steps up to half the image side, then
bisection to 1e-4 px in the first bracket that crosses; 0 when the base maps are already as
smooth). ``match`` and a non-default ``sigma`` together are refused. Auto reads two files, this
run's and the match run's ``attributions/<base>.safetensors`` (made first by ``xairobust explain
--explainer <base>`` with the same ``base_params``); they are inputs of the explain stage's
identity. The attributions JSON stores the *effective* parameters (the resolved ``sigma``, no
``match``), so ``score`` re-explains with exactly that blur, and under ``details`` the match run,
the roughness target, before and after. Stochastic bases are refused: the control is meant for
deterministic maps, and the stages read ``stochastic`` from the explainer class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xairobust import config as cfg
from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.explain.base import Explainer
from xairobust.registry import EXPLAINERS

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def _reflect_index(n: int, r: int, device: torch.device) -> Tensor:
    """Indices of scipy's 'reflect' extension (d c b a | a b c d | d c b a) of n samples by r."""
    i = torch.arange(-r, n + r, device=device)
    j = torch.remainder(i, 2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = int(TRUNCATE * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * x * x / (sigma * sigma))
    return k / k.sum()


def gaussian_blur(a: Tensor, sigma: float) -> Tensor:
    """Per-channel Gaussian blur of (B, C, H, W) maps, equal to scipy.ndimage.gaussian_filter with
    sigma (0, 0, sigma, sigma), mode 'reflect', truncate 4 (float64 inside, dtype kept)."""
    if sigma == 0:
        return a.clone()
    b, c, h, w = a.shape
    k = torch.as_tensor(gaussian_kernel(sigma), device=a.device)
    r = (len(k) - 1) // 2
    t = a.double().reshape(b * c, h, w)
    t = t[:, _reflect_index(h, r, a.device)]  # (bc, h + 2r, w)
    t = nn.functional.conv1d(t.transpose(1, 2).reshape(-1, 1, h + 2 * r), k.view(1, 1, -1)).reshape(b * c, w, h).transpose(1, 2)
    t = t[:, :, _reflect_index(w, r, a.device)]
    t = nn.functional.conv1d(t.reshape(-1, 1, w + 2 * r), k.view(1, 1, -1)).reshape(b * c, h, w)
    return t.reshape(b, c, h, w).to(a.dtype)


def roughness(a: Tensor) -> Tensor:
    """Per-sample total variation per pixel of |a| over mean |a| (module doc); NaN for all-zero maps."""
    m = a.double().abs()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    tv = (m[..., 1:, :] - m[..., :-1, :]).abs().flatten(1).sum(1) + (m[..., :, 1:] - m[..., :, :-1]).abs().flatten(1).sum(1)
    pixels = m[0].numel()
    mean = m.flatten(1).mean(1)
    return torch.where(mean > 0, tv / pixels / mean, torch.full_like(mean, float("nan")))


def set_roughness(a: Tensor) -> float:
    r = roughness(a)
    return float(r[torch.isfinite(r)].mean()) if torch.isfinite(r).any() else float("nan")


def choose_sigma(maps: Tensor, target: float, step: float = 0.25, tol: float = 1e-4) -> float:
    """Smallest sigma with set_roughness(blur(maps, sigma)) <= target (grid, then bisection)."""
    require(math.isfinite(target), "blur: the match maps have no finite roughness (all zero?)")
    if set_roughness(maps) <= target:
        return 0.0
    top = max(maps.shape[-2:]) / 2
    lo, s = 0.0, step
    while s <= top + 1e-12:
        if set_roughness(gaussian_blur(maps, s)) <= target:
            hi = s
            while hi - lo > tol:
                mid = (lo + hi) / 2
                if set_roughness(gaussian_blur(maps, mid)) <= target:
                    hi = mid
                else:
                    lo = mid
            return hi
        lo, s = s, s + step
    raise ConfigError(
        f"blur: no sigma up to {top:g} px makes these maps as smooth as the match maps (roughness {target:.4g});"
        " give --sigma explicitly"
    )


@dataclass
class BlurParams:
    base: str = "ig"  # the explainer whose maps are blurred
    base_params: dict = field(default_factory=dict)  # its parameters (as in `explain --params`)
    sigma: float = 1.0  # pixels (0: unchanged); chosen automatically when `match` is given
    match: str = ""  # run directory of the most robust model (in a zoo also its method label): sigma matches its maps' roughness (module doc)

    def __post_init__(self) -> None:
        require(self.base != "blur", "blur: --base cannot be blur itself")
        cls = EXPLAINERS.get(self.base)
        require(not cls.stochastic, f"blur: --base {self.base} is stochastic; the blur control takes a deterministic explainer")
        cfg.build(cls.Params, self.base_params, f"blur: --base-params of '{self.base}'")
        require(self.sigma >= 0, f"blur: --sigma must be >= 0, got {self.sigma}")
        require(not self.match or self.sigma == 1.0, "blur: give either --sigma or --match (which chooses sigma), not both")


def _base_file(run_dir: Path, base: str) -> tuple[Path, Path]:
    from xairobust.layout import RunLayout

    return RunLayout(run_dir).attribution(base)


@EXPLAINERS.register("blur", label="Blur", library="control: Gaussian blur (scipy.ndimage.gaussian_filter) of a base explainer's maps",
                    control=True)
class BlurControl(Explainer):
    """``base``'s attributions, blurred per channel with a Gaussian of ``sigma`` pixels."""

    Params = BlurParams
    control = True
    run_params = ("match",)  # in a zoo: a method label, resolved per seed by the planner

    def __init__(self, params: BlurParams, background: Tensor | None = None) -> None:
        super().__init__(params, background)
        cls = EXPLAINERS.get(params.base)
        self.base = cls(cfg.build(cls.Params, params.base_params, f"blur: --base-params of '{params.base}'"), background)
        self.details: dict[str, Any] = {}

    @classmethod
    def wants_background(cls, params: BlurParams) -> bool:
        from xairobust.explain.base import wants_background

        return wants_background(params.base, cfg.build(EXPLAINERS.get(params.base).Params, params.base_params, "blur"))

    @classmethod
    def planned_inputs(cls, params: BlurParams, run_dir: Path) -> dict[str, Path]:
        """The files auto sigma will read, whether they exist yet or not (the batch planner orders
        this explain job after the jobs that write them, the match run's included)."""
        if not params.match:
            return {}
        return {"blur_base": _base_file(run_dir, params.base)[0], "blur_match": _base_file(Path(params.match), params.base)[0]}

    @classmethod
    def stage_inputs(cls, params: BlurParams, run_dir: Path) -> dict[str, Path]:
        """Files auto sigma reads (explain-stage identity inputs)."""
        found = cls.planned_inputs(params, run_dir)
        for role, path in found.items():
            if not path.is_file():
                where = path.parent.parent
                raise ConfigError(f"blur: --match needs {path} ({role}); run `xairobust explain --run {where} --explainer {params.base}` first")
        return found

    # The explain/score machinery caps passes and switches IG's delta through these attributes.
    @property
    def chunk_size(self) -> int:
        return getattr(self.base, "chunk_size", 0)

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if hasattr(self.base, "chunk_size"):
            self.base.chunk_size = value

    @property
    def want_delta(self) -> bool:
        return getattr(self.base, "want_delta", False)

    @want_delta.setter
    def want_delta(self, value: bool) -> None:
        if hasattr(self.base, "want_delta"):
            self.base.want_delta = value

    def points_per_input(self) -> int:
        from xairobust.metrics.native import points_per_input

        return points_per_input(self.base)

    def extras(self) -> dict[str, Tensor]:
        return self.base.extras()

    def prepare(self, run_dir: Path) -> None:
        """Resolve auto sigma from this run's and the match run's stored base maps (module doc)."""
        p = self.params
        if not p.match:
            return
        from xairobust.runs import load_tensors, read_json

        maps = {}
        for role, where in (("this run", Path(run_dir)), ("match", Path(p.match))):
            tensors_path, json_path = _base_file(where, p.base)
            if not tensors_path.is_file() or not json_path.is_file():
                raise ConfigError(f"blur: --match needs {tensors_path} ({role}); run `xairobust explain --run {where} --explainer {p.base}` first")
            stored = read_json(json_path).get("params")
            wanted = cfg.to_dict(self.base.params)
            if stored != wanted:
                raise ConfigError(f"blur: {json_path} ({role}) has {p.base} params {stored}, not --base-params {wanted}")
            maps[role] = load_tensors(tensors_path)["attributions"]
        target = set_roughness(maps["match"])
        sigma = choose_sigma(maps["this run"], target)
        self.details = {
            "sigma": "chosen to match the roughness of the match run's maps",
            "resolved_sigma": sigma,
            "match": str(p.match),
            "roughness_match": target,
            "roughness_base": set_roughness(maps["this run"]),
            "roughness_blurred": set_roughness(gaussian_blur(maps["this run"], sigma)),
            "smoothness": "roughness = TV per pixel of |a| / mean |a| (xairobust.explain.blurred)",
        }
        p.sigma, p.match = sigma, ""  # the effective parameters, stored in the attributions JSON

    def attribute(self, model: nn.Module, inputs: Tensor, targets: Tensor, seeds: Tensor, **kwargs: Any) -> Tensor:
        if self.params.match:
            raise ConfigError("blur: --match is resolved by the explain stage; give --sigma to use blur elsewhere")
        if inputs.dim() != 4:
            raise ConfigError(f"blur: needs image inputs (N, C, H, W), got shape {tuple(inputs.shape)}")
        a = self.base.attribute(model, inputs, targets, seeds, **kwargs)
        return gaussian_blur(a, float(self.params.sigma))
