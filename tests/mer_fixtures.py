"""Generated Soundtracks / mid-level files in the real formats, for the MER tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xairobust.data.midlevel import MIDLEVEL_FEATURES
from xairobust.data.soundtracks import EMOTIONS

SR = 22050


def clip(number: int, seconds: float, sr: int = SR) -> np.ndarray:
    """A sine whose pitch depends on ``number`` plus a little seeded noise, peak 0.5."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(number)
    x = np.sin(2 * np.pi * (110.0 * (1 + number % 7)) * t) + 0.05 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def make_soundtracks(root: Path, n: int = 20, seconds: float = 1.0, sr: int = SR) -> Path:
    """``root/mer-soundtracks`` with Set1/NNN.mp3, mean_ratings_set1.csv (BOM) and split_fixed.json."""
    import soundfile as sf

    folder = Path(root) / "mer-soundtracks"
    (folder / "Set1").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["number," + ",".join(EMOTIONS) + ",TARGET"]
    for num in range(1, n + 1):
        sf.write(folder / "Set1" / f"{num:03d}.mp3", clip(num, seconds, sr), sr, format="MP3")
        ratings = rng.uniform(1.0, 7.83, size=len(EMOTIONS))
        lines.append(f"{num:03d}," + ",".join(f"{r:.2f}" for r in ratings) + ",HAPPY")
    (folder / "mean_ratings_set1.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    numbers = [f"{i:03d}" for i in range(1, n + 1)]
    split = {"train": numbers[: n - 4], "valid": numbers[n - 4 : n - 2], "test": numbers[n - 2 :]}
    (folder / "split_fixed.json").write_text(json.dumps(split))
    return folder


def make_midlevel(directory: Path, numbers: list[int], seed: int = 1) -> dict[int, np.ndarray]:
    """metadata.csv (';') + annotations.csv in the Aljanaki & Soleymani layout; returns number -> ratings/10.

    Song ids are shuffled and other sources interleaved, so a loader that joins by row order
    instead of by id gets the wrong targets.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = [(f"{'allmusic'}", 9000 + i) for i in range(5)] + [("soundtracks", num) for num in numbers]
    order = rng.permutation(len(rows))
    meta = ["song id;Source;ID at file source;Title"]
    ann = ["song_id," + ",".join(MIDLEVEL_FEATURES)]
    expected = {}
    for song_id, k in enumerate(order, start=1):
        source, ident = rows[k]
        meta.append(f"{song_id};{source};{ident};title {song_id}")
        ratings = rng.integers(1, 11, size=len(MIDLEVEL_FEATURES)).astype(float)
        ann.append(f"{song_id}," + ",".join(f"{r:g}" for r in ratings))
        if source == "soundtracks":
            expected[ident] = (ratings / 10).astype(np.float32)
    # annotations in a different row order than metadata
    body = ann[1:]
    rng.shuffle(body)
    (directory / "metadata.csv").write_text("\n".join(meta) + "\n")
    (directory / "annotations.csv").write_text("\n".join([ann[0], *body]) + "\n")
    return expected
