"""espeak-ng (libespeak-ng1) as a TTS engine with phoneme timings, through ctypes.

The library, initialised with phoneme events, calls back with audio chunks and
events; each espeakEVENT_PHONEME carries the phoneme's mnemonic and its first
sample. A phoneme ends where the next begins. Events carry no stress, so the
same text is also turned into a phoneme string (espeak_TextToPhonemes), whose
stress marks are matched onto the events' vowels in order.

The library keeps state from one utterance to the next (pitch flutter phase, voice
attributes a variant leaves behind, the wave generator's buffers): the same call
gave different audio, up to 95 ms longer, depending on what that process had
spoken before, so a corpus depended on how clips fell to workers. Each utterance
is therefore spoken in a copy of the process forked right after the library was
initialised (it never speaks in the calling process): every clip starts from the
same state, whatever the worker, the order or a resume. The copy also makes the
call interruptible: it is killed at `timeout`.

A voice is `language[+variant]`, e.g. `en-us+f3`: one of espeak-ng's English
voices with one of its variants (other speakers: pitch, formants, breath).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import subprocess
import time

import numpy as np

from ..audio import resample
from .clips import Phoneme
from .phonemes import VOWELS
from .tts import Synthesis, TTSError, VoiceNotInstalled, check_text, cover_audio, map_phone

ENGINE = "espeak-ng"
LIBRARY = "libespeak-ng.so.1"
BINARY = "espeak-ng"

NOMINAL_WPM = 175      # espeak-ng's default speaking rate (words per minute) = rate 1.0
NOMINAL_PITCH = 50     # espeak-ng's default base pitch on its 0..100 scale = pitch 1.0
MIN_WPM, MAX_WPM = 80, 450

# espeak.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_PHONEMES_SEPARATOR_SHIFT = 8
_STRESS_MARKS = {"'": 1, ",": 2}

# espeak-ng's English phoneme mnemonics → talkmotion phones.
PHONE_TABLE: dict[str, str] = {
    # vowels
    "a": "ae", "a#": "ax", "aa": "aa", "A:": "aa", "A@": "aa", "A": "aa", "A#": "aa",
    "@": "ax", "@2": "ax", "@5": "ax", "@L": "ax", "@#": "ax", "3": "er", "3:": "er", "@r": "er",
    "aI": "ay", "aI@": "ay", "aI3": "ay", "aU": "aw", "aU@": "aw",
    "e": "eh", "E": "eh", "E2": "eh", "E3": "eh", "e@": "eh", "eI": "ey", "e#": "eh",
    "i": "iy", "i:": "iy", "i@": "iy", "i@3": "iy", "I": "ih", "I2": "ih", "I#": "ih", "i#": "ih",
    "VR": "er", "IR": "er", "aI2": "ay", "0": "ao", "0#": "ao", "O:": "ao", "O@": "ao", "O": "ao", "o@": "ao", "oU": "ow", "o": "ow",
    "OI": "oy", "u:": "uw", "u": "uw", "U": "uh", "U@": "uh", "V": "ah", "Q": "aa",
    # consonants
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g", "f": "f", "v": "v",
    "T": "th", "D": "dh", "s": "s", "z": "z", "S": "sh", "Z": "zh", "h": "hh", "x": "hh",
    "tS": "ch", "dZ": "jh", "m": "m", "n": "n", "N": "ng", "l": "l", "r": "r", "w": "w", "j": "y",
    "t#": "t", "d#": "d", "?": "t", "r-": "r", "l/": "l", "l#": "l", "n-": "n", "m-": "m", "w#": "w",
    "hw": "w", "c": "k", "C": "hh", "R": "r", "z/": "z", "s/": "s",
}
# Variants that sound like a person (espeak-ng also ships robots, whispers, croaks).
HUMAN_VARIANTS = frozenset(
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 adam Alex Alicia Andrea Andy "
    "Annie antonio aunty belinda benjamin boris caleb david edward grandma grandpa john linda max "
    "michael norbert paul pablo robert steph travis victor".split())
FIXED_PITCH_VOICES: frozenset = frozenset()   # every espeak-ng voice takes the pitch setting
CROSS_CHECK = False    # its timings come from its own synthesis, phone by phone
PAUSE_PREFIX = "_"     # espeak-ng's pause phonemes: _ _: _! _| ...

_lib = None
_state: dict = {"chunks": [], "events": []}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


def _on_synth(wav, num_samples, events):
    """Library callback: keep the audio chunk and the phoneme events; 0 = go on."""
    if num_samples > 0:
        _state["chunks"].append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        if events[i].type == _EVENT_PHONEME:
            _state["events"].append((bytes(events[i].id.string).split(b"\0")[0].decode("ascii", "replace"),
                                     events[i].sample))
        i += 1
    return 0


_callback = _CALLBACK_TYPE(_on_synth)   # module-level: the library keeps a pointer to it


def _library():
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as err:
            raise TTSError(f"espeak-ng library {LIBRARY} not found ({err}); run scripts/setup.sh") from None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                     _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise TTSError("espeak-ng failed to initialise (its data files may be missing)")
        lib.espeak_SetSynthCallback(_callback)
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.sample_rate = rate
        _lib = lib
    return _lib


def _list(kind: str) -> list[tuple[str, str]]:
    """(language-or-name, file) rows of `espeak-ng --voices=kind`."""
    try:
        out = subprocess.run([BINARY, f"--voices={kind}"], capture_output=True, text=True, timeout=30).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            rows.append((parts[1], parts[4]))
    return rows


def installed_languages() -> list[str]:
    """espeak-ng's own English voices by file name (`en` is British English), lower case.

    mbrola voices need the mbrola synthesizer and its databases, so they are left out.
    """
    return sorted({file.split("/")[-1].lower() for lang, file in _list("en")
                   if lang.startswith("en") and not file.startswith("mb/")})


def installed_variants() -> list[str]:
    return sorted({file.split("/", 1)[1] for _, file in _list("variant") if file.startswith("!v/")})


def installed_voices() -> list[str]:
    """Every English language × human-sounding variant, plus each language's own default voice."""
    langs = installed_languages()
    variants = [v for v in installed_variants() if v in HUMAN_VARIANTS]
    return langs + [f"{lang}+{v}" for lang in langs for v in variants]


