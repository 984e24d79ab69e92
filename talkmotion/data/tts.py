"""What every TTS engine module shares: the result type, the errors, text checks.

An engine module (`tts_festival`, `tts_espeak`, `tts_flite`, `tts_kokoro`) provides
  ENGINE                      its name as written in clip metadata,
  installed_voices() -> list  the English voices on this machine,
  FIXED_PITCH_VOICES          voices that ignore the pitch setting (clips record 1.0),
  CROSS_CHECK                 whether its timings are checked against a forced alignment
                              (`check_timings`) before a clip is kept,
  synthesize(text, voice, rate, pitch, timeout) -> Synthesis.
`rate` and `pitch` are factors around 1.0 (1.2 = 20 % faster / higher).
Each engine maps its own phone names onto `phonemes.PHONES` so nothing after it
knows which engine spoke.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import TalkmotionError
from .clips import Phoneme
from .phonemes import BILABIAL, SILENCE

# engine name → module
ENGINES: dict[str, str] = {
    "festival": "talkmotion.data.tts_festival",
    "espeak-ng": "talkmotion.data.tts_espeak",
    "flite": "talkmotion.data.tts_flite",
    "kokoro": "talkmotion.data.tts_kokoro",
}

# A clip's phonemes must cover its audio; gaps shorter than this are closed by
# stretching the neighbour instead of inserting a silence.
MIN_GAP_S = 0.005
# Longest text one clip takes (about 40 s of speech); longer belongs in several clips.
MAX_TEXT_CHARS = 600


class TTSError(TalkmotionError, ValueError):
    """A sentence an engine could not speak; the message names engine, voice and text."""


class VoiceNotInstalled(TTSError):
    pass


class TTSTimeout(TTSError):
    pass


@dataclass
class Synthesis:
    audio: np.ndarray          # (N,) float32, 16 kHz mono
    phonemes: list[Phoneme]    # contiguous, first starts at 0, last ends at N / 16 kHz


def engine_module(name: str):
    if name not in ENGINES:
        raise TTSError(f"unknown TTS engine {name!r}; engines are {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def check_text(text: str) -> str:
    """Text an English voice can speak, or TTSError saying why not.

    Accents are folded (café → cafe); other non-ASCII characters, empty text and
    text without a single word of letters (only digits or punctuation) and text
    longer than MAX_TEXT_CHARS are refused.
    """
    if not isinstance(text, str) or not text.strip():
        raise TTSError("empty text: nothing to speak")
    if len(text) > MAX_TEXT_CHARS:
        raise TTSError(f"text {text[:40]!r}... is {len(text)} characters long; one clip takes at most "
                       f"{MAX_TEXT_CHARS}")
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    bad = sorted({c for c in folded if ord(c) > 127})
    if bad:
        raise TTSError(f"text {text[:60]!r} has non-ASCII characters the English voices cannot speak: "
                       f"{''.join(bad[:10])}")
    if not re.search(r"[A-Za-z]{2,}|\b[AaIi]\b", folded):
        raise TTSError(f"text {text[:60]!r} has no words to speak (only digits or punctuation)")
    return " ".join(folded.split())


def cover_audio(phonemes: list[Phoneme], num_samples: int) -> list[Phoneme]:
    """Make phonemes contiguous over [0, num_samples / 16 kHz]: silences fill gaps, the ends snap.

    Engines disagree by a few milliseconds between their timings and their
    audio; labels need every instant covered by exactly one phoneme.
    """
    duration = num_samples / SAMPLE_RATE
    out: list[Phoneme] = []
    t = 0.0
    for p in sorted(phonemes, key=lambda p: p.start):
        start, end = max(p.start, t), min(p.end, duration)
        if end - start <= 0:
            continue
        if start - t > MIN_GAP_S:
            out.append(Phoneme("sil", t, start))
        elif out:
            out[-1].end = start
        else:
            start = 0.0
        out.append(Phoneme(p.phone, start, end, p.stress))
        t = end
    if duration - t > MIN_GAP_S or not out:
        out.append(Phoneme("sil", t, duration))
    else:
        out[-1].end = duration
    return merge_silences(out)


def merge_silences(phonemes: list[Phoneme]) -> list[Phoneme]:
    """Adjacent silence phones become one `sil`."""
    out: list[Phoneme] = []
    for p in phonemes:
        if p.phone in SILENCE:
            p = Phoneme("sil", p.start, p.end, 0)
            if out and out[-1].phone == "sil":
                out[-1].end = p.end
                continue
        out.append(p)
    return out


def map_phone(name: str, table: dict[str, str], engine: str) -> str:
    """An engine phone → our symbol; tries the name, then without its diacritics."""
    if name in table:
        return table[name]
    stripped = re.sub(r"[^A-Za-z@0-9]", "", name)
    for candidate in (stripped, stripped[:2], stripped[:1]):
        if candidate in table:
            return table[candidate]
    raise TTSError(f"{engine}: phone {name!r} has no mapping to talkmotion phones")


# --- cross-check against an independent forced alignment -------------------------------

MAX_MEDIAN_OFFSET_S = 0.03       # a clip's phone starts may differ from the aligner's by this, in median
MAX_BILABIAL_OFFSET_S = 0.1      # and no lip closure's start or end by more than this
MIN_MATCHED_SHARE = 0.7          # share of the clip's phones the aligner must find nearby
MATCH_REACH_S = 0.15             # how far apart the same phone may start and still be paired
# Pronunciations of the built-in grammar's words (data/texts.py) that the aligner's CMU dictionary lacks.
GRAMMAR_PRONUNCIATIONS = Path(__file__).with_name("grammar.dict")


def check_timings(audio: np.ndarray, text: str, phonemes: list[Phoneme]) -> str | None:
    """Why the clip's timings disagree with pocketsphinx's forced alignment, or None if they agree."""
    from .align import AlignError

    try:
        reference = [p for p in _aligner().align(audio, text).phonemes if p.phone not in SILENCE]
    except AlignError as err:
        raise TTSError(f"cannot cross-check {text[:60]!r}: {err}") from err
    ours = [p for p in phonemes if p.phone not in SILENCE]
    pairs = _match(ours, reference)
    if len(pairs) < MIN_MATCHED_SHARE * len(ours):
        return f"the aligner found {len(pairs)} of {len(ours)} phones"
    offsets = np.array([a.start - b.start for a, b in pairs])
    if np.median(np.abs(offsets)) > MAX_MEDIAN_OFFSET_S:
        return f"phone starts differ from the aligner's by {np.median(np.abs(offsets)) * 1000:.0f} ms in median"
    worst = max((max(abs(a.start - b.start), abs(a.end - b.end)) for a, b in pairs if a.phone in BILABIAL),
                default=0.0)
    if worst > MAX_BILABIAL_OFFSET_S:
        return f"a lip closure differs from the aligner's by {worst * 1000:.0f} ms"
    return None


def _match(ours: list[Phoneme], reference: list[Phoneme]) -> list[tuple[Phoneme, Phoneme]]:
    """Each of our phones paired with the reference's nearest phone of the same name that
    starts within MATCH_REACH_S of it; phones with none (a pronunciation variant) stay unpaired."""
    pairs = []
    for p in ours:
        near = [r for r in reference if r.phone == p.phone and abs(r.start - p.start) <= MATCH_REACH_S]
        if near:
            pairs.append((p, min(near, key=lambda r: abs(r.start - p.start))))
    return pairs


_the_aligner = None


def _aligner():
    """One forced aligner per process (loading its model takes seconds)."""
    global _the_aligner
    if _the_aligner is None:
        from .align import Aligner

        _the_aligner = Aligner(pronunciations=GRAMMAR_PRONUNCIATIONS)
    return _the_aligner
