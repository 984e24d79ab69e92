"""Pronunciations for words the aligner's dictionary lacks, guessed by flite's letter-to-sound rules.

A recogniser's transcripts (`corpus transcribe`) hold names and coinages ("Shreveman",
"glycerin") that the CMU dictionary does not, and `corpus align` skips a clip with any
unknown word. flite, the TTS engine set-up installs, says any word: its lexicon, then its
letter-to-sound rules, give phones with stress, which become an entry of a CMU-style file
for `corpus align --dict`. A guess can be wrong; the aligner then finds the transcript
does not fit the audio and skips the clip, as for any wrong transcript.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_text
from .align import Aligner, words_of
from .phonemes import SILENCE

GUESSING_VOICE = "kal16"      # any US flite voice: the voice does not change the phones


def unknown_words(transcripts, aligner: Aligner | None = None) -> list[str]:
    """The words of the transcripts (each once, in order) that the aligner cannot pronounce."""
    aligner = aligner or Aligner()
    words = [w for text in transcripts for w in words_of(text)]
    return aligner.unknown_words(words)


def guess(word: str) -> list[str] | None:
    """CMU phones with stress digits for `word` (flite's), or None where flite says nothing."""
    from . import tts_flite
    from .tts import TTSError

    try:
        said = tts_flite.synthesize(word, GUESSING_VOICE)
    except TTSError:
        return None
    phones = [cmu_phone(p.phone, p.stress) for p in said.phonemes if p.phone not in SILENCE]
    return phones or None


def cmu_phone(phone: str, stress: int) -> str:
    """talkmotion's phone → the CMU dictionary's ("ax" is an unstressed AH)."""
    from .phonemes import VOWELS

    if phone == "ax":
        return "AH0"
    return phone.upper() + (str(stress) if phone in VOWELS else "")


def write_guesses(path: str | Path, words: list[str]) -> dict[str, list[str]]:
    """Guess each word and write the CMU-style file (atomically); {word: phones} of those guessed."""
    guessed = {w: phones for w in words if (phones := guess(w))}
    lines = [f";;; pronunciations guessed by flite's letter-to-sound rules ({len(guessed)} words)"]
    lines += [f"{w.upper()}  {' '.join(p)}" for w, p in guessed.items()]
    write_text(path, "\n".join(lines) + "\n")
    return guessed
