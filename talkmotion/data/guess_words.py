"""Pronunciations for words the aligner's dictionary lacks, guessed by flite's letter-to-sound rules.

A recogniser's transcripts (`corpus transcribe`) hold names and coinages ("Shreveman",
"glycerin") that the CMU dictionary does not, and `corpus align` skips a clip with any
unknown word. flite, the TTS engine set-up installs, says any word: its lexicon, then its
letter-to-sound rules, give phones with stress, which become an entry of a CMU-style file
for `corpus align --dict`. A guess can be wrong; the aligner then finds the transcript
does not fit the audio and skips the clip, as for any wrong transcript.

Lengthened words ("ooooh", "ahhh", "mmm": a letter written three or more times) are not
spelled out letter by letter. Their runs are cut to two letters, then to one, and the
first form the dictionary knows gives the pronunciation ("ooooh" → "ooh", "aaaahhh" →
"ah"); the aligner stretches its phones over the held sound. A hum ("mmm", "shhh") is
its consonant held. Other forms go to flite with the runs cut to two letters.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..files import write_text
from .align import Aligner, words_of
from .phonemes import SILENCE

GUESSING_VOICE = "kal16"      # any US flite voice: the voice does not change the phones
LENGTHENED = re.compile(r"([a-z])\1{2,}")                 # a letter written three or more times
HUMS = {"m": ["M"], "hm": ["HH", "M"], "n": ["N"], "s": ["S"], "sh": ["SH"], "z": ["Z"]}


def unknown_words(transcripts, aligner: Aligner | None = None) -> list[str]:
    """The words of the transcripts (each once, in order) that the aligner cannot pronounce."""
    aligner = aligner or Aligner()
    words = [w for text in transcripts for w in words_of(text)]
    return aligner.unknown_words(words)


def guess(word: str, aligner: Aligner | None = None) -> list[str] | None:
    """CMU phones with stress digits for `word`, or None where flite says nothing.

    A lengthened word is looked up shortened first (see the module doc); `aligner`
    gives the dictionary for that (a new one when None and the word is lengthened).
    """
    if LENGTHENED.search(word):
        known = shortened_pronunciation(word, aligner or Aligner())
        if known:
            return known
        word = LENGTHENED.sub(r"\1\1", word)
    return flite_guess(word)


def shortened_forms(word: str) -> list[str]:
    """A lengthened word's runs cut to two letters, then to one: "ooooh" → ["ooh", "oh"]."""
    return list(dict.fromkeys([LENGTHENED.sub(r"\1\1", word), LENGTHENED.sub(r"\1", word)]))


def shortened_pronunciation(word: str, aligner: Aligner) -> list[str] | None:
    """The dictionary's pronunciation of a shortened form of `word`, or a hum's held consonant."""
    forms = shortened_forms(word)
    for form in forms:
        if len(form) > 1 and aligner.stressed.get(form):
            return list(aligner.stressed[form][0])
    return HUMS.get(forms[-1])


def flite_guess(word: str) -> list[str] | None:
    """flite's phones with stress digits for `word`, or None where flite says nothing."""
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


def write_guesses(path: str | Path, words: list[str], aligner: Aligner | None = None) -> dict[str, list[str]]:
    """Guess each word and write the CMU-style file (atomically); {word: phones} of those guessed."""
    if aligner is None and any(LENGTHENED.search(w) for w in words):
        aligner = Aligner()
    guessed = {w: phones for w in words if (phones := guess(w, aligner))}
    lines = [f";;; pronunciations guessed by flite's letter-to-sound rules ({len(guessed)} words)"]
    lines += [f"{w.upper()}  {' '.join(p)}" for w, p in guessed.items()]
    write_text(path, "\n".join(lines) + "\n")
    return guessed