def check_voice(voice: str) -> None:
    lang, _, variant = voice.partition("+")
    if lang not in installed_languages() or (variant and variant not in installed_variants()):
        raise VoiceNotInstalled(f"espeak-ng voice {voice!r} is not installed; languages: "
                                f"{', '.join(installed_languages()) or 'none'}; variants: e.g. "
                                f"{', '.join(installed_variants()[:8])}")


def synthesize(text: str, voice: str, rate: float = 1.0, pitch: float = 1.0, timeout: float = 30.0,
               pitch_range: int = 50) -> Synthesis:
    """Speak `text` with an espeak-ng voice → 16 kHz audio (N,) and contiguous phonemes.

    Spoken in a fresh copy of the library's state (module doc), killed after `timeout` s.
    """
    text = check_text(text)
    check_voice(voice)
    lib = _library()
    raw, events, stresses = _in_fresh_copy(lambda: _speak(lib, text, voice, rate, pitch, pitch_range), timeout,
                                           f"espeak-ng ({voice})")
    phonemes = _phonemes(events, raw.size, lib.sample_rate, stresses)
    audio = resample(raw, lib.sample_rate)
    return Synthesis(audio, cover_audio(phonemes, audio.size))


def _speak(lib, text: str, voice: str, rate: float, pitch: float, pitch_range: int):
    """One utterance in this process → (int16 samples, [(phoneme, first sample)], vowel stresses)."""
    if lib.espeak_SetVoiceByName(voice.encode("ascii")) != 0:
        raise VoiceNotInstalled(f"espeak-ng refused voice {voice!r}")
    lib.espeak_SetParameter(_PARAM_RATE, int(np.clip(NOMINAL_WPM * rate, MIN_WPM, MAX_WPM)), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(np.clip(NOMINAL_PITCH * pitch, 0, 100)), 0)
    lib.espeak_SetParameter(_PARAM_RANGE, int(np.clip(pitch_range, 0, 100)), 0)
    stresses = _vowel_stresses(lib, text)
    _state["chunks"], _state["events"] = [], []
    data = text.encode("ascii")
    if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None) != 0:
        raise TTSError(f"espeak-ng ({voice}) failed on {text[:60]!r}")
    lib.espeak_Synchronize()
    if not _state["chunks"]:
        raise TTSError(f"espeak-ng ({voice}) produced no audio for {text[:60]!r}")
    return np.concatenate(_state["chunks"]), list(_state["events"]), stresses


