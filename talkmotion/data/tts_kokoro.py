"""Kokoro-82M, a neural TTS, as a corpus engine with phone timings (ONNX Runtime, no torch).

The int8 ONNX graph (`talkmotion.assets.KOKORO_MODEL`, installed by set-up) maps phoneme
tokens, a 256-value style vector and a speed to 24 kHz audio. Its duration predictor's
output (`DURATION_TENSOR`: frames of `DURATION_HOP` samples per token) is an internal
tensor; we add it as a second graph output once per process, so each token's share of the
audio comes out with the audio.

Text → tokens: espeak-ng's en-us transcription in IPA (its library, in-process), one unit
per espeak phoneme, each unit mapped onto talkmotion phones and onto Kokoro's symbols
(`UNITS`). Stress marks, word spaces and clause punctuation are tokens too: a stress mark's
frames go to its vowel, a space's are shared by its neighbours, punctuation's become a
pause. Two corrections make the timings the audio's:
  * the graph's durations lead the sound by about `TIMING_OFFSET_S` (measured against
    pocketsphinx's forced alignment over many clips; BENCHMARKS.md), so every time is moved
    by it;
  * the last token before the end absorbs the trailing silence, so the last phone ends
    where the sound does (`_speech_end`).
The corpus builder cross-checks every clip against an independent forced alignment
(`check_timings`) and drops clips whose timings disagree.

Voices. The package carries five style vectors (Japanese speakers: four female, one male).
A voice here is a seeded blend of some of them plus a small perturbation, so there are many
distinct speakers: `kokoro-NN` blend four of them (training); `kokoro-dev-NN` and
`kokoro-test-NN` are mostly the fifth, `HELD_OUT_STYLE`, which no training voice contains:
style vectors never used in training. Kokoro has no pitch control: every voice is fixed-pitch.

Cost: a few seconds of compute per second of audio on one core; the corpus builder runs
engines in worker processes, in parallel and resumable.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE, frame_levels_db, resample
from .clips import Phoneme
from .phonemes import VOWELS
from .tts import Synthesis, TTSError, VoiceNotInstalled, check_text, cover_audio

ENGINE = "kokoro"
KOKORO_RATE = 24_000             # the graph's output sample rate
DURATION_TENSOR = "/encoder/Clip_output_0"
DURATION_HOP = 600               # output samples per predicted duration frame (25 ms)
TIMING_OFFSET_S = -0.065         # added to every graph time: the sound comes this much earlier
MAX_TOKENS = 510                 # the style tables have one row per token count up to this
BOUNDARY_TOKEN = 0               # the graph's start/end token
SPEECH_END_BELOW_PEAK_DB = 35.0  # the last phone ends where the level falls this far below the peak
THREADS = 1                      # ORT threads per process: workers give the parallelism

BASE_STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jm_kumo", "jf_tebukuro")
HELD_OUT_STYLE = "jf_tebukuro"
TRAIN_VOICES = tuple(f"kokoro-{i:02d}" for i in range(40))
DEV_VOICES = tuple(f"kokoro-dev-{i:02d}" for i in range(12))
TEST_VOICES = tuple(f"kokoro-test-{i:02d}" for i in range(12))
BLEND_CONCENTRATION = 0.6        # Dirichlet concentration: most voices lean on one or two styles
HELD_OUT_SHARE = (0.55, 0.85)    # dev/test voices: the held-out style's share of the blend
PERTURBATION = 0.04              # style noise, as a share of each dimension's spread across styles
FIXED_PITCH_VOICES = frozenset(TRAIN_VOICES + DEV_VOICES + TEST_VOICES)
CROSS_CHECK = True     # its durations are a model's prediction: each clip is checked

SPACE, STRESS = " ", {"ˈ": 1, "ˌ": 2}
PUNCTUATION = ",.!?;:"


@dataclass(frozen=True)
class Unit:
    """One espeak phoneme: the talkmotion phones it is, and Kokoro's symbols for it."""
    phones: tuple[str, ...]
    symbols: str


def _u(phones: str, symbols: str) -> Unit:
    return Unit(tuple(phones.split()), symbols)


