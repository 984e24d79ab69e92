"""Per-frame loudness and pitch of speech audio, for the label rules.

Frame i is analysed in a window centred on its middle, (i + 0.5) / fps, so the
values line up with the label frames of `audio.num_frames`.
"""

from __future__ import annotations

import numpy as np

from ..audio import FPS, SAMPLE_RATE, num_frames

WINDOW_S = 0.040          # analysis window: two periods of a 50 Hz voice
F0_MIN_HZ, F0_MAX_HZ = 60.0, 400.0
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak above which a frame counts as voiced
SILENCE_DB = -60.0        # frames quieter than this (dBFS) are never voiced
EPS = 1e-10


def _frames(audio: np.ndarray, fps: float, sr: int) -> np.ndarray:
    """(T, W) windows centred on each label frame, zero-padded at the edges."""
    width = int(round(WINDOW_S * sr))
    count = num_frames(audio.size, fps, sr)
    centres = np.round((np.arange(count) + 0.5) * sr / fps).astype(np.int64)
    padded = np.pad(np.asarray(audio, np.float32), (width, width))
    idx = centres[:, None] + np.arange(width)[None, :] - width // 2 + width
    return padded[np.clip(idx, 0, padded.size - 1)]


def loudness_db(audio: np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """RMS level of each frame in dBFS, (T,)."""
    frames = _frames(audio, fps, sr)
    return (10.0 * np.log10(np.mean(frames ** 2, axis=1) + EPS)).astype(np.float32)


def pitch_hz(audio: np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Fundamental frequency of each frame by autocorrelation, (T,); 0 where unvoiced."""
    frames = _frames(audio, fps, sr)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(frames.shape[1])
    size = 1 << int(np.ceil(np.log2(2 * frames.shape[1])))
    spectrum = np.fft.rfft(frames, size, axis=1)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, size, axis=1)
    lo, hi = int(sr / F0_MAX_HZ), int(sr / F0_MIN_HZ)
    norm = corr[:, lo:hi + 1] / (corr[:, :1] + EPS)
    lag = np.argmax(norm, axis=1)
    peak = norm[np.arange(norm.shape[0]), lag]
    f0 = sr / (lag + lo)
    voiced = (peak > VOICING_THRESHOLD) & (loudness_db(audio, fps, sr) > SILENCE_DB)
    return np.where(voiced, f0, 0.0).astype(np.float32)
