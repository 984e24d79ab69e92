"""`talkmotion corpus synth`: a phoneme-timed talking corpus from local TTS engines.

    talkmotion corpus synth -o DATA --clips N [--engines festival,espeak-ng,flite,kokoro] [--workers K] [--seed S]

Clip i is fully decided by (seed, i) and the installed voices: its split, engine
(round robin), voice, rate, pitch, loudness, pauses, sentence and label style.
So a second run with the same arguments skips what is done, and a larger
--clips extends a smaller run. Each clip is made in a worker process; one that
hangs past --timeout is killed and one that crashes is replaced; either way the
clip is recorded as failed with the reason, and the rest goes on. Clip files and
the manifest are written atomically.

Held-out split (documented in the README): 10 % of clips are test, 10 % val.
  * text: a sentence's split is a hash of its words (texts.text_split), so no
    test sentence is ever spoken in train or val clips;
  * voice: festival's ked_diphone, flite's awb, kokoro's dev and test voices
    (blends of a style no training voice contains) and espeak-ng's en-029 (Caribbean)
    accent and its f4, m6 and klatt3 variants speak only test clips; train and
    val use the other festival, flite and kokoro voices and the other languages ×
    other variants.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase as fnmatch
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import TalkmotionError
from . import jobs
from .clips import Clip, ClipBatch, Manifest, clip_entry, clip_path, save_clip
from .phonemes import SILENCE
from . import tts_kokoro
from .tts import ENGINES, TTSError, check_timings, cover_audio, engine_module
from . import texts as text_source

DEFAULT_ENGINES = ("festival", "espeak-ng")
TEST_PERCENT, VAL_PERCENT = 10, 10

# Voices that speak only test clips: whole voices, and espeak-ng languages and variants.
TEST_VOICES = {"festival": ("ked_diphone",), "flite": ("awb",),
               "kokoro": tts_kokoro.DEV_VOICES + tts_kokoro.TEST_VOICES}
TEST_ESPEAK_LANGUAGES = ("en-029",)
TEST_ESPEAK_VARIANTS = ("f4", "m6", "klatt3")

# Ranges each clip draws from.
RATE_RANGE = {"festival": (0.8, 1.25), "espeak-ng": (0.75, 1.4), "flite": (0.8, 1.25), "kokoro": (0.85, 1.2)}
PITCH_RANGE = (0.85, 1.2)
ESPEAK_INTONATION_RANGE = (30, 80)     # espeak-ng's pitch range parameter (0 monotone .. 100)
PEAK_DB_RANGE = (-14.0, -1.0)          # loudness: peak level in dBFS
NOISE_DB_RANGE = (-75.0, -55.0)        # a faint noise floor so silence is not digital zero
LEAD_SILENCE_S = (0.1, 0.5)
TAIL_SILENCE_S = (0.1, 0.4)

ENGINE_TIMEOUT_SHARE = 0.8             # an engine with its own timeout gets this share of --timeout


class SynthError(TalkmotionError):
    """Arguments or machine state that prevent building a corpus."""


@dataclass
class ClipSpec:
    id: str
    index: int
    split: str
    engine: str
    voice: str
    rate: float
    pitch: float
    text: str
    seed: int
    peak_db: float
    noise_db: float
    lead_s: float
    tail_s: float
    intonation: int = 50


# --- command line -----------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", required=True, help="dataset folder (created; resumed if it exists)")
    parser.add_argument("--clips", type=int, default=10, help="number of clips (default 10, a smoke set)")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help="comma-separated TTS engines: festival, espeak-ng, flite, kokoro (default festival,espeak-ng)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="parallel worker processes (default: CPU count, at most 4)")
    parser.add_argument("--seed", type=int, default=0, help="decides every clip (default 0)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one clip may take before its worker is killed (default 30)")
    parser.add_argument("--voices", default=None,
                        help="comma-separated voices (or patterns such as 'kokoro-dev-*') to use instead of "
                             "all installed English ones")
    parser.add_argument("--texts", default=None,
                        help="a UTF-8 file with one sentence per line, instead of the built-in grammar")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.clips < 1:
        raise SynthError(f"--clips must be at least 1, got {args.clips}")
    if args.workers < 1:
        raise SynthError(f"--workers must be at least 1, got {args.workers}")
    wanted = None if args.voices is None else [v.strip() for v in args.voices.split(",") if v.strip()]
    pools = voice_pools(engines, wanted)
    lines = read_text_file(args.texts) if args.texts else None
    specs = plan(args.clips, args.seed, engines, pools, lines)
    info = {"command": "corpus synth", "seed": args.seed, "engines": engines,
            "voices": pools, "split": split_policy(), "texts": args.texts or "built-in grammar"}
    report = build(Path(args.output), specs, args.workers, args.timeout, info, progress=not args.no_progress)
    print(summary(report, Path(args.output)))
    for line in report.failures:
        print(f"talkmotion corpus: failed: {line}", file=sys.stderr)
    return 0 if report.done + report.skipped > 0 else 1


def read_text_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SynthError(f"{path}: cannot read sentences ({err})") from err
    lines = text.splitlines()
    if not lines:
        raise SynthError(f"{path}: no lines (want one sentence per line)")
    return lines


# --- planning -------------------------------------------------------------------

def split_policy() -> dict:
    return {"test_percent": TEST_PERCENT, "val_percent": VAL_PERCENT, "text": "crc32 of the sentence's words",
            "test_voices": {**{engine: list(voices) for engine, voices in TEST_VOICES.items()},
                            "espeak-ng": {"languages": list(TEST_ESPEAK_LANGUAGES),
                                          "variants": list(TEST_ESPEAK_VARIANTS)}}}


def is_test_voice(engine: str, voice: str) -> bool:
    if engine != "espeak-ng":
        return voice in TEST_VOICES.get(engine, ())
    lang, _, variant = voice.partition("+")
    return lang in TEST_ESPEAK_LANGUAGES or variant in TEST_ESPEAK_VARIANTS


def is_train_voice(engine: str, voice: str) -> bool:
    if engine != "espeak-ng":
        return voice not in TEST_VOICES.get(engine, ())
    lang, _, variant = voice.partition("+")
    return lang not in TEST_ESPEAK_LANGUAGES and variant not in TEST_ESPEAK_VARIANTS


def voice_pools(engines: list[str], wanted: list[str] | None = None) -> dict:
    """{engine: {"train": [voices], "test": [voices]}} from what is installed.

    An espeak-ng voice that mixes a test language with a train variant (or the
    reverse) is in neither pool, so no test timbre or accent reaches training.
    A requested voice that is not installed is reported and left out.
    """
    if not engines:
        raise SynthError(f"--engines is empty; choose from {', '.join(ENGINES)}")
    pools = {}
    unknown = set(wanted or ())
    for engine in engines:
        try:
            installed = engine_module(engine).installed_voices()
        except TTSError as err:
            raise SynthError(str(err)) from err
        if not installed:
            raise SynthError(f"no English {engine} voices are installed (run scripts/setup.sh)")
        voices = installed if wanted is None else [v for v in installed if any(fnmatch(v, w) for w in wanted)]
        unknown -= {w for w in unknown if any(fnmatch(v, w) for v in voices)}
        pools[engine] = {"train": [v for v in voices if is_train_voice(engine, v)],
                         "test": [v for v in voices if is_test_voice(engine, v)]}
    if unknown:
        print(f"talkmotion corpus: warning: voice(s) not installed, left out: {', '.join(sorted(unknown))}",
              file=sys.stderr)
    empty = [e for e, p in pools.items() if not p["train"] and not p["test"]]
    if empty:
        raise SynthError(f"no usable voice for engine(s) {', '.join(empty)} among --voices {','.join(wanted or [])}")
    return pools


def plan(count: int, seed: int, engines: list[str], pools: dict, lines: list[str] | None = None) -> list[ClipSpec]:
    """Clip specs 0..count-1; spec i depends only on (seed, i, engines, pools, lines)."""
    return [clip_spec(i, seed, engines, pools, lines) for i in range(count)]


def clip_spec(index: int, seed: int, engines: list[str], pools: dict, lines: list[str] | None) -> ClipSpec:
    rng = np.random.default_rng([seed, index])
    engine = engines[index % len(engines)]
    if lines is None:
        draw = rng.uniform(0, 100)
        split = "test" if draw < TEST_PERCENT else "val" if draw < TEST_PERCENT + VAL_PERCENT else "train"
        if not pools[engine]["test"] and split == "test" or not pools[engine]["train"] and split != "test":
            split = "train" if pools[engine]["train"] else "test"
        text = text_source.sentence_for_split(seed, index, split)
    else:
        text = lines[index % len(lines)]
        split = text_source.text_split(text)
    pool = pools[engine]["test" if split == "test" else "train"] or pools[engine]["train"] or pools[engine]["test"]
    voice = pool[int(rng.integers(len(pool)))]
    pitch = float(rng.uniform(*PITCH_RANGE))
    if voice in engine_module(engine).FIXED_PITCH_VOICES:
        pitch = 1.0
    return ClipSpec(
        id=f"tts{seed}-{index:06d}", index=index, split=split, engine=engine, voice=voice,
        rate=round(float(rng.uniform(*RATE_RANGE[engine])), 3), pitch=round(pitch, 3), text=text,
        seed=int(rng.integers(2 ** 31)), peak_db=round(float(rng.uniform(*PEAK_DB_RANGE)), 2),
        noise_db=round(float(rng.uniform(*NOISE_DB_RANGE)), 2),
        lead_s=round(float(rng.uniform(*LEAD_SILENCE_S)), 3), tail_s=round(float(rng.uniform(*TAIL_SILENCE_S)), 3),
        intonation=int(rng.integers(*ESPEAK_INTONATION_RANGE)))


# --- one clip -------------------------------------------------------------------

def make_clip(spec: ClipSpec, root: Path, timeout: float) -> dict:
    """Synthesize, label and save one clip; return its manifest fields. Raises TTSError."""
    from . import visemes

    engine = engine_module(spec.engine)
    extra = {"pitch_range": spec.intonation} if spec.engine == "espeak-ng" else {}
    speech = engine.synthesize(spec.text, spec.voice, spec.rate, spec.pitch, timeout=timeout, **extra)
    if engine.CROSS_CHECK:
        disagreement = check_timings(speech.audio, spec.text, speech.phonemes)
        if disagreement:
            raise TTSError(f"{spec.engine} ({spec.voice}) timings disagree with the forced alignment: "
                           f"{disagreement}")
    audio, phonemes = _stage(speech.audio, speech.phonemes, spec)
    style = visemes.draw_style(np.random.default_rng([spec.seed, 1]))
    labels, mask = visemes.make_labels(phonemes, audio, seed=spec.seed, style=style)
    meta = {**spec_fields(spec), "peak_db": spec.peak_db, "style": visemes.style_dict(style),
            "rules": "talkmotion.data.visemes"}
    if extra:
        meta["pitch_range"] = spec.intonation
    clip = Clip(spec.id, audio, labels, mask, phonemes=phonemes, meta=meta)
    path = clip_path(root, spec.id)
    save_clip(path, clip)
    return clip_entry(clip, root)


def spec_fields(spec: ClipSpec) -> dict:
    """What a clip's metadata and manifest entry say about the spec that made it."""
    return {"source": spec.engine, "voice": spec.voice, "rate": spec.rate, "pitch": spec.pitch,
            "text": spec.text, "split": spec.split, "seed": spec.seed}


