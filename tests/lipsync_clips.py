"""Synthetic phoneme-timed clips for the lip-sync metric and eval tests.

Hand-made reference labels, piecewise constant per frame (each frame takes the
target of the phone under its centre): lips close on p/b/m, the jaw opens on
open vowels, lips round on uw/ow, spread on iy/ih/eh, and everything rests in
silence. The audio is a crude source model, loud where real speech is loud:
harmonic vowels with a per-segment level, quieter nasals, a weak voice bar on
b, silent p/t/k closures, noisy s, and faint noise in silence.
"""

from __future__ import annotations

import numpy as np

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE, num_frames
from talkmotion.data.clips import Clip, Phoneme

FPS = 30
F0_HZ = 120.0

# phone → {channel: weight}; unlisted channels are 0.
TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    "p": {"jawOpen": 0.05, "mouthClose": 0.05, "mouthPressLeft": 0.3, "mouthPressRight": 0.3},
    "b": {"jawOpen": 0.05, "mouthClose": 0.05, "mouthPressLeft": 0.2, "mouthPressRight": 0.2},
    "m": {"jawOpen": 0.04, "mouthClose": 0.04},
    "t": {"jawOpen": 0.15}, "d": {"jawOpen": 0.15}, "n": {"jawOpen": 0.15}, "k": {"jawOpen": 0.2},
    "s": {"jawOpen": 0.08, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2},
    "aa": {"jawOpen": 0.6, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3},
    "ae": {"jawOpen": 0.5, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2},
    "ah": {"jawOpen": 0.45},
    "iy": {"jawOpen": 0.12, "mouthStretchLeft": 0.4, "mouthStretchRight": 0.4, "mouthSmileLeft": 0.2,
           "mouthSmileRight": 0.2},
    "ih": {"jawOpen": 0.2, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3},
    "eh": {"jawOpen": 0.3, "mouthStretchLeft": 0.2, "mouthStretchRight": 0.2},
    "uw": {"jawOpen": 0.15, "mouthFunnel": 0.4, "mouthPucker": 0.6},
    "ow": {"jawOpen": 0.3, "mouthFunnel": 0.5, "mouthPucker": 0.3},
}
CONSONANTS = ("p", "b", "m", "t", "d", "n", "k", "s")
VOWELS = ("aa", "ae", "ah", "iy", "ih", "eh", "uw", "ow")
# Level range (dB) of each phone's audio; None = digital-silent closure.
LEVEL_DB = {"aa": (-12, 0), "ae": (-12, 0), "ah": (-18, -4), "iy": (-16, -4), "ih": (-18, -6), "eh": (-16, -4),
            "uw": (-16, -4), "ow": (-14, -2), "m": (-16, -6), "n": (-16, -6), "b": (-32, -28), "s": (-24, -18),
            "d": (-32, -28), "p": None, "t": None, "k": None, "sil": None}


def phone_sequence(rng: np.random.Generator, syllables: int = 8) -> list[Phoneme]:
    """sil, then CV syllables with an occasional pause, then sil; contiguous from 0 s."""
    seq = [("sil", rng.uniform(0.3, 0.5))]
    for k in range(syllables):
        seq.append((str(rng.choice(CONSONANTS)), rng.uniform(0.06, 0.1)))
        seq.append((str(rng.choice(VOWELS)), rng.uniform(0.1, 0.2)))
        if k == syllables // 2:
            seq.append(("sil", rng.uniform(0.3, 0.4)))
    seq.append(("sil", rng.uniform(0.3, 0.5)))
    out, t = [], 0.0
    for phone, dur in seq:
        out.append(Phoneme(phone, round(t, 5), round(t + dur, 5)))
        t += dur
    out[-1].end = round(t, 5)
    return out


def labels_for(phonemes: list[Phoneme], frames: int, fps: float = FPS) -> np.ndarray:
    """(T, C) reference: each frame the target of the phone under its centre; head sways slowly."""
    values = np.zeros((frames, labels.NUM_CHANNELS), np.float32)
    centres = (np.arange(frames) + 0.5) / fps
    for p in phonemes:
        rows = (centres >= p.start) & (centres < p.end)
        for name, w in TARGETS[p.phone].items():
            values[rows, labels.index(name)] = w
    values[:, labels.index("pitch")] = 3.0 * np.sin(2 * np.pi * 0.4 * centres)
    values[:, labels.index("yaw")] = 5.0 * np.sin(2 * np.pi * 0.25 * centres + 1.0)
    return values


def audio_for(phonemes: list[Phoneme], rng: np.random.Generator) -> np.ndarray:
    n = int(round(phonemes[-1].end * SAMPLE_RATE))
    audio = rng.normal(0, 10 ** (-70 / 20), n).astype(np.float32)  # faint room noise
    for p in phonemes:
        a, b = int(round(p.start * SAMPLE_RATE)), int(round(p.end * SAMPLE_RATE))
        levels = LEVEL_DB[p.phone]
        if levels is None:
            continue
        amp = 0.3 * 10 ** (rng.uniform(*levels) / 20)
        t = np.arange(b - a) / SAMPLE_RATE
        if p.phone == "s":
            audio[a:b] += amp * rng.normal(0, 1, b - a).astype(np.float32)
        else:
            harmonics = 2 if p.phone in ("m", "n", "b", "d") else 6
            tone = sum(np.sin(2 * np.pi * F0_HZ * h * t) / h for h in range(1, harmonics + 1))
            audio[a:b] += (amp * tone).astype(np.float32)
    return np.clip(audio, -1, 1)


def make_clip(clip_id: str, seed: int, syllables: int = 8) -> Clip:
    rng = np.random.default_rng(seed)
    phonemes = phone_sequence(rng, syllables)
    audio = audio_for(phonemes, rng)
    frames = num_frames(audio.size, FPS)
    ref = labels_for(phonemes, frames)
    mask = np.ones_like(ref, bool)
    mask[:, labels.index("tongueOut")] = False
    return Clip(clip_id, audio, ref, mask, FPS, phonemes, {"source": "test"})


def make_clips(count: int = 4, seed: int = 0) -> list[Clip]:
    return [make_clip(f"clip{k:02d}", seed * 100 + k) for k in range(count)]
