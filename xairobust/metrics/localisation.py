"""Localisation without masks (issue 18): ``focus`` (Arias-Duart et al. 2022, "Focus! Rating XAI
methods and finding biases", FUZZ-IEEE, arXiv 2109.15035), as ``quantus.Focus`` 0.6 scores it.

Each sample is explained inside a 2 x 2 mosaic of four images: itself, one more image of its class
and two images of other classes, in shuffled positions; the score is the share of the mosaic
explanation's positive relevance that lies on the two tiles of the sample's class,
``sum(mask * max(n(a), 0)) / (sum(max(n(a), 0)) + 1e-9)`` (n = per-sample max-normalisation;
Quantus' ``abs=False, normalise=True``). Higher is better; a map that ignores the classes scores
about 0.5.

The mosaics are Quantus' ``mosaic_creation`` (``quantus.functions.mosaic_func``), called with
one mosaic per class on a pool made for each sample, so that every sample has a mosaic (and a
score) of its own:

* a ``random.Random`` seeded per sample (score seed, metric, test index) draws the second image
  of the sample's class from the other scored samples of that class (the sample itself when it
  is alone in its class; Quantus repeats images the same way) and the seed of the call;
* the pool is {the sample, that partner, every scored sample of another class}; Quantus' mosaic
  for the sample's class then holds exactly those two, plus two images of other classes that
  Quantus draws (``rng.choices`` per class, shuffled), in positions Quantus shuffles; its
  ``p_batch`` entry marks the sample's class;
* the tiles are laid out as ``build_single_mosaic`` (top-left, top-right, bottom-left,
  bottom-right).

Our choices:

* "Class" is the explained class ``y`` of each sample (the prediction under ``explain --target
  pred``, the label under ``--target label``): the mosaic is explained at the sample's ``y``.
  Partners come from the scored samples, ordered by test index, so a sample's mosaic does not
  depend on the batch size or the order of the samples; with ``--target label`` every model
  scored on the same images gets the same mosaics. A sample with no other class among the scored
  ones has no mosaic: NaN, counted in the diagnostics (``no_mosaic``).
* ``mosaic`` ``half`` (default): each tile is the image average-pooled 2 x 2, so the mosaic has
  the model's own input size and every model and explainer applies (a fixed-size head such as
  digits_cnn's, explainers with a background of the input's shape). ``full``: tiles at full
  resolution, a 2H x 2W mosaic, as Quantus and the paper build it; it needs a model that takes
  that size (global pooling: cifar_cnn, the ResNets) and an explainer without a fixed-shape
  background.
* The mosaic is explained with the scored explainer at the stored attributions' seeds (draw 0 of
  ``make_explain``), as the randomisation metrics re-explain.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xairobust.config import require
from xairobust.errors import ConfigError
from xairobust.metrics import _quantus, native
from xairobust.metrics._quantus import QuantusMetric, normalise_per_sample, sample_global_seed
from xairobust.metrics.base import MetricInput
from xairobust.metrics.quantus_metrics import register
from xairobust.metrics.randomisation import QuantusRefused

_quantus._TAGS.update({"focus": 51})

FOCUS_EPS = 1e-9  # Quantus' denominator epsilon


@dataclass
class FocusParams:
    mosaic: str = "half"  # half: tiles pooled 2x2, the mosaic has the input's size; full: 2H x 2W (Quantus)

    def __post_init__(self) -> None:
        require(self.mosaic in ("half", "full"), f"--mosaic must be half or full, got '{self.mosaic}'")


def mosaic_plan(y: np.ndarray, indices: np.ndarray, seed: int, tag: str = "focus") -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the batch positions of its mosaic's 4 tiles (TL, TR, BL, BR) and which of them
    are of its class (Quantus' p_batch); rows of -1 where no mosaic exists (one class only).

    Sample i's mosaic is Quantus' own ``mosaic_creation(..., mosaics_per_class=1, seed)`` mosaic for
    class y_i over the pool {i, one other sample of its class, every sample of the other classes}
    (candidates in test-index order); the partner of its class and the seed come from a
    ``random.Random`` seeded per sample. Quantus is given the pool's positions as 1 x 1 x 1
    "images", so it lays out indices, not pixels."""
    from quantus.functions.mosaic_func import mosaic_creation

    n = len(y)
    by_index = [int(j) for j in np.argsort(indices, kind="stable")]
    tiles = np.full((n, 4), -1, dtype=np.int64)
    same = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        target = int(y[i])
        others = [j for j in by_index if int(y[j]) != target]
        if not others:
            continue
        rng = random.Random(sample_global_seed(seed, tag, indices[i]))
        partners = [j for j in by_index if int(y[j]) == target and j != i]
        second = rng.choice(partners) if partners else i
        pool = np.array([i] + ([second] if second != i else []) + others)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, where, _, p_list, targets = mosaic_creation(
                np.arange(len(pool)).reshape(-1, 1, 1, 1), y[pool], 1, seed=rng.getrandbits(32) or 1  # 0 = unseeded in Quantus
            )
        k = [int(t) for t in targets].index(target)
        tiles[i] = pool[list(where[k])]
        same[i] = p_list[k]
    return tiles, same


def _pool_np(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)


@register("focus", category="localisation", direction="higher", label="Focus",
          source="Arias-Duart et al. 2022 (FUZZ-IEEE, arXiv 2109.15035), quantus.Focus on mosaics as quantus.mosaic_creation builds them (one per sample)", draws=True)
