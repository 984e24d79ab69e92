"""Training-time audio augmentation, so a model trained on a few TTS voices hears
real microphones, rooms and other speakers.

Every transform takes and returns (audio, labels, mask) so transforms that change
time (speed, tempo) retime the labels with the audio; `augment` retimes the phone
track too. Speed moves pitch, formants and tempo together (resampling); pitch moves
pitch and formants, a different-sized vocal tract, at the same timing; whispering keeps
the formants and drops the voicing (real voices whisper, breathe and creak, TTS never does);
tempo changes the speaking rate alone (both by WSOLA time-stretching, which keeps the pitch of what
it stretches). All are pure functions of their inputs and a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from ..audio import SAMPLE_RATE, num_frames
from ..config import ConfigError
from .phonemes import retime_track


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
    pitch_prob: float = 0.0                           # pitch and formants shifted, timing kept
    pitch_semitones: tuple[float, float] = (-4.0, 4.0)
    tempo_prob: float = 0.0                           # speaking rate changed, pitch kept, labels retimed
    tempo_range: tuple[float, float] = (0.8, 1.25)
    whisper_prob: float = 0.0                         # voicing replaced by breath noise, envelope kept:
    whisper_mix: tuple[float, float] = (0.4, 1.0)     # ...this share of it (below 1: a breathy voice)
    telephone_prob: float = 0.0                       # a phone line: its band, 8 kHz, 8-bit mu-law

    def __post_init__(self):
        for name in ("speed_range", "tempo_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"data.augment.{name} must be [low, high] with 0 < low <= high, "
                                  f"got {list(getattr(self, name))}")
        low, high = self.pitch_semitones
        if not -12 <= low <= high <= 12:
            raise ConfigError(f"data.augment.pitch_semitones must be [low, high] within -12..12, "
                              f"got {list(self.pitch_semitones)}")
        low, high = self.whisper_mix
        if not 0 <= low <= high <= 1:
            raise ConfigError(f"data.augment.whisper_mix must be [low, high] within 0..1, got {list(self.whisper_mix)}")
        for f in fields(self):
            if f.name.endswith("_prob") and not 0 <= getattr(self, f.name) <= 1:
                raise ConfigError(f"data.augment.{f.name} must be between 0 and 1, got {getattr(self, f.name)}")

    @property
    def changes_hearing(self) -> bool:
        """Whether any transform that keeps the timing (`hearing`) can happen."""
        return self.enabled and any(getattr(self, name) for name in HEARING_PROBS)

    def retiming_only(self) -> "AugmentConfig":
        """These settings without the transforms `hearing` applies (speed and tempo stay)."""
        return replace(self, gain_db=(0.0, 0.0), **{name: 0.0 for name in HEARING_PROBS})


# The transforms that keep the timing, applied by `hearing`: what a voice, a room, a microphone
# or a line does to speech. A frozen encoder's output can be cached for such a hearing of a clip.
HEARING_PROBS = ("pitch_prob", "whisper_prob", "eq_prob", "timbre_prob", "band_limit_prob", "telephone_prob",
                 "reverb_prob", "noise_prob")


WSOLA_FRAME = 512         # 32 ms at 16 kHz: two pitch periods of a low voice
WSOLA_TOLERANCE = 160     # search ±10 ms for the best-matching continuation (one period at 100 Hz)


def match_level(out, reference):
    """`out` scaled to the RMS level of `reference`, as float32 (filters keep the loudness)."""
    rms = lambda x: np.sqrt(np.mean(np.square(x)))  # noqa: E731
    return (out * (rms(reference) + 1e-8) / (rms(out) + 1e-8)).astype(np.float32)


def retime(labels, mask, factor: float, num_samples: int):
    """Labels and mask for audio played `factor` times faster, now `num_samples` long."""
    src_t = np.arange(labels.shape[0])
    new_t = np.arange(num_frames(num_samples)) * factor
    new_labels = np.stack([np.interp(new_t, src_t, labels[:, c]) for c in range(labels.shape[1])], 1)
    idx = np.clip(np.round(new_t).astype(int), 0, labels.shape[0] - 1)
    return new_labels.astype(np.float32), mask[idx]


def played_faster(audio, factor: float) -> np.ndarray:
    """(N,) → about (N / factor,): the samples played `factor` times faster (resampling moves
    pitch, formants and tempo together)."""
    return resample_poly(audio, int(round(100 / factor)), 100).astype(np.float32)


def speed(audio, labels, mask, factor: float):
    """Play `factor` times faster: pitch up and tempo up together; labels follow."""
    out = played_faster(audio, factor)
    return (out, *retime(labels, mask, factor, out.size))


def time_stretch(audio, rate: float) -> np.ndarray:
    """(N,) → (round(N / rate),): `rate` times faster at the same pitch (WSOLA).

    Windows of WSOLA_FRAME samples are overlap-added at half-frame steps; each is
    read near where the rate says, shifted by up to WSOLA_TOLERANCE samples to the
    place that best continues the previous window's waveform (normalised
    cross-correlation), so periods join without phase jumps.
    """
    audio = np.asarray(audio, np.float32)
    frame, tol, hop = WSOLA_FRAME, WSOLA_TOLERANCE, WSOLA_FRAME // 2
    n_out = int(round(audio.size / rate))
    steps = n_out // hop + 1
    padded = np.pad(audio, (tol, int(steps * hop * rate) + frame + 2 * tol + hop))
    window = np.hanning(frame + 1)[:frame].astype(np.float32)   # periodic Hann: halves sum to 1
    out = np.zeros(steps * hop + frame, np.float32)
    pos = 0
    for k in range(steps):
        nominal = int(round(k * hop * rate))
        if k:
            pos = nominal + _best_shift(padded, pos + hop + tol, nominal, frame, tol)
        out[k * hop:k * hop + frame] += window * padded[pos + tol:pos + tol + frame]
    return out[:n_out]


def _best_shift(padded, natural: int, nominal: int, frame: int, tol: int) -> int:
    """Shift in [-tol, tol] of the window at `nominal` that best matches padded[natural:+frame]."""
    template = padded[natural:natural + frame]
    region = padded[nominal:nominal + frame + 2 * tol]
    corr = np.correlate(region, template, mode="valid")
    energy = np.convolve(region ** 2, np.ones(frame, np.float32), mode="valid")
    return int(np.argmax(corr / np.sqrt(energy + 1e-9))) - tol


def tempo(audio, labels, mask, factor: float):
    """Speak `factor` times faster at the same pitch; labels follow."""
    out = time_stretch(audio, factor)
    return (out, *retime(labels, mask, factor, out.size))


def pitch_shift(audio, semitones: float) -> np.ndarray:
    """Pitch and formants moved by `semitones` (a smaller or larger vocal tract), same timing.

    Resampling moves pitch, formants and tempo together; stretching back by the
    same ratio restores the timing, so the labels need no change.
    """
    if np.size(audio) == 0:
        return np.zeros(0, np.float32)
    higher = played_faster(audio, 2.0 ** (semitones / 12))
    out = time_stretch(higher, higher.size / audio.size)
    return np.pad(out, (0, max(0, audio.size - out.size)))[:audio.size]


WHISPER_FFT = 256          # 16 ms frames (hop a quarter of that): short enough to follow the formants
WHISPER_SMOOTH_HZ = 400    # spectral envelope: the magnitude averaged over this band, so no harmonic is left


def whispered(audio, rng: np.random.Generator, mix: float = 1.0) -> np.ndarray:
    """The same speech whispered: each short frame's spectral envelope (the vocal tract's
    formants, the lips' work) kept, its excitation replaced by noise, so no pitch or voicing is
    left; `mix` < 1 keeps some of the voice (breathy). Same length and level, same timing."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import istft, stft

    if np.size(audio) < WHISPER_FFT:
        return np.asarray(audio, np.float32).copy()
    hop = WHISPER_FFT // 4
    _, _, spec = stft(audio, nperseg=WHISPER_FFT, noverlap=WHISPER_FFT - hop)
    bins = max(1, int(round(WHISPER_SMOOTH_HZ / (SAMPLE_RATE / WHISPER_FFT))))
    envelope = np.sqrt(uniform_filter1d(np.abs(spec) ** 2, bins, axis=0, mode="nearest"))
    excitation = (rng.standard_normal(spec.shape) + 1j * rng.standard_normal(spec.shape)) / np.sqrt(2)
    _, noise = istft(envelope * excitation, nperseg=WHISPER_FFT, noverlap=WHISPER_FFT - hop)
    noise = match_level(np.pad(noise, (0, max(0, audio.size - noise.size)))[:audio.size], audio)
    return match_level(mix * noise + (1 - mix) * audio, audio).astype(np.float32)


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