# espeak-ng en-us IPA phonemes → talkmotion phones and Kokoro symbols. A unit of two phones
# splits its symbols' frames between them in order.
UNITS: dict[str, Unit] = {
    # vowels
    "ə": _u("ax", "ə"), "ɐ": _u("ax", "ə"), "ɚ": _u("er", "ɚ"), "ɪ": _u("ih", "ɪ"), "ᵻ": _u("ih", "ᵻ"),
    "i": _u("iy", "i"), "iː": _u("iy", "i"), "iə": _u("iy ax", "iə"), "ɛ": _u("eh", "ɛ"), "æ": _u("ae", "æ"),
    "ɑ": _u("aa", "ɑ"), "ɑː": _u("aa", "ɑ"), "ɔ": _u("ao", "ɔ"), "ɔː": _u("ao", "ɔ"), "oː": _u("ao", "ɔ"),
    "ʌ": _u("ah", "ʌ"), "ʊ": _u("uh", "ʊ"), "u": _u("uw", "u"), "uː": _u("uw", "u"), "oʊ": _u("ow", "O"),
    "eɪ": _u("ey", "A"), "aɪ": _u("ay", "I"), "aʊ": _u("aw", "W"), "ɔɪ": _u("oy", "Y"), "ɜː": _u("er", "ɜɹ"),
    "ɜ": _u("er", "ɜɹ"), "aɪɚ": _u("ay er", "Iɚ"), "aɪə": _u("ay ax", "Iə"), "ɑːɹ": _u("aa r", "ɑɹ"),
    "ɔːɹ": _u("ao r", "ɔɹ"), "oːɹ": _u("ao r", "ɔɹ"), "ɪɹ": _u("ih r", "ɪɹ"), "ʊɹ": _u("uh r", "ʊɹ"),
    "ɛɹ": _u("eh r", "ɛɹ"), "əl": _u("ax l", "əl"), "n̩": _u("n", "ᵊn"), "l̩": _u("l", "ᵊl"),
    # consonants
    "p": _u("p", "p"), "b": _u("b", "b"), "t": _u("t", "t"), "d": _u("d", "d"), "k": _u("k", "k"),
    "ɡ": _u("g", "ɡ"), "f": _u("f", "f"), "v": _u("v", "v"), "θ": _u("th", "θ"), "ð": _u("dh", "ð"),
    "s": _u("s", "s"), "z": _u("z", "z"), "ʃ": _u("sh", "ʃ"), "ʒ": _u("zh", "ʒ"), "h": _u("hh", "h"),
    "x": _u("hh", "h"), "tʃ": _u("ch", "ʧ"), "dʒ": _u("jh", "ʤ"), "m": _u("m", "m"), "n": _u("n", "n"),
    "ŋ": _u("ng", "ŋ"), "l": _u("l", "l"), "ɬ": _u("l", "l"), "ɹ": _u("r", "ɹ"), "r": _u("r", "ɹ"),
    "w": _u("w", "w"), "j": _u("y", "j"), "ʔ": _u("t", "ʔ"), "ɾ": _u("d", "T"),
}
_IGNORED_MARKS = "\u200d\u0329\u02d1"   # zero-width joiner, syllabic mark, half-length


@dataclass
class _Token:
    """A Kokoro token and what its frames belong to: a phone (index into the phone list), a
    space (shared by neighbours), a pause, or the utterance's start/end."""
    symbol: int
    kind: str        # "phone", "space", "pause", "boundary"
    phone: int = -1


# --- voices --------------------------------------------------------------------------------

_session = None
_vocab: dict[str, int] | None = None
_styles: dict[str, np.ndarray] | None = None


def installed_voices() -> list[str]:
    """Every voice when set-up has installed Kokoro's files, else none."""
    from ..assets import KOKORO_MODEL, KOKORO_VOCAB, KOKORO_VOICES

    if not all(a.path.is_file() for a in (KOKORO_MODEL, KOKORO_VOICES, KOKORO_VOCAB)):
        return []
    return list(TRAIN_VOICES + DEV_VOICES + TEST_VOICES)


def _base_styles() -> dict[str, np.ndarray]:
    global _styles
    if _styles is None:
        from ..assets import KOKORO_VOICES, check_asset

        path = check_asset(KOKORO_VOICES)
        with np.load(path, allow_pickle=False) as npz:
            styles = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        missing = [s for s in BASE_STYLES if s not in styles]
        if missing:
            raise TTSError(f"{path}: has no style {', '.join(missing)}")
        for name, table in styles.items():
            if table.ndim != 3 or table.shape[1:] != (1, 256) or table.shape[0] < MAX_TOKENS:
                raise TTSError(f"{path}: style {name!r} has shape {table.shape}, expected "
                               f"({MAX_TOKENS}, 1, 256)")
        _styles = styles
    return _styles


