"""The phone inventory (lower-case ARPAbet) and the classes rules and metrics share.

Every TTS engine's phone names are mapped onto these symbols by its own module;
the viseme rules and the lip-sync metrics only ever see these. The phone track at
the end (a class per 10 ms) is what the training-time phone loss learns from.
"""

from __future__ import annotations

import numpy as np

from ..audio import SAMPLE_RATE

SILENCE = frozenset({"sil", "pau", "sp"})

VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy",
                    "uh", "uw"})
CONSONANTS = frozenset({"b", "ch", "d", "dh", "f", "g", "hh", "jh", "k", "l", "m", "n", "ng", "p", "r", "s",
                        "sh", "t", "th", "v", "w", "y", "z", "zh"})
PHONES = SILENCE | VOWELS | CONSONANTS

BILABIAL = frozenset({"p", "b", "m"})          # lips close
LABIODENTAL = frozenset({"f", "v"})            # lower lip to upper teeth
OPEN_VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ay"})   # jaw clearly open
ROUNDED = frozenset({"w", "uw", "uh", "ow", "oy", "ao"})        # lips round
ROUNDED_VOWELS = frozenset({"uw", "uh", "ow", "oy"})
SPREAD_VOWELS = frozenset({"iy", "ih", "ey", "eh", "ae"})        # lips spread


def check_phone(phone: str) -> str:
    if phone not in PHONES:
        raise ValueError(f"unknown phone {phone!r}; phones are {', '.join(sorted(PHONES))}")
    return phone


# --- phone classes for the training-time phone loss -------------------------------------

PHONE_CLASSES = ("sil",) + tuple(sorted(VOWELS | CONSONANTS))   # class 0 is every kind of silence
PHONE_TRACK_RATE = 100          # phone track entries per second (10 ms, the mel hop)
NO_PHONE = -1                   # track value where no phone is known (ignored by the loss)


def phone_class(phone: str) -> int:
    return 0 if phone in SILENCE else PHONE_CLASSES.index(check_phone(phone))


def track_length(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    return -(-int(num_samples) * PHONE_TRACK_RATE // sample_rate)


def phone_track(phonemes, num_samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The phone class under each 10 ms step of a clip, (ceil(duration * 100),) int16.

    Entry k is the class of the phone that holds time (k + 0.5) / 100 s; NO_PHONE where
    none does (before the first or after the last timing) or where the clip has no timings.
    """
    n = track_length(num_samples, sample_rate)
    track = np.full(n, NO_PHONE, np.int16)
    centres = (np.arange(n) + 0.5) / PHONE_TRACK_RATE
    for p in phonemes or ():
        track[(centres >= p.start) & (centres < p.end)] = phone_class(p.phone)
    return track


def retime_track(track: np.ndarray, factor: float, num_samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The phone track of audio played `factor` times faster, now `num_samples` long:
    entry k is what the old track held at entry k's centre time `factor` times later."""
    centres = (np.arange(track_length(num_samples, sample_rate)) + 0.5) * sample_rate / PHONE_TRACK_RATE
    return track_at(track, centres * factor, sample_rate).astype(np.int16)


def track_at(track: np.ndarray, sample_times: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Track values at the given sample positions (int64), NO_PHONE outside the track."""
    idx = np.floor(np.asarray(sample_times) * PHONE_TRACK_RATE / sample_rate).astype(np.int64)
    out = np.full(idx.shape, NO_PHONE, np.int64)
    inside = (idx >= 0) & (idx < track.size)
    out[inside] = track[idx[inside]]
    return out