TELEPHONE_RATE = 8000          # a digital phone line's sample rate (ITU-T G.711)
MU = 255                       # G.711 mu-law's compression constant


def telephone(audio):
    """Through a phone line: the 300-3400 Hz band, 8 kHz samples, each as 8-bit mu-law, then
    back at the model's rate. Band and companding noise together, as a call delivers speech."""
    narrow = resample_poly(band_limit(audio), TELEPHONE_RATE, SAMPLE_RATE)
    peak = float(np.max(np.abs(narrow))) or 1.0
    line = mu_law_8bit(narrow / peak) * peak                     # the line's full scale at the loudest sample
    return match_level(resample_poly(line, SAMPLE_RATE, TELEPHONE_RATE)[: audio.size].astype(np.float32), audio)


def mu_law_8bit(x):
    """x in [-1, 1] → its value after 8-bit mu-law coding and decoding (256 levels, finer near 0)."""
    compressed = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    code = np.round((np.clip(compressed, -1, 1) + 1) * 127.5)        # 0..255
    compressed = code / 127.5 - 1
    return np.sign(compressed) * np.expm1(np.abs(compressed) * np.log1p(MU)) / MU


def augment(audio, labels, mask, rng: np.random.Generator, cfg: AugmentConfig, phones=None):
    """Random chain of the above; returns (audio, labels, mask, phones, played).

    `phones` (a phone track, see data.phonemes) is retimed with the audio; None stays None.
    `played`: how many times faster the audio now plays (speed and tempo), so anything else
    timed on the original clip (a teacher track) can be read where the new audio is.
    """
    if not cfg.enabled:
        return audio, labels, mask, phones, 1.0
    played = 1.0      # how many times faster the audio now plays
    if rng.random() < cfg.speed_prob:
        factor = rng.uniform(*cfg.speed_range)
        audio, labels, mask = speed(audio, labels, mask, factor)
        played *= factor
    if cfg.tempo_prob and rng.random() < cfg.tempo_prob:
        factor = rng.uniform(*cfg.tempo_range)
        audio, labels, mask = tempo(audio, labels, mask, factor)
        played *= factor
    if phones is not None and played != 1.0:
        phones = retime_track(phones, played, audio.size)
    return hearing(audio, rng, cfg), labels, mask, phones, played