def voice_style(voice: str) -> np.ndarray:
    """The (MAX_TOKENS, 256) style table of a voice: a seeded blend of the base styles."""
    if voice not in FIXED_PITCH_VOICES:
        raise VoiceNotInstalled(f"kokoro voice {voice!r} does not exist; voices are kokoro-00..kokoro-"
                                f"{len(TRAIN_VOICES) - 1:02d}, kokoro-dev-00.. and kokoro-test-00..")
    styles = _base_styles()
    rng = np.random.default_rng(zlib.crc32(voice.encode()))
    held_out = voice not in TRAIN_VOICES
    pool = [s for s in BASE_STYLES if s != HELD_OUT_STYLE]
    weights = rng.dirichlet(np.full(len(pool), BLEND_CONCENTRATION))
    table = sum(w * styles[s][:MAX_TOKENS, 0] for w, s in zip(weights, pool))
    if held_out:
        share = rng.uniform(*HELD_OUT_SHARE)
        table = share * styles[HELD_OUT_STYLE][:MAX_TOKENS, 0] + (1 - share) * table
    spread = np.std(np.stack([styles[s][:MAX_TOKENS, 0] for s in BASE_STYLES]), axis=0)
    return (table + PERTURBATION * spread * rng.standard_normal(256)).astype(np.float32)


# --- text → tokens ---------------------------------------------------------------------

def _clauses_ipa(text: str) -> list[tuple[str, str]]:
    """(IPA words separated by spaces, phonemes by "_"; the clause's closing punctuation)."""
    import ctypes

    from . import tts_espeak

    lib = tts_espeak._library()
    if lib.espeak_SetVoiceByName(b"en-us") != 0:
        raise TTSError("espeak-ng has no en-us voice, needed to transcribe text for kokoro")
    data = text.encode("utf-8")
    buffer = ctypes.create_string_buffer(data)
    pointer = ctypes.pointer(ctypes.c_char_p(ctypes.addressof(buffer)))
    ipa_mode = 0x02 | (ord("_") << tts_espeak._PHONEMES_SEPARATOR_SHIFT)
    clauses = []
    while pointer.contents.value:
        before = ctypes.cast(pointer.contents, ctypes.c_void_p).value
        result = lib.espeak_TextToPhonemes(pointer, tts_espeak._CHARS_UTF8, ipa_mode)
        after = ctypes.cast(pointer.contents, ctypes.c_void_p).value
        consumed = data[before - ctypes.addressof(buffer):(after - ctypes.addressof(buffer)) if after else None]
        marks = [c for c in consumed.decode("utf-8", "replace") if c in PUNCTUATION]
        clauses.append(((result or b"").decode("utf-8", "replace"), marks[-1] if marks else ","))
    return clauses


def tokenize(text: str, vocab: dict[str, int]) -> tuple[list[_Token], list[Phoneme]]:
    """Kokoro tokens and the phones they speak (times still unset)."""
    tokens: list[_Token] = []
    phones: list[Phoneme] = []
    for words, punctuation in _clauses_ipa(text):
        for word in words.split():
            if tokens and tokens[-1].kind == "phone":
                tokens.append(_Token(vocab[SPACE], "space"))
            for phoneme in word.split("_"):
                _add_phoneme(phoneme, tokens, phones, vocab)
        if tokens and tokens[-1].kind != "pause":
            tokens.append(_Token(vocab[punctuation], "pause"))
    if not phones:
        raise TTSError(f"kokoro: espeak-ng found nothing to say in {text[:60]!r}")
    if len(tokens) > MAX_TOKENS - 2:
        raise TTSError(f"kokoro: {text[:40]!r}... needs {len(tokens)} tokens; one clip takes at most "
                       f"{MAX_TOKENS - 2}")
    return tokens, phones


