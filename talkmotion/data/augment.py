"""Training-time audio augmentation, so a model trained on a few TTS voices hears
real microphones, rooms and other speakers.

Every transform takes and returns (audio, labels, mask) so transforms that change
time (speed) retime the labels with the audio. All are pure functions of their
inputs and a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from ..audio import SAMPLE_RATE, num_frames


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    speed_range: tuple[float, float] = (0.85, 1.15)  # resample: pitch and tempo together, labels retimed
    speed_prob: float = 0.6
    gain_db: tuple[float, float] = (-24.0, 6.0)      # level
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (8.0, 40.0)  # white/pink/brown noise
    reverb_prob: float = 0.4
    reverb_rt60_s: tuple[float, float] = (0.1, 0.7)  # synthetic room impulse responses
    eq_prob: float = 0.5
    eq_db: tuple[float, float] = (-10.0, 10.0)       # random low/high shelf tilt
    band_limit_prob: float = 0.2                      # telephone / cheap microphone band
    timbre_prob: float = 0.0                          # random smooth EQ curve: another voice's colouring
    timbre_db: float = 8.0                            # its largest boost or cut


def match_level(out, reference):
    """`out` scaled to the RMS level of `reference`, as float32 (filters keep the loudness)."""
    rms = lambda x: np.sqrt(np.mean(np.square(x)))  # noqa: E731
    return (out * (rms(reference) + 1e-8) / (rms(out) + 1e-8)).astype(np.float32)


def speed(audio, labels, mask, factor: float):
    """Play `factor` times faster: pitch up and tempo up together; labels follow."""
    up, down = int(round(100 / factor)), 100
    out = resample_poly(audio, up, down).astype(np.float32)
    n = num_frames(out.size)
    src_t = np.arange(labels.shape[0])
    new_t = np.arange(n) * factor
    new_labels = np.stack([np.interp(new_t, src_t, labels[:, c]) for c in range(labels.shape[1])], 1)
    idx = np.clip(np.round(new_t).astype(int), 0, labels.shape[0] - 1)
    return out, new_labels.astype(np.float32), mask[idx]


def coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    kind = rng.integers(3)
    if kind == 1:   # pink-ish: one-pole low-pass mix
        white = lfilter([1.0], [1.0, -0.95], white).astype(np.float32) * 0.3
    elif kind == 2:  # brown-ish
        white = lfilter([1.0], [1.0, -0.995], white).astype(np.float32) * 0.1
    return white


def add_noise(audio, rng, snr_db: float):
    noise = coloured_noise(rng, audio.size)
    p_sig = float(np.mean(audio ** 2)) + 1e-10
    p_noise = float(np.mean(noise ** 2)) + 1e-10
    return audio + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))


def reverb(audio, rng, rt60: float):
    """Convolve with exponentially decaying noise (a synthetic room), keep the dry level."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 + abs(ir[0])
    return match_level(fftconvolve(audio, ir.astype(np.float32))[: audio.size], audio)


def shelf_eq(audio, rng, db: float):
    """A one-pole tilt: boost lows and cut highs (or the reverse) by about `db`."""
    a = rng.uniform(0.6, 0.95)
    low = lfilter([1 - a], [1, -a], audio)
    g = 10 ** (db / 20)
    return (low * g + (audio - low) / g).astype(np.float32)


def timbre_eq(audio, rng, db: float, bands: int = 10):
    """A random smooth EQ curve (broad peaks and dips up to ±db, spaced evenly on a log
    frequency axis from 100 Hz), at the same loudness: the spectral colouring a different
    vocal tract, microphone or codec gives the same speech."""
    from scipy.signal import firwin2

    nyquist = SAMPLE_RATE / 2
    centres = np.geomspace(100.0, nyquist, bands)
    gains = 10 ** (rng.uniform(-db, db, bands) / 20)
    freqs = np.concatenate([[0.0], centres / nyquist])
    taps = firwin2(255, freqs, np.concatenate([[gains[0]], gains]))
    return match_level(fftconvolve(audio, taps, mode="same"), audio)


def band_limit(audio):
    """Roughly 300–3400 Hz, as a telephone or a cheap headset."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, audio).astype(np.float32)


def augment(audio, labels, mask, rng: np.random.Generator, cfg: AugmentConfig):
    """Random chain of the above; returns (audio, labels, mask)."""
    if not cfg.enabled:
        return audio, labels, mask
    if rng.random() < cfg.speed_prob:
        audio, labels, mask = speed(audio, labels, mask, rng.uniform(*cfg.speed_range))
    if rng.random() < cfg.eq_prob:
        audio = shelf_eq(audio, rng, rng.uniform(*cfg.eq_db))
    if cfg.timbre_prob and rng.random() < cfg.timbre_prob:
        audio = timbre_eq(audio, rng, cfg.timbre_db)
    if rng.random() < cfg.band_limit_prob:
        audio = band_limit(audio)
    if rng.random() < cfg.reverb_prob:
        audio = reverb(audio, rng, rng.uniform(*cfg.reverb_rt60_s))
    if rng.random() < cfg.noise_prob:
        audio = add_noise(audio, rng, rng.uniform(*cfg.noise_snr_db))
    peak = float(np.max(np.abs(audio))) + 1e-8
    audio = audio / peak * min(1.0, 10 ** (rng.uniform(*cfg.gain_db) / 20))
    return audio.astype(np.float32), labels, mask