def hearing(audio, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """The transforms of `augment` that keep the timing (HEARING_PROBS), then the level."""
    if cfg.pitch_prob and rng.random() < cfg.pitch_prob:
        audio = pitch_shift(audio, rng.uniform(*cfg.pitch_semitones))
    if cfg.whisper_prob and rng.random() < cfg.whisper_prob:
        audio = whispered(audio, rng, rng.uniform(*cfg.whisper_mix))
    if rng.random() < cfg.eq_prob:
        audio = shelf_eq(audio, rng, rng.uniform(*cfg.eq_db))
    if cfg.timbre_prob and rng.random() < cfg.timbre_prob:
        audio = timbre_eq(audio, rng, cfg.timbre_db)
    if rng.random() < cfg.band_limit_prob:
        audio = band_limit(audio)
    if cfg.telephone_prob and rng.random() < cfg.telephone_prob:
        audio = telephone(audio)
    if rng.random() < cfg.reverb_prob:
        audio = reverb(audio, rng, rng.uniform(*cfg.reverb_rt60_s))
    if rng.random() < cfg.noise_prob:
        audio = add_noise(audio, rng, rng.uniform(*cfg.noise_snr_db))
    peak = float(np.max(np.abs(audio))) + 1e-8
    audio = audio / peak * min(1.0, 10 ** (rng.uniform(*cfg.gain_db) / 20))
    return audio.astype(np.float32)
