"""Festival (Debian's `festival` package) as a TTS engine with phoneme timings.

One `festival -b` process per sentence runs a small Scheme script: select the
voice, set rate and pitch, synthesize, save the wave and every segment's end
time with its syllable's stress. A hung or crashed festival is killed after
`timeout` seconds and reported as a TTSError; the caller goes on.

Rate: diphone voices stretch festival's durations (Duration_Stretch = 1/rate);
the HTS voice takes hts_engine's speed option (-r), which scales the durations
it reports as well. Pitch: diphone voices scale their intonation model's target
mean F0; the HTS voice ignores pitch (its F0 model has no such knob), so its
clips record pitch 1.0.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..audio import resample
from .clips import Phoneme
from .phonemes import VOWELS
from .tts import Synthesis, TTSError, TTSTimeout, VoiceNotInstalled, check_text, cover_audio, map_phone

ENGINE = "festival"
VOICE_ROOT = Path("/usr/share/festival/voices")
# Tests point this at a stand-in executable to exercise hangs and crashes.
BINARY = os.environ.get("TALKMOTION_FESTIVAL", "festival")

# English voices Debian packages (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts).
ENGLISH_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
HTS_VOICES = frozenset({"cmu_us_slt_arctic_hts"})
FIXED_PITCH_VOICES = HTS_VOICES
CROSS_CHECK = False    # its timings come from its own synthesis, phone by phone
DEFAULT_TARGET_F0 = {"kal_diphone": 105.0, "ked_diphone": 105.0}   # their int_lr_params
DEFAULT_TARGET_F0_STD = {"kal_diphone": 14.0, "ked_diphone": 15.0}

# Festival's "radio" phone set → talkmotion phones (most are already ours).
PHONE_TABLE: dict[str, str] = {
    **{p: p for p in ("aa ae ah ao aw ax ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t "
                      "th uh uw v w y z zh").split()},
    "axr": "er", "dx": "d", "el": "l", "em": "m", "en": "n", "nx": "n", "hv": "hh",
    "pau": "pau", "h#": "pau", "brk": "pau", "#": "pau", "sil": "pau",
}

_SCRIPT = """
(voice_{voice})
{settings}
(define (tm_save_segs utt file)
  (let ((fd (fopen file "w")))
    (mapcar (lambda (s)
      (format fd "%s %f %s\\n" (item.name s) (item.feat s "end")
              (item.feat s "R:SylStructure.parent.stress")))
      (utt.relation.items utt 'Segment))
    (fclose fd)))
(set! tm_utt (Utterance Text "{text}"))
(utt.synth tm_utt)
(utt.save.wave tm_utt "{wav}" 'riff)
(tm_save_segs tm_utt "{segs}")
"""


def installed_voices() -> list[str]:
    """English festival voices present on this machine (empty if festival is missing)."""
    found = {p.name for p in VOICE_ROOT.glob("*/*") if p.is_dir()}
    return [v for v in ENGLISH_VOICES if v in found]


def _settings(voice: str, rate: float, pitch: float) -> str:
    if voice in HTS_VOICES:
        return f"(set! hts_engine_params (append hts_engine_params (list '(\"-r\" {rate:.4f}))))"
    f0 = DEFAULT_TARGET_F0.get(voice, 105.0) * pitch
    std = DEFAULT_TARGET_F0_STD.get(voice, 14.0) * pitch
    return (f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})\n"
            f"(set! int_lr_params '((target_f0_mean {f0:.2f}) (target_f0_std {std:.2f}) "
            f"(model_f0_mean 170) (model_f0_std 34)))")


def _scheme_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def synthesize(text: str, voice: str, rate: float = 1.0, pitch: float = 1.0,
               timeout: float = 30.0) -> Synthesis:
    """Speak `text` with a festival voice → 16 kHz audio (N,) and contiguous phonemes."""
    text = check_text(text)
    if voice not in installed_voices():
        raise VoiceNotInstalled(f"festival voice {voice!r} is not installed; installed: "
                                f"{', '.join(installed_voices()) or 'none'} (run scripts/setup.sh)")
    with tempfile.TemporaryDirectory(prefix="talkmotion-festival-") as tmp:
        wav, segs, script = Path(tmp, "out.wav"), Path(tmp, "out.segs"), Path(tmp, "go.scm")
        script.write_text(_SCRIPT.format(voice=voice, settings=_settings(voice, rate, pitch),
                                         text=_scheme_string(text), wav=wav, segs=segs), encoding="ascii")
        _run_festival(script, voice, text, timeout)
        if not wav.exists() or not segs.exists():
            raise TTSError(f"festival ({voice}) wrote no audio for {text[:60]!r}")
        audio = _read_wav(wav)
        phonemes = _read_segs(segs.read_text(encoding="latin-1"))
    if audio.size == 0 or not phonemes:
        raise TTSError(f"festival ({voice}) produced no speech for {text[:60]!r}")
    return Synthesis(audio, cover_audio(phonemes, audio.size))


def _run_festival(script: Path, voice: str, text: str, timeout: float) -> None:
    try:
        done = subprocess.run([BINARY, "-b", str(script)], capture_output=True, timeout=timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        raise TTSTimeout(f"festival ({voice}) hung for more than {timeout:g} s on {text[:60]!r}") from None
    except FileNotFoundError:
        raise TTSError(f"festival executable {BINARY!r} not found (run scripts/setup.sh)") from None
    if done.returncode != 0:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
        tail = done.stderr.decode("latin-1").strip().splitlines()[-1:] or [""]
        raise TTSError(f"festival ({voice}) crashed ({why}) on {text[:60]!r}: {tail[0][:200]}")


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), sr)


def _read_segs(text: str) -> list[Phoneme]:
    """Lines `name end stress` → phonemes; each starts where the previous ended."""
    phonemes, start = [], 0.0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, end = parts[0], float(parts[1])
        stress = int(float(parts[2])) if len(parts) > 2 and parts[2].replace(".", "").isdigit() else 0
        phone = map_phone(name, PHONE_TABLE, ENGINE)
        phonemes.append(Phoneme(phone, start, end, stress if phone in VOWELS else 0))
        start = end
    return phonemes