def _in_fresh_copy(speak, timeout: float, what: str):
    """Run `speak()` in a forked copy of this process and return its (samples, events, stresses).

    The copy sends back a JSON header (events, stresses, or the error) and the int16 samples.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the copy: speak, send, exit without cleanup
        os.close(read_end)
        status = 0
        try:
            samples, events, stresses = speak()
            body = np.ascontiguousarray(samples, "<i2").tobytes()
            header = {"events": events, "stresses": stresses}
        except TTSError as err:
            body, header = b"", {"error": str(err), "voice_missing": isinstance(err, VoiceNotInstalled)}
        except BaseException as err:              # noqa: BLE001 - reported to the caller, in words
            body, header, status = b"", {"error": f"{what} crashed: {err!r}"}, 1
        try:
            _write_all(write_end, _pack(header, body))
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        data = _read_all(read_end, pid, timeout, what)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    header, body = _unpack(data, what)
    if "error" in header:
        raise (VoiceNotInstalled if header.get("voice_missing") else TTSError)(header["error"])
    events = [(str(name), int(sample)) for name, sample in header["events"]]
    return np.frombuffer(body, "<i2").astype(np.float32) / 32768.0, events, [int(s) for s in header["stresses"]]


def _pack(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def _unpack(data: bytes, what: str) -> tuple[dict, bytes]:
    if len(data) < 8:
        raise TTSError(f"{what}: the synthesis process ended without an answer")
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]), data[8 + size:]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int, pid: int, timeout: float, what: str) -> bytes:
    """Everything the copy writes, or TTSError (the copy killed) once `timeout` passes."""
    parts, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            raise TTSError(f"{what}: took more than {timeout:g} s; stopped")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def _phonemes(events, total_samples: int, sr: int, stresses: list[int]) -> list[Phoneme]:
    out = []
    for k, (name, sample) in enumerate(events):
        end = events[k + 1][1] if k + 1 < len(events) else total_samples
        if end <= sample:
            continue
        if not re.search(r"[A-Za-z@0-9?_]", name):     # a bare modifier (";" palatal): part of the previous
            if out:
                out[-1].end = end / sr
            continue
        phone = _phone(name)
        out.append(Phoneme(phone, sample / sr, end / sr))
    vowels = [p for p in out if p.phone in VOWELS]
    if len(vowels) == len(stresses):      # otherwise leave stress unknown (0) rather than misplace it
        for p, s in zip(vowels, stresses):
            p.stress = s
    return out


def _phone(name: str) -> str:
    return "pau" if name.startswith(PAUSE_PREFIX) else map_phone(name, PHONE_TABLE, ENGINE)


def _vowel_stresses(lib, text: str) -> list[int]:
    """Stress of each vowel, in order, from espeak's phoneme transcription of `text`."""
    buffer = ctypes.c_char_p(text.encode("ascii"))
    pointer = ctypes.pointer(buffer)
    stresses: list[int] = []
    while pointer.contents.value:
        result = lib.espeak_TextToPhonemes(pointer, _CHARS_UTF8, ord("|") << _PHONEMES_SEPARATOR_SHIFT)
        for word in (result or b"").decode("ascii", "replace").split():
            for token in word.split("|"):
                mark = _STRESS_MARKS.get(token[:1], 0)
                name = re.sub(r"^[',=]+", "", token)
                if re.search(r"[A-Za-z@0-9?]", name) and _phone(name) in VOWELS:
                    stresses.append(mark)
    return stresses
