"""The phone inventory (lower-case ARPAbet) and the classes rules and metrics share.

Every TTS engine's phone names are mapped onto these symbols by its own module;
the viseme rules and the lip-sync metrics only ever see these.
"""

from __future__ import annotations

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
