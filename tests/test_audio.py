"""The audio front end: filterbank definition, STFT framing, spectrogram cache, real-data decoding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data
from mer_fixtures import clip

from xairobust.data import audio
from xairobust.data.audio import SpectrogramCache, SpectrogramSettings, log_filterbank


def test_filterbank_has_149_bands_on_the_snapped_log_grid():
    weights, centres = log_filterbank()
    assert weights.shape == (1024, 149)
    # Independent construction of the centres: every 440 * 2**(k/24) in [20, 16000] Hz, moved to
    # the nearest of the 1024 FFT bins (k * 22050 / 2048), duplicates dropped, first/last = edges.
    bin_hz = np.arange(1024) * 22050 / 2048
    grid = [440 * 2 ** (k / 24) for k in range(-400, 400) if 20 <= 440 * 2 ** (k / 24) <= 16000]
    snapped = sorted({int(np.argmin(np.abs(bin_hz - f) + 1e-9 * np.arange(1024)[::-1])) for f in grid})
    assert len(snapped) == 151
    np.testing.assert_allclose(centres, bin_hz[snapped[1:-1]])
    assert centres[0] == pytest.approx(3 * 22050 / 2048)  # 32.3 Hz: 20-30 Hz snap to bins 2-3


def test_filters_are_area_normalised_triangles_peaking_at_their_centre():
    weights, centres = log_filterbank()
    bin_hz = np.arange(1024) * 22050 / 2048
    np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-5)
    for band in range(weights.shape[1]):
        col = weights[:, band]
        nz = np.nonzero(col)[0]
        peak = int(np.argmax(col))
        assert bin_hz[peak] == centres[band]
        assert np.all(np.diff(col[nz[0] : peak + 1]) > 0)  # rising up to the centre
        assert np.all(np.diff(col[peak : nz[-1] + 1]) < 0)  # falling after it
    unnormalised, _ = log_filterbank(SpectrogramSettings(norm_filters=False))
    assert unnormalised.max() == 1.0


def test_filterbank_equals_madmom_when_installed():
    filters = pytest.importorskip("madmom.audio.filters")
    stft = pytest.importorskip("madmom.audio.stft")
    ref = filters.LogarithmicFilterbank(stft.fft_frequencies(1024, 22050), num_bands=24, fmin=20, fmax=16000)
    weights, _ = log_filterbank()
    np.testing.assert_allclose(np.asarray(ref), weights, atol=1e-7)


def test_spectrogram_equals_a_naive_frame_loop():
    sig = clip(3, 0.5)
    weights, _ = log_filterbank()
    frames = int(np.ceil(len(sig) / 705))
    padded = np.concatenate([sig, np.zeros(2048)])
    window = np.hanning(2048)
    naive = np.stack([np.abs(np.fft.rfft(padded[i * 705 : i * 705 + 2048] * window))[:1024] for i in range(frames)])
    expected = np.log10(1 + naive @ weights.astype(np.float64))
    got = audio.log_spectrogram(sig)
    assert got.shape == (frames, 149)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_spectrogram_equals_madmom_when_installed():
    pytest.importorskip("madmom")
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.audio.spectrogram import LogarithmicFilteredSpectrogram

    sig = clip(5, 1.0)
    framed = FramedSignal(Signal(sig, sample_rate=22050), frame_size=2048, hop_size=705, origin="future")
    ref = np.asarray(LogarithmicFilteredSpectrogram(framed, num_bands=24, fmin=20, fmax=16000))
    np.testing.assert_allclose(audio.log_spectrogram(sig), ref, atol=1e-5)


def test_load_audio_resamples_mixes_normalises_and_trims(tmp_path):
    import soundfile as sf

    stereo = np.stack([clip(1, 0.5, 44100), 0.5 * clip(1, 0.5, 44100)], axis=1)
    stereo = np.concatenate([np.zeros((100, 2), np.float32), stereo])
    sf.write(tmp_path / "a.wav", stereo, 44100)
    sig = audio.load_audio(tmp_path / "a.wav")
    assert abs(len(sig) - 0.5 * 22050) <= 60  # ~half a second at 22.05 kHz, leading zeros gone
    assert np.max(np.abs(sig)) == pytest.approx(1.0)
    assert sig[0] != 0.0


def test_silent_file_is_a_data_error(tmp_path):
    import soundfile as sf

    from xairobust.errors import DataError

    sf.write(tmp_path / "s.wav", np.zeros(2205, np.float32), 22050)
    with pytest.raises(DataError, match="silent"):
        audio.load_audio(tmp_path / "s.wav")


def test_cache_decodes_each_file_once_and_notices_changes(tmp_path):
    import soundfile as sf

    wav = tmp_path / "x.wav"
    sf.write(wav, clip(2, 0.3), 22050)
    cache = SpectrogramCache(tmp_path / "cache")
    first = cache.get(wav)
    again = SpectrogramCache(tmp_path / "cache")
    np.testing.assert_array_equal(again.get(wav), first)
    assert (cache.decoded, again.decoded) == (1, 0)
    sf.write(wav, clip(4, 0.3), 22050)  # new content under the same name
    changed = again.get(wav)
    assert again.decoded == 1 and not np.array_equal(changed, first)


@pytest.mark.data
@pytest.mark.slow
def test_real_soundtracks_decode_to_313_by_149(tmp_path):
    folder = shared_data("mer-soundtracks")
    from xairobust.data.soundtracks import Soundtracks

    src = Soundtracks()
    kwargs = {"cache_dir": str(tmp_path / "cache"), "named_split": "seed42"}
    # decodes all 360 files once (measured 65-180 s on 2 shared cores), then serves the cache
    splits = {s: src.load(s, folder.parent, **kwargs) for s in src.splits}
    assert {s: len(d) for s, d in splits.items()} == {"train": 288, "val": 36, "test": 36}
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 360  # every file decoded once
    for d in splits.values():
        assert tuple(d.x.shape[1:]) == (1, 313, 149)
        assert np.isfinite(d.x.numpy()).all()
    train = splits["train"].x.double()
    assert abs(float(train.mean())) < 1e-6 and abs(float(train.std()) - 1) < 1e-4  # standardised on train