class Focus(QuantusMetric):
    """Share of a mosaic explanation's positive relevance on the two tiles of the sample's class."""

    Params = FocusParams
    quantus_name = "Focus"

    def plan(self, inp: MetricInput) -> tuple[np.ndarray, np.ndarray]:
        require(inp.x.ndim == 4, f"focus: needs (C, H, W) image inputs, got a {'x'.join(map(str, inp.x.shape[1:]))} input")
        h, w = inp.x.shape[2:]
        if self.params.mosaic == "half":
            require(h % 2 == 0 and w % 2 == 0 and h >= 2, f"focus --mosaic half: needs an even image size, got {h}x{w}")
        return mosaic_plan(inp.y, inp.indices, inp.seed, self.name())

    # -- mosaics ---------------------------------------------------------------------------------
    def mosaics_np(self, inp: MetricInput, tiles: np.ndarray) -> np.ndarray:
        """Reference path: Quantus' build_single_mosaic of the (pooled) tiles."""
        from quantus.functions.mosaic_func import build_single_mosaic

        x = _pool_np(inp.x) if self.params.mosaic == "half" else inp.x
        return np.stack([build_single_mosaic([x[j] for j in row]) for row in tiles])

    def mosaics(self, x: Tensor, tiles: Tensor) -> Tensor:
        """Native: the same layout with torch (tiles (c, 4) positions into x)."""
        t = x[tiles.reshape(-1)]
        if self.params.mosaic == "half":
            t = F.avg_pool2d(t, 2)
        t = t.view(len(tiles), 4, *t.shape[1:])
        return torch.cat([torch.cat([t[:, 0], t[:, 1]], -1), torch.cat([t[:, 2], t[:, 3]], -1)], -2)

    # -- reference path --------------------------------------------------------------------------
    def score(self, inp: MetricInput) -> np.ndarray:
        self._plan = self.plan(inp)
        scores = super().score(inp)
        self._diag["no_mosaic"] = int((self._plan[0][:, 0] < 0).sum())
        return scores

    def _run(self, inp: MetricInput, idx: np.ndarray, extra: dict[str, Any], draw_offset: int = 0) -> np.ndarray:
        import quantus

        tiles, same = self._plan
        out = np.full(len(idx), np.nan)
        ok = idx[tiles[idx, 0] >= 0]
        if not len(ok):
            return out
        mosaics = self.mosaics_np(inp, tiles[ok])
        a = self._explain_np(inp, mosaics, ok)
        metric = quantus.Focus(normalise_func=normalise_per_sample, disable_warnings=True, display_progressbar=False,
                               return_aggregate=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = metric(model=inp.model, x_batch=mosaics, y_batch=inp.y[ok], a_batch=a, custom_batch=[tuple(r) for r in same[ok]],
                             device=str(inp.device), batch_size=len(ok), channel_first=True)
            except AssertionError as err:  # Quantus' attribution checks (e.g. an all-negative map)
                raise QuantusRefused(f"focus --engine quantus: Quantus' Focus refuses a mosaic explanation: {err}; use --engine native") from None
        out[np.isin(idx, ok)] = np.asarray(res, dtype=np.float64)
        return out

    def _explain_np(self, inp: MetricInput, mosaics: np.ndarray, rows: np.ndarray) -> np.ndarray:
        try:
            return inp.explain(inp.model, mosaics, inp.y[rows], inp.indices[rows], draw=0)
        except RuntimeError as err:  # e.g. a fixed-size head or background given a 2H x 2W mosaic
            raise ConfigError(_refused(inp, err)) from None

    # -- native engine ---------------------------------------------------------------------------
    def score_native(self, inp: MetricInput) -> np.ndarray:
        tiles, same = self._plan if getattr(self, "_plan", None) is not None else self.plan(inp)
        n = len(inp.x)
        scores = np.full(n, np.nan)
        ok = np.flatnonzero(tiles[:, 0] >= 0)
        chunking = self.chunking(inp)
        rex = self.reexplainer(inp, chunking)
        x = torch.as_tensor(inp.x, device=inp.device)
        y = torch.as_tensor(inp.y, device=inp.device, dtype=torch.int64)
        for part in chunking.sample_chunks(len(ok)):
            rows = ok[part]
            mosaic = self.mosaics(x, torch.as_tensor(tiles[rows], device=inp.device))
            try:
                a = rex(mosaic, y[torch.as_tensor(rows, device=inp.device)], inp.indices[rows], np.zeros(len(rows), dtype=np.int64))
            except RuntimeError as err:
                raise ConfigError(_refused(inp, err)) from None
            scores[rows] = focus_scores(a, torch.as_tensor(same[rows], device=inp.device))
            self.progress(len(rows))
        self.progress(n - len(ok))
        return scores


def focus_scores(a: Tensor, same: Tensor) -> np.ndarray:
    """Quantus' Focus of (k, C, 2h, 2w) mosaic maps with (k, 4) class positions (float64)."""
    pos = native.normalise(a.float()).double().clamp_min(0)
    h, w = pos.shape[2] // 2, pos.shape[3] // 2
    quads = torch.stack([pos[:, :, :h, :w], pos[:, :, :h, w:], pos[:, :, h:, :w], pos[:, :, h:, w:]], 1)
    per_tile = quads.flatten(2).sum(2)  # (k, 4)
    total = pos.flatten(1).sum(1)
    return ((per_tile * same.double()).sum(1) / (total + FOCUS_EPS)).cpu().numpy()


def _refused(inp: MetricInput, err: Exception) -> str:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"focus: the model or explainer cannot take the mosaic of {inp.x.shape[1]}x{inp.x.shape[2] * 2}x{inp.x.shape[3] * 2}"
            f" ({first}); use --mosaic half")