def _stage(audio: np.ndarray, phonemes, spec: ClipSpec):
    """Pad with silence, set the loudness, add a faint noise floor; shift the phonemes to match."""
    rng = np.random.default_rng([spec.seed, 2])
    lead, tail = int(spec.lead_s * SAMPLE_RATE), int(spec.tail_s * SAMPLE_RATE)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = np.concatenate([np.zeros(lead, np.float32), audio * (10 ** (spec.peak_db / 20) / peak),
                            np.zeros(tail, np.float32)])
    audio = audio + rng.normal(0.0, 10 ** (spec.noise_db / 20), audio.size).astype(np.float32)
    shift = lead / SAMPLE_RATE
    moved = [type(p)(p.phone, p.start + shift, p.end + shift, p.stress) for p in phonemes]
    if not any(p.phone not in SILENCE for p in moved):
        raise TTSError(f"{spec.engine} ({spec.voice}) spoke no phonemes for {spec.text[:60]!r}")
    return np.clip(audio, -1.0, 1.0).astype(np.float32), cover_audio(moved, audio.size)


# --- the batch --------------------------------------------------------------------

@dataclass
class SynthRunner(jobs.Runner):
    """Worker side: makes one clip per job."""

    root: str
    engine_timeout: float            # festival's own limit, under the worker's so its clean message comes first

    job_errors = (ValueError,)       # TTSError, ClipError: this sentence, not the worker

    def setup(self) -> None:
        from . import visemes, tts_espeak, tts_festival, tts_flite, tts_kokoro  # noqa: F401 - warm-up imports
        from safetensors.numpy import save_file  # noqa: F401
        import scipy.signal  # noqa: F401

    def run(self, spec: ClipSpec, progress) -> dict:
        return make_clip(spec, Path(self.root), self.engine_timeout)


