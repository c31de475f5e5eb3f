"""The Soundtracks Set 1 emotion-regression dataset (Eerola & Vuoskoski 2011), as in Hoedt et al.

Layout (the one the authors distribute; ``<data dir>/mer-soundtracks/`` or ``dataset_kwargs.path``)::

    Set1/001.mp3 .. Set1/360.mp3
    mean_ratings_set1.csv      number, valence, energy, tension, anger, fear, happy, sad, tender, TARGET
    split_<name>.json          optional named splits: {"train": [...], "valid": [...], "test": [...]}

Targets are the 8 mean ratings divided by 10. Inputs are (1, 313, 149) standardised
log-filtered spectrograms (``xairobust.data.audio``): one fixed 10 s excerpt (313 frames) per
file, standardised with the global mean and std of the *training* split's excerpts (the model's
own Normalize layer is the identity). ``value_range`` is None: spectrogram inputs are unbounded.

Options (``dataset_kwargs``): see ``SoundtracksOptions``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from xairobust import config as cfg
from xairobust.config import require
from xairobust.data.audio import SpectrogramCache, SpectrogramSettings, default_cache_dir
from xairobust.data.base import CheckResult, DatasetInfo, DatasetSource, DataSplit
from xairobust.errors import DataError
from xairobust.registry import DATASETS

EMOTIONS: tuple[str, ...] = ("valence", "energy", "tension", "anger", "fear", "happy", "sad", "tender")
EXCERPT_FRAMES = 313  # 10 s at 22,050 Hz / hop 705 (the reference's floor(10 * 22050 / 704))
NUM_BANDS = 149
FOLDER = "mer-soundtracks"
RATINGS = "mean_ratings_set1.csv"
HOW_TO_GET = (
    "get Soundtracks Set 1 (Eerola & Vuoskoski 2011: Set1/NNN.mp3 + mean_ratings_set1.csv) and put it in"
    " <data dir>/mer-soundtracks, or pass dataset_kwargs.path"
)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class SoundtracksOptions:
    """``dataset_kwargs`` of ``soundtracks`` (all recorded in run.json)."""

    # None: 80/10/10 from split_seed (torch.randperm over the 360 excerpts in file order, train
    # first, then val, then test -- torch.utils.data.random_split's order, so seed 42 gives the
    # reference's split). A name reads split_<name>.json from the dataset folder (e.g. "seed42").
    # (Not called "split": that is the positional argument of DatasetSource.load.)
    named_split: str | None = None
    split_seed: int = 42
    # Which 10 s of each file: a fixed random offset per file (drawn from excerpt_seed and the
    # excerpt number, like the reference's one-off random slice), the start, or the middle.
    excerpt: Literal["random", "start", "middle"] = "random"
    excerpt_seed: int = 42
    midlevel: bool = False  # add extras["midlevel"] (N, 7) for A2M2E
    midlevel_dir: str | None = None  # default: <data dir>/midlevel
    path: str | None = None  # the dataset folder; default: <data dir>/mer-soundtracks
    cache_dir: str | None = None  # spectrogram cache; default: audio.default_cache_dir

    def __post_init__(self) -> None:
        require(self.named_split is None or bool(self.named_split.strip()),
                "soundtracks: dataset_kwargs.named_split must not be empty")
        require(self.split_seed >= 0, f"soundtracks: split_seed must be >= 0, got {self.split_seed}")


def parse_options(kwargs: dict[str, Any]) -> SoundtracksOptions:
    return cfg.build(SoundtracksOptions, kwargs, "dataset 'soundtracks' (dataset_kwargs)")


def dataset_dir(root: Path, opts: SoundtracksOptions) -> Path:
    """The folder holding Set1/ and the ratings, or a DataError naming where it looked."""
    candidates = [Path(opts.path).expanduser()] if opts.path else [Path(root) / FOLDER, Path(root)]
    for cand in candidates:
        if (cand / "Set1").is_dir() and (cand / RATINGS).is_file():
            return cand
    looked = " or ".join(str(c) for c in candidates)
    raise DataError(f"Soundtracks not found: no Set1/ and {RATINGS} in {looked}; {HOW_TO_GET}")


def read_ratings(folder: Path) -> pd.DataFrame:
    """Ratings indexed by excerpt number (int), the 8 emotion columns in EMOTIONS order, / 10."""
    path = folder / RATINGS
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype={"number": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("number", *EMOTIONS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    frame["number"] = frame["number"].str.strip().astype(int)
    if frame["number"].duplicated().any():
        raise DataError(f"{path}: duplicate excerpt numbers")
    ratings = frame.set_index("number")[list(EMOTIONS)].astype(np.float64) / 10.0
    return ratings.sort_index()


def split_numbers(folder: Path, numbers: list[int], opts: SoundtracksOptions) -> dict[str, list[int]]:
    """{"train", "val", "test"} -> excerpt numbers (sorted)."""
    if opts.named_split is None:
        n = len(numbers)
        n_train = int(n * SPLIT_FRACTIONS[0])
        n_test = int((n - n_train) * 0.5)
        n_val = n - n_train - n_test
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(opts.split_seed)).tolist()
        parts = {
            "train": perm[:n_train],
            "val": perm[n_train : n_train + n_val],
            "test": perm[n_train + n_val :],
        }
        return {k: sorted(numbers[i] for i in v) for k, v in parts.items()}
    path = folder / f"split_{opts.named_split}.json"
    if not path.is_file():
        named = sorted(p.stem[len("split_"):] for p in folder.glob("split_*.json"))
        raise DataError(
            f"soundtracks: named_split '{opts.named_split}' needs {path}, which is missing"
            f" (named splits here: {', '.join(named) or 'none'}; or leave named_split unset for a seeded split)"
        )
    try:
        raw = json.loads(path.read_text())
        out = {
            "train": sorted(int(s) for s in raw["train"]),
            "val": sorted(int(s) for s in raw.get("val", raw.get("valid", []))),
            "test": sorted(int(s) for s in raw["test"]),
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: expected {{'train': [...], 'valid': [...], 'test': [...]}} of numbers ({exc})") from None
    known = set(numbers)
    everything = out["train"] + out["val"] + out["test"]
    if len(set(everything)) != len(everything):
        raise DataError(f"{path}: an excerpt appears in more than one split")
    unknown = sorted(set(everything) - known)
    if unknown:
        raise DataError(f"{path}: excerpt {unknown[0]:03d} is not in {RATINGS}")
    return out


def excerpt(spec: np.ndarray, number: int, opts: SoundtracksOptions, frames: int = EXCERPT_FRAMES) -> np.ndarray:
    """``frames`` consecutive frames of ``spec``; shorter spectrograms are repeated to length first."""
    if len(spec) < frames:
        spec = np.concatenate([spec] * (frames // len(spec) + 1))[: max(frames, len(spec))]
    room = len(spec) - frames
    if opts.excerpt == "start" or room == 0:
        start = 0
    elif opts.excerpt == "middle":
        start = room // 2
    else:
        start = int(np.random.default_rng([opts.excerpt_seed, number]).integers(0, room + 1))
    return spec[start : start + frames]


# In-process memo: the standardised excerpts of one (folder, options) pair, shared by the
# train/val/test loads of one `train` call (so statistics are computed once).
_MEMO: dict[tuple, tuple[dict[int, np.ndarray], float, float]] = {}


def _memo_key(folder: Path, opts: SoundtracksOptions, cache: Path) -> tuple:
    return (str(folder.resolve()), opts.named_split, opts.split_seed, opts.excerpt, opts.excerpt_seed, str(cache))


def load_excerpts(root: Path, opts: SoundtracksOptions) -> tuple[dict[int, np.ndarray], float, float, dict[str, list[int]]]:
    """(excerpt number -> raw log-spectrogram excerpt (313, 149), train mean, train std, split)."""
    from xairobust.progress import track

    folder = dataset_dir(root, opts)
    ratings = read_ratings(folder)
    numbers = list(ratings.index)
    splits = split_numbers(folder, numbers, opts)
    cache_root = Path(opts.cache_dir).expanduser() if opts.cache_dir else default_cache_dir(root)
    key = _memo_key(folder, opts, cache_root)
    if key in _MEMO:
        excerpts, mean, std = _MEMO[key]
        return excerpts, mean, std, splits
    wanted = sorted(set(splits["train"] + splits["val"] + splits["test"]))
    files = {n: folder / "Set1" / f"{n:03d}.mp3" for n in wanted}
    absent = [str(p) for p in files.values() if not p.is_file()]
    if absent:
        raise DataError(f"Soundtracks: {len(absent)} audio file(s) missing, e.g. {absent[0]}; {HOW_TO_GET}")
    cache = SpectrogramCache(cache_root, SpectrogramSettings())
    quiet = not sys.stderr.isatty()
    excerpts = {}
    for n in track(wanted, len(wanted), "spectrograms", quiet=quiet):
        excerpts[n] = excerpt(cache.get(files[n]), n, opts)
    train = np.stack([excerpts[n] for n in splits["train"]]).astype(np.float64)
    mean, std = float(train.mean()), float(train.std())
    if not std > 0:
        raise DataError("Soundtracks: the training spectrograms are constant (std 0); check the audio files")
    _MEMO.clear()  # keep one dataset variant in memory at a time
    _MEMO[key] = (excerpts, mean, std)
    return excerpts, mean, std, splits


@DATASETS.register("soundtracks", task="regression", download=False)
class Soundtracks(DatasetSource):
    """360 film-music excerpts, 8 emotion ratings (regression), inputs (1, 313, 149)."""

    name = "soundtracks"
    splits = ("train", "val", "test")

    def info(self, **kwargs: Any) -> DatasetInfo:
        parse_options(kwargs)
        return DatasetInfo(
            name="soundtracks",
            task="regression",
            num_outputs=len(EMOTIONS),
            input_shape=(1, EXCERPT_FRAMES, NUM_BANDS),
            mean=(0.0,),  # inputs are already standardised with the training split's statistics
            std=(1.0,),
            class_names=EMOTIONS,
            input_space=(
                "log10(1 + log-filtered magnitude spectrogram), 10 s = 313 frames x 149 bands,"
                " standardised with the training split's global mean/std"
            ),
            value_range=None,
        )

    def load(self, split: str, root: Path, **kwargs: Any) -> DataSplit:
        opts = parse_options(kwargs)
        root = Path(root)
        excerpts, mean, std, splits = load_excerpts(root, opts)
        numbers = splits[split]
        folder = dataset_dir(root, opts)
        ratings = read_ratings(folder)
        x = np.stack([(excerpts[n] - mean) / std for n in numbers]).astype(np.float32)[:, None]
        y = ratings.loc[numbers].to_numpy(dtype=np.float32)
        extras = {"number": torch.tensor(numbers, dtype=torch.int64)}
        if opts.midlevel:
            from xairobust.data.midlevel import midlevel_targets

            mdir = Path(opts.midlevel_dir).expanduser() if opts.midlevel_dir else root / "midlevel"
            extras["midlevel"] = torch.from_numpy(midlevel_targets(mdir, numbers))
        return DataSplit(torch.from_numpy(x), torch.from_numpy(y), self.info(**kwargs), None, extras)

    def standardisation(self, root: Path, **kwargs: Any) -> tuple[float, float]:
        """(mean, std) of the training excerpts' log-spectrogram values (what inputs are divided by)."""
        _, mean, std, _ = load_excerpts(Path(root), parse_options(kwargs))
        return mean, std

    def to_signal(self, x: torch.Tensor, root: Path, **kwargs: Any) -> torch.Tensor:
        """Inputs back to the filtered magnitude spectrogram (undo standardisation and log10(1+.)).

        Used for the SNR of adversarial perturbations in a physical domain.
        """
        mean, std = self.standardisation(root, **kwargs)
        return torch.pow(10.0, x.double() * std + mean) - 1.0

    def check(self, root: Path) -> CheckResult:
        try:
            folder = dataset_dir(Path(root), SoundtracksOptions())
            ratings = read_ratings(folder)
            audio = sorted((folder / "Set1").glob("*.mp3"))
        except DataError as exc:
            return CheckResult(self.name, str(root), False, str(exc))
        ok = len(audio) == len(ratings)
        detail = f"{len(audio)} mp3 files, {len(ratings)} rated excerpts"
        return CheckResult(self.name, str(folder), ok, detail if ok else detail + " (counts differ)")
