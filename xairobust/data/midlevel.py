"""Mid-level perceptual feature annotations (Aljanaki & Soleymani 2018) for the A2M2E bottleneck.

Two files, in the layout the dataset is distributed in:

* ``metadata.csv`` (``;``-separated): ``song id``, ``Source``, ``ID at file source`` (+ others);
* ``annotations.csv`` (``,``-separated): ``song_id`` and the seven ratings on a 1-10 scale.

Rows whose ``Source`` is ``soundtracks`` belong to the Soundtracks Set 1 excerpts; their
``ID at file source`` is the excerpt number (``001`` .. ``360`` in ``Set1/NNN.mp3``). Ratings are
divided by 10, as the emotion ratings are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xairobust.errors import DataError

MIDLEVEL_FEATURES: tuple[str, ...] = (
    "melodiousness",
    "articulation",
    "rhythm_complexity",
    "rhythm_stability",
    "dissonance",
    "tonal_stability",
    "minorness",
)
META_COLUMNS = ("song id", "Source", "ID at file source")
HOW_TO_GET = (
    "download the Mid-level Perceptual Features dataset (Aljanaki & Soleymani, ISMIR 2018) and put"
    " its metadata.csv and annotations.csv there, or point dataset_kwargs.midlevel_dir at them"
)


def _read(path: Path, sep: str, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"mid-level annotations not found: {path} is missing. A2M2E needs them: {HOW_TO_GET}")
    try:
        frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as a '{sep}'-separated CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}"
            f" (found: {', '.join(repr(c) for c in frame.columns)})"
        )
    return frame


def load_midlevel(directory: str | Path, source: str = "soundtracks") -> dict[int, np.ndarray]:
    """``{excerpt number: (7,) float32 ratings / 10}`` for the rows of ``source``."""
    directory = Path(directory)
    meta = _read(directory / "metadata.csv", ";", META_COLUMNS)
    ann = _read(directory / "annotations.csv", ",", ("song_id", *MIDLEVEL_FEATURES))
    rows = meta[meta["Source"].astype(str).str.strip() == source]
    if rows.empty:
        raise DataError(f"{directory / 'metadata.csv'}: no row has Source == '{source}'")
    merged = rows.merge(ann, left_on="song id", right_on="song_id", how="left", validate="one_to_one")
    lacking = merged[list(MIDLEVEL_FEATURES)].isna().any(axis=1)
    if lacking.any():
        ids = merged.loc[lacking, "song id"].tolist()
        raise DataError(
            f"{directory / 'annotations.csv'}: {len(ids)} '{source}' song(s) have no (complete) ratings,"
            f" e.g. song id {ids[0]}"
        )
    out: dict[int, np.ndarray] = {}
    for _, row in merged.iterrows():
        try:
            number = int(str(row["ID at file source"]).strip())
        except ValueError:
            raise DataError(
                f"{directory / 'metadata.csv'}: 'ID at file source' {row['ID at file source']!r} is not an excerpt number"
            ) from None
        out[number] = (row[list(MIDLEVEL_FEATURES)].to_numpy(dtype=np.float64) / 10.0).astype(np.float32)
    return out


def midlevel_targets(directory: str | Path, numbers: list[int], source: str = "soundtracks") -> np.ndarray:
    """(len(numbers), 7) targets in the order of ``numbers``; every number must be annotated."""
    table = load_midlevel(directory, source)
    absent = [n for n in numbers if n not in table]
    if absent:
        raise DataError(
            f"mid-level annotations in {directory} lack {len(absent)} of the {len(numbers)} excerpts"
            f" (e.g. {absent[0]:03d}); {HOW_TO_GET}"
        )
    return np.stack([table[n] for n in numbers])