class CorpusBatch(ClipBatch):
    """Parent side: one job per clip spec."""

    name = "corpus synth"

    def made(self, fields: dict, spec: ClipSpec) -> bool:
        return all(fields.get(k) == v for k, v in spec_fields(spec).items())

    def describe(self, spec: ClipSpec) -> str:
        return f"{spec.id} ({spec.engine} {spec.voice}, {spec.text[:60]!r})"

    def on_failed(self, spec: ClipSpec, reason: str) -> None:
        fields = {k: v for k, v in spec_fields(spec).items() if k != "seed"}
        self.manifest.record(spec.id, "failed", save=False, error=reason, **fields)


def build(root: Path, specs: list[ClipSpec], workers: int, timeout: float, info: dict,
          progress: bool = True) -> jobs.Report:
    """Make every clip of `specs` not already made; failures are recorded, not raised."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root, info=info)
    manifest.info.update(info)
    config = jobs.PoolConfig(workers=workers, timeout=timeout, timeout_flag="--timeout", progress=progress)
    # festival's own timeout fires first (a clean message); the kill is for in-process engines
    runner = SynthRunner(str(root), ENGINE_TIMEOUT_SHARE * timeout)
    return CorpusBatch(root, manifest).run(specs, runner, config)


def summary(report: jobs.Report, root: Path) -> str:
    rate = report.done / report.wall_seconds if report.wall_seconds > 0 else 0.0
    return (f"corpus synth: {report.done} clips made, {report.skipped} already done, {report.failed} failed; "
            f"{report.tally['audio_s']:.1f} s of audio in {report.wall_seconds:.1f} s ({rate:.2f} clips/s) → "
            f"{root / 'manifest.json'}")