def _add_phoneme(phoneme: str, tokens: list[_Token], phones: list[Phoneme], vocab: dict[str, int]) -> None:
    stress = 0
    while phoneme[:1] in STRESS:
        stress = STRESS[phoneme[0]]
        phoneme = phoneme[1:]
    name = "".join(c for c in phoneme if c not in _IGNORED_MARKS)
    if not name:
        return
    unit = UNITS.get(name)
    if unit is None:
        raise TTSError(f"kokoro: espeak-ng phoneme {phoneme!r} has no mapping")
    first = len(phones)
    for phone in unit.phones:
        phones.append(Phoneme(phone, 0.0, 0.0, stress if phone in VOWELS else 0))
    if stress:
        tokens.append(_Token(vocab["ˈ" if stress == 1 else "ˌ"], "phone", first))
    for k, symbol in enumerate(unit.symbols):
        # split a unit's symbols over its phones in order (two phones: first half, second half)
        phone = first + min(len(unit.phones) - 1, k * len(unit.phones) // len(unit.symbols))
        tokens.append(_Token(vocab[symbol], "phone", phone))


# --- synthesis --------------------------------------------------------------------------

def _runtime():
    """The ORT session (durations exposed as a second output) and the vocabulary, once per process."""
    global _session, _vocab
    if _session is None:
        import onnx
        import onnxruntime as ort

        from ..assets import KOKORO_MODEL, KOKORO_VOCAB, check_asset

        graph = onnx.load(str(check_asset(KOKORO_MODEL)))
        if not any(DURATION_TENSOR in node.output for node in graph.graph.node):
            raise TTSError(f"{KOKORO_MODEL.path}: the graph has no {DURATION_TENSOR} (not Kokoro v1.0?)")
        graph.graph.output.append(onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.FLOAT,
                                                                      None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        _session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        _vocab = json.loads(check_asset(KOKORO_VOCAB).read_text(encoding="utf-8"))["vocab"]
    return _session, _vocab


def synthesize(text: str, voice: str, rate: float = 1.0, pitch: float = 1.0, timeout: float = 30.0) -> Synthesis:
    """Speak `text` with a Kokoro voice → 16 kHz audio (N,) and contiguous phonemes.

    `pitch` is ignored (Kokoro has no pitch control); `timeout` is not enforced here (the
    corpus builder kills a worker that takes too long).
    """
    text = check_text(text)
    style = voice_style(voice)
    session, vocab = _runtime()
    tokens, phones = tokenize(text, vocab)
    ids = np.array([[BOUNDARY_TOKEN, *(t.symbol for t in tokens), BOUNDARY_TOKEN]], np.int64)
    audio, frames = session.run(None, {"tokens": ids, "style": style[len(tokens) - 1][None],
                                       "speed": np.array([rate], np.float32)})
    audio = resample(np.asarray(audio, np.float32).reshape(-1), KOKORO_RATE)
    frames = np.asarray(frames).reshape(-1)
    if frames.size != len(tokens) + 2 or not np.isfinite(audio).all() or audio.size == 0:
        raise TTSError(f"kokoro ({voice}) returned {frames.size} durations for {len(tokens) + 2} tokens "
                       f"on {text[:60]!r}")
    timed = _timed(tokens, phones, frames, audio)
    return Synthesis(audio.astype(np.float32), cover_audio(timed, audio.size))


def _timed(tokens: list[_Token], phones: list[Phoneme], frames: np.ndarray, audio: np.ndarray) -> list[Phoneme]:
    """Phones with start/end from the tokens' frames; pauses as silences."""
    edges = TIMING_OFFSET_S + np.concatenate([[0], np.cumsum(frames)]) * DURATION_HOP / KOKORO_RATE
    spans: dict[int, list[float]] = {}
    pauses = []
    for k, token in enumerate(tokens, start=1):          # frames[0] is the start token's
        start, end = edges[k], edges[k + 1]
        if token.kind == "phone":
            span = spans.setdefault(token.phone, [start, end])
            span[1] = end
        elif token.kind == "space":
            mid = (start + end) / 2
            _stretch(spans, tokens, k, mid)
        elif end > start:
            pauses.append(Phoneme("pau", start, end))
    out = [Phoneme(p.phone, *spans[i], p.stress) for i, p in enumerate(phones) if i in spans]
    if out:
        out[-1].end = min(out[-1].end, _speech_end(audio, out[-1].start))
    return sorted(out + pauses, key=lambda p: p.start)


def _stretch(spans: dict[int, list[float]], tokens: list[_Token], k: int, mid: float) -> None:
    """A word space's first half goes to the phone before it; the phone after starts at its middle."""
    before = tokens[k - 2].phone if k >= 2 and tokens[k - 2].kind == "phone" else None
    if before is not None and before in spans:
        spans[before][1] = mid
    nxt = tokens[k].phone if k < len(tokens) and tokens[k].kind == "phone" else None
    if nxt is not None:
        spans[nxt] = [mid, mid]


def _speech_end(audio: np.ndarray, after: float) -> float:
    """Time the sound last stands within SPEECH_END_BELOW_PEAK_DB of its peak (10 ms frames)."""
    fps = 100
    levels = frame_levels_db(audio, len(audio) * fps // SAMPLE_RATE, fps)
    loud = np.nonzero(levels >= levels.max() - SPEECH_END_BELOW_PEAK_DB)[0]
    last = (loud[-1] + 1) / fps if loud.size else len(audio) / SAMPLE_RATE
    return max(last, after + 1 / fps)

