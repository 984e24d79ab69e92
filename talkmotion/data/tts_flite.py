"""Flite (Debian's libflite1) as a TTS engine with phoneme timings, through ctypes.

Flite is Festival's small C sibling. Its English voices are other speakers than
festival's packaged ones, and most are made another way (statistical parametric
"clustergen" rather than diphone concatenation), so they widen the range of
voices a model trains on. Each synthesis returns an utterance whose Segment
relation lists every phone with its end time and its syllable's stress, in the
same "radio" phone set festival uses.

Rate sets the voice's duration_stretch (1 / rate). Pitch sets f0_shift, which
scales the whole F0 contour; rms ignores it (measured: its F0 stays put), so
its clips record pitch 1.0.

Synthesis runs inside the calling process, so it cannot be interrupted: the
corpus builder runs it in a worker process that it kills on a timeout.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ..audio import resample
from .clips import Phoneme
from .phonemes import VOWELS
from .tts import Synthesis, TTSError, VoiceNotInstalled, check_text, cover_audio, map_phone
from .tts_festival import PHONE_TABLE

ENGINE = "flite"
CORE_LIBRARY = "libflite.so.1"
VOICE_LIBRARY = "libflite_cmu_us_{voice}.so.1"
REGISTER = "register_cmu_us_{voice}"
# Flite's English voices (Debian's libflite1). kal, the 8 kHz copy of kal16, is left out.
ENGLISH_VOICES = ("kal16", "awb", "rms", "slt")
FIXED_PITCH_VOICES = frozenset({"rms"})
CROSS_CHECK = False    # its timings come from its own synthesis, phone by phone
STRESS_FEATURE = b"R:SylStructure.parent.stress"


class _Voice(ctypes.Structure):      # cst_voice: only its leading fields are read
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p)]


class _Wave(ctypes.Structure):       # cst_wave
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


_core = None
_voices: dict[str, ctypes.POINTER(_Voice)] = {}


def _library():
    global _core
    if _core is None:
        try:
            core = ctypes.CDLL(CORE_LIBRARY, mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            raise TTSError(f"flite library {CORE_LIBRARY} not found ({err}); run scripts/setup.sh") from None
        _declare(core)
        core.flite_init()
        _core = core
    return _core


def _declare(core) -> None:
    """Argument and result types of the flite functions used here."""
    p, s, f = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float
    for name, res, args in (
            ("flite_synth_text", p, [s, ctypes.POINTER(_Voice)]),
            ("flite_feat_set_float", None, [p, s, f]),
            ("utt_wave", ctypes.POINTER(_Wave), [p]),
            ("utt_relation", p, [p, s]),
            ("relation_head", p, [p]),
            ("item_next", p, [p]),
            ("ffeature_string", s, [p, s]),
            ("ffeature_float", f, [p, s]),
            ("delete_utterance", None, [p])):
        fn = getattr(core, name)
        fn.restype, fn.argtypes = res, args


def _voice_library(voice: str):
    try:
        return ctypes.CDLL(VOICE_LIBRARY.format(voice=voice))
    except OSError:
        return None


def installed_voices() -> list[str]:
    """Flite's English voices whose libraries this machine has (empty without flite)."""
    return [v for v in ENGLISH_VOICES if _voice_library(v) is not None]


def _voice(voice: str):
    if voice not in _voices:
        lib = _voice_library(voice) if voice in ENGLISH_VOICES else None
        if lib is None:
            raise VoiceNotInstalled(f"flite voice {voice!r} is not installed; installed: "
                                    f"{', '.join(installed_voices()) or 'none'} (run scripts/setup.sh)")
        _library()
        register = getattr(lib, REGISTER.format(voice=voice))
        register.restype, register.argtypes = ctypes.POINTER(_Voice), [ctypes.c_char_p]
        vox = register(None)
        if not vox:
            raise TTSError(f"flite could not load its voice {voice!r} ({VOICE_LIBRARY.format(voice=voice)})")
        _voices[voice] = vox
    return _voices[voice]


def synthesize(text: str, voice: str, rate: float = 1.0, pitch: float = 1.0,
               timeout: float = 30.0) -> Synthesis:
    """Speak `text` with a flite voice → 16 kHz audio (N,) and contiguous phonemes.

    `timeout` is not enforced here (the call cannot be interrupted); see module doc.
    """
    text = check_text(text)
    vox, core = _voice(voice), _library()
    core.flite_feat_set_float(vox.contents.features, b"duration_stretch", 1.0 / rate)
    core.flite_feat_set_float(vox.contents.features, b"f0_shift", pitch)
    utt = core.flite_synth_text(text.encode("ascii"), vox)
    if not utt:
        raise TTSError(f"flite ({voice}) failed on {text[:60]!r}")
    try:
        raw, sample_rate = _samples(core.utt_wave(utt))
        phonemes = _segments(core, utt)
    finally:
        core.delete_utterance(utt)
    if raw.size == 0 or not phonemes:
        raise TTSError(f"flite ({voice}) produced no speech for {text[:60]!r}")
    audio = resample(raw, sample_rate)
    return Synthesis(audio, cover_audio(phonemes, audio.size))


def _samples(wave) -> tuple[np.ndarray, int]:
    """cst_wave → (N,) float32 mono (a copy: the utterance owns the buffer) and its rate."""
    if not wave or wave.contents.num_samples <= 0:
        return np.zeros(0, np.float32), 16000
    w = wave.contents
    pcm = np.ctypeslib.as_array(w.samples, (w.num_samples * max(w.num_channels, 1),)).astype(np.float32)
    return pcm.reshape(w.num_samples, -1).mean(axis=1) / 32768.0, w.sample_rate


def _segments(core, utt) -> list[Phoneme]:
    """The Segment relation → phonemes; each starts where the previous ended."""
    phonemes, start = [], 0.0
    item = core.relation_head(core.utt_relation(utt, b"Segment"))
    while item:
        name = core.ffeature_string(item, b"name").decode("ascii", "replace")
        end = float(core.ffeature_float(item, b"end"))
        phone = map_phone(name, PHONE_TABLE, ENGINE)
        stress = (core.ffeature_string(item, STRESS_FEATURE) or b"0").decode("ascii", "replace")
        phonemes.append(Phoneme(phone, start, end, int(stress) if phone in VOWELS and stress.isdigit() else 0))
        start = end
        item = core.item_next(item)
    return phonemes
