"""Audio front end of the music-emotion study: decode, resample, log-filtered spectrogram, cache.

The pipeline follows the reference preprocessing of Chowdhury et al. (2019) as used by
Hoedt et al., which was built with madmom's ``LogarithmicFilteredSpectrogramProcessor``:

1. decode (soundfile/libsndfile), mix to mono, resample to 22,050 Hz (librosa/soxr);
2. peak-normalise the signal (madmom ``SignalProcessor(norm=True)``: divide by max |x|) and
   drop leading/trailing exact zeros (the reference's ``np.trim_zeros``);
3. frames of 2048 samples starting every ``hop`` samples (frame i covers
   ``[i*hop, i*hop + 2048)``, zero-padded at the end; ``ceil(len / hop)`` frames, madmom's
   ``origin='future'`` with ``end='normal'``), a symmetric Hann window (``np.hanning``, as
   madmom), magnitude of the real FFT without the Nyquist bin (1024 bins, as madmom);
4. a logarithmic triangular filterbank, 24 bands per octave between 20 Hz and 16 kHz
   (``log_filterbank``; 149 bands at this frame size and rate);
5. ``log10(1 + S)`` (madmom's defaults ``mul=1, add=1``).

Differences from madmom, on purpose: the hop is an integer (705 samples, 31.28 frames/s as the
issue fixes it) where madmom's ``fps=31.3`` gives a fractional hop of 704.47 samples; decoding
and resampling go through libsndfile/soxr instead of ffmpeg. ``tests/test_audio.py`` checks the
filterbank and, when madmom is importable, the whole spectrogram against madmom on the same
signal.

Spectrograms are cached as safetensors (one file per audio file, keyed by the audio bytes'
sha256 and the preprocessing settings), so each file is decoded once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from xairobust.errors import DataError

SAMPLE_RATE = 22050
FRAME_SIZE = 2048
HOP_SIZE = 705
BANDS_PER_OCTAVE = 24
FMIN = 20.0
FMAX = 16000.0
FREF = 440.0  # madmom's reference pitch (A4): band centres are 440 * 2**(k/24)
CACHE_FORMAT = 1  # bump when the cached content changes meaning


@dataclass(frozen=True)
class SpectrogramSettings:
    """Everything that determines a cached spectrogram (part of the cache key)."""

    sample_rate: int = SAMPLE_RATE
    frame_size: int = FRAME_SIZE
    hop_size: int = HOP_SIZE
    bands_per_octave: int = BANDS_PER_OCTAVE
    fmin: float = FMIN
    fmax: float = FMAX
    fref: float = FREF
    norm_filters: bool = True

    def key(self) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- decoding


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 signal at ``sample_rate``, peak-normalised, leading/trailing zeros removed."""
    import soundfile as sf

    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:  # type: ignore[attr-defined]
        raise DataError(f"cannot decode {path}: {exc} (needs libsndfile >= 1.1 for MP3)") from None
    signal = data.mean(axis=1)
    if sr != sample_rate:
        import librosa

        signal = librosa.resample(signal, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak == 0.0:
        raise DataError(f"{path}: the audio is silent (all samples are zero)")
    signal = (signal / peak).astype(np.float32)
    return np.trim_zeros(signal)


# --------------------------------------------------------------------------- filterbank


def fft_bin_frequencies(frame_size: int = FRAME_SIZE, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequencies of the ``frame_size // 2`` FFT bins kept (0 Hz up to, excluding, Nyquist)."""
    return np.arange(frame_size // 2) * sample_rate / frame_size


def log_frequencies(bands_per_octave: int, fmin: float, fmax: float, fref: float = FREF) -> np.ndarray:
    """``fref * 2**(k / bands_per_octave)`` for the integers k with the result in [fmin, fmax].

    k runs over ``floor(b*log2(fmin/fref)) .. ceil(b*log2(fmax/fref)) - 1`` as in madmom, so an
    fmax that is itself exactly on the grid is left out (not the case for 16 kHz).
    """
    lo = math.floor(math.log2(fmin / fref) * bands_per_octave)
    hi = math.ceil(math.log2(fmax / fref) * bands_per_octave)
    freqs = fref * 2.0 ** (np.arange(lo, hi) / bands_per_octave)
    return freqs[(freqs >= fmin) & (freqs <= fmax)]


def nearest_bins(frequencies: np.ndarray, bin_frequencies: np.ndarray) -> np.ndarray:
    """Index of the FFT bin closest to each frequency (ties go to the upper bin, as madmom).

    Frequencies above the last bin map to the last bin (16 kHz lies above Nyquist at 22.05 kHz).
    """
    idx = np.clip(np.searchsorted(bin_frequencies, frequencies), 1, len(bin_frequencies) - 1)
    lower = bin_frequencies[idx - 1]
    upper = bin_frequencies[idx]
    return idx - ((frequencies - lower) < (upper - frequencies)).astype(int)


def log_filterbank(
    settings: SpectrogramSettings = SpectrogramSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (num_fft_bins, num_bands), centre_frequencies (num_bands,))``.

    Definition (madmom ``LogarithmicFilterbank`` with ``unique_filters=True``): the
    log-spaced frequencies are snapped to their nearest FFT bins and duplicate bins dropped;
    every three consecutive bins ``(start, centre, stop)`` make one triangular filter over bins
    ``start .. stop-1`` that rises linearly from 0 at ``start`` to 1 at ``centre`` and falls
    towards 0 at ``stop`` (exclusive). A filter narrower than two bins becomes a single bin.
    With ``norm_filters`` each filter is scaled to sum to 1 (madmom's default), so a band is a
    weighted mean of the magnitudes it covers. The first and last snapped bins are only edges,
    hence ``num_bands = unique bins - 2`` (149 for 2048-sample frames at 22,050 Hz).
    """
    bin_freqs = fft_bin_frequencies(settings.frame_size, settings.sample_rate)
    freqs = log_frequencies(settings.bands_per_octave, settings.fmin, settings.fmax, settings.fref)
    bins = np.unique(nearest_bins(freqs, bin_freqs))
    if len(bins) < 3:
        raise ValueError("log_filterbank: fewer than 3 distinct bins; widen fmin..fmax")
    weights = np.zeros((len(bin_freqs), len(bins) - 2), dtype=np.float64)
    centres = np.empty(len(bins) - 2)
    for band in range(len(bins) - 2):
        start, centre, stop = (int(b) for b in bins[band : band + 3])
        if stop - start < 2:
            centre, stop = start, start + 1
        rise = np.linspace(0.0, 1.0, centre - start, endpoint=False)
        fall = np.linspace(1.0, 0.0, stop - centre, endpoint=False)
        tri = np.concatenate([rise, fall])
        if settings.norm_filters:
            tri = tri / tri.sum()
        weights[start:stop, band] = tri
        centres[band] = bin_freqs[centre]
    return weights.astype(np.float32), centres


# --------------------------------------------------------------------------- spectrogram


def magnitude_stft(signal: np.ndarray, frame_size: int = FRAME_SIZE, hop_size: int = HOP_SIZE) -> np.ndarray:
    """|STFT| as (frames, frame_size // 2): frame i starts at sample i*hop, zero-padded at the end."""
    import librosa

    num_frames = max(1, math.ceil(len(signal) / hop_size))
    needed = (num_frames - 1) * hop_size + frame_size
    padded = np.zeros(max(needed, len(signal)), dtype=np.float32)
    padded[: len(signal)] = signal
    # Symmetric Hann (np.hanning) as madmom, not librosa's periodic one; center=False keeps
    # frame i starting exactly at sample i*hop.
    spec = librosa.stft(
        padded, n_fft=frame_size, hop_length=hop_size, win_length=frame_size,
        window=np.hanning(frame_size).astype(np.float32), center=False,
    )
    return np.abs(spec[: frame_size // 2, :num_frames]).T.astype(np.float32)


def log_spectrogram(signal: np.ndarray, settings: SpectrogramSettings = SpectrogramSettings()) -> np.ndarray:
    """log10(1 + |STFT| @ filterbank) as float32 (frames, bands)."""
    weights, _ = log_filterbank(settings)
    mag = magnitude_stft(signal, settings.frame_size, settings.hop_size)
    return np.log10(1.0 + mag @ weights).astype(np.float32)


def file_spectrogram(path: str | Path, settings: SpectrogramSettings = SpectrogramSettings()) -> np.ndarray:
    """The log-filtered spectrogram of one audio file (not cached)."""
    return log_spectrogram(load_audio(path, settings.sample_rate), settings)


# --------------------------------------------------------------------------- cache


def default_cache_dir(data_root: Path) -> Path:
    """``<data dir>/cache/spectrograms`` when writable, else ``~/.cache/xairobust/cache/spectrograms``.

    $XAIROBUST_CACHE overrides both (the shared data folder is often read-only).
    """
    env = os.environ.get("XAIROBUST_CACHE")
    if env:
        return Path(env).expanduser() / "spectrograms"
    preferred = Path(data_root) / "cache"
    probe = preferred if preferred.exists() else Path(data_root)
    if probe.exists() and os.access(probe, os.W_OK):
        return preferred / "spectrograms"
    return Path.home() / ".cache" / "xairobust" / "cache" / "spectrograms"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SpectrogramCache:
    """Log-filtered spectrograms on disk: ``<cache>/<settings key>/<stem>.safetensors``.

    Each entry records the sha256 of the audio bytes it came from; a changed audio file is
    decoded again, so the cache never serves a stale spectrogram.
    """

    def __init__(self, cache_dir: str | Path, settings: SpectrogramSettings = SpectrogramSettings()) -> None:
        self.settings = settings
        self.dir = Path(cache_dir) / settings.key()
        self.decoded = 0  # files decoded by this instance (cache misses), for tests and logs

    def entry(self, audio: Path) -> Path:
        return self.dir / f"{audio.stem}.safetensors"

    def get(self, audio: str | Path) -> np.ndarray:
        """The spectrogram of ``audio`` (frames, bands), from the cache or decoded and stored."""
        from xairobust.runs import load_tensors, save_tensors

        audio = Path(audio)
        digest = _sha256(audio)
        entry = self.entry(audio)
        if entry.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(entry), framework="pt") as fh:
                    if (fh.metadata() or {}).get("audio_sha256") == digest:
                        return load_tensors(entry)["spectrogram"].numpy()
            except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
                pass
        spec = file_spectrogram(audio, self.settings)
        self.decoded += 1
        meta = {"audio_sha256": digest, "source": audio.name, "settings": json.dumps(asdict(self.settings))}
        save_tensors(entry, {"spectrogram": torch.from_numpy(spec)}, metadata=meta)
        return spec
