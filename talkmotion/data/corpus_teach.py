"""`talkmotion corpus teach`: speech without transcripts → clips labelled by a teacher model.

    talkmotion corpus teach INPUT -o DATA [--model quality] [--source NAME] [--speaker NAME]
                                          [--val-share 0.1] [--workers K]

A teacher (by default the quality model, whose Whisper encoder was trained on real speech)
hears each recording, and its own frames, before any post-processing, become the clip's
labels. A small model trained on such clips learns from speech that no rule can label:
real voices with no transcript. INPUT is
  * a folder of audio files (.wav .flac .ogg .mp3 .m4a .opus), searched recursively; the
    clip id is the relative path without its extension (as `corpus align`), the speaker
    the first folder under INPUT (or --speaker for files directly in it);
  * a clip set (a folder with manifest*.json): each clip's audio is heard again, its
    metadata (split, voice) kept, its labels replaced.

Only the mouth and brows the teacher predicts are valid labels (the clip's mask); its head
angles, and the channels it leaves to post-processing, are masked out, so a student keeps
learning those from rule-labelled clips. A new clip's split is `val` for a fixed share of
speakers chosen by name (--val-share; so no voice is in both splits), `train` otherwise.
Metadata: source, speaker and voice, audio_file, split, `labels: teacher` and the teacher's
model name. A file that cannot be decoded is recorded as failed and the rest is built.

Resumable and parallel as the other corpus actions (data/jobs.py): made clips are kept
unless the teacher changed, failed ones are tried again.
"""

from __future__ import annotations

import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import labels
from ..errors import TalkmotionError
from . import jobs
from .clips import Clip, ClipBatch, Manifest, as_stored, clip_path, read_dataset, save_clip
from .corpus_align import AUDIO_SUFFIXES, META_ONLY, clip_entry, clip_id

DEFAULT_TEACHER = "quality"
DEFAULT_VAL_SHARE = 0.1
DEFAULT_TIMEOUT_S = 300.0
MAX_CLIP_SECONDS = 600.0     # a longer recording is refused: cut it first


class CorpusTeachError(TalkmotionError, ValueError):
    """An input or option `corpus teach` cannot use; the message names it."""


@dataclass
class TeachJob:
    id: str
    audio: str               # an audio file, or a clip file when `relabel`
    speaker: str
    relabel: bool = False    # the input is a clip whose audio and metadata are kept...
    split: str | None = None  # ...and its split in its clip set's manifest


# --- command line ---------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="INPUT", help="a folder of audio files (no transcripts) or a clip set")
    parser.add_argument("-o", "--output", required=True, help="dataset folder (created; resumed if it exists)")
    parser.add_argument("--model", default=DEFAULT_TEACHER,
                        help=f"the teacher: an embedded model name, exported folder or checkpoint "
                             f"(default {DEFAULT_TEACHER})")
    parser.add_argument("--source", help="metadata `source` (default: the input's name)")
    parser.add_argument("--speaker", help="speaker of files directly in INPUT (default: unknown)")
    parser.add_argument("--val-share", type=float, default=DEFAULT_VAL_SHARE,
                        help=f"share of speakers whose new clips go to the val split (default {DEFAULT_VAL_SHARE})")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                        help="parallel worker processes (default: CPU count, at most 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds one clip may take before its worker is killed (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.workers < 1:
        raise CorpusTeachError(f"--workers must be at least 1, got {args.workers}")
    if not 0.0 <= args.val_share < 1.0:
        raise CorpusTeachError(f"--val-share must be in [0, 1), got {args.val_share}")
    root, source = Path(args.output), Path(args.input)
    if root.resolve() == source.resolve():
        raise CorpusTeachError(f"-o {root}: write the taught clips to another folder than the input")
    teacher = teacher_name(args.model)
    found = find_jobs(source, args.speaker)
    info = {"command": "corpus teach", "input": str(source), "teacher": teacher}
    runner = TeachRunner(str(root), args.source or source.stem, str(args.model), teacher, args.val_share)
    report = build(root, found, runner, jobs.PoolConfig(workers=args.workers, timeout=args.timeout,
                                                        progress=not args.no_progress), info)
    print(f"corpus teach: {report.done} clips made by {teacher}, {report.skipped} already done, "
          f"{report.failed} failed; {report.tally['audio_s']:.1f} s of audio in {report.wall_seconds:.1f} s "
          f"→ {root / 'manifest.json'}")
    for line in report.failures:
        print(f"talkmotion corpus: failed: {line}", file=sys.stderr)
    return 0 if report.done + report.skipped > 0 else 1


def teacher_name(model: str) -> str:
    """The teacher's model name (recorded in every clip); loading it here makes a bad
    --model an error before any worker starts."""
    from ..runtime import load_model

    return load_model(model).name


# --- finding the recordings --------------------------------------------------------

def find_jobs(path: Path, speaker: str | None = None) -> list[TeachJob]:
    """The recordings of INPUT, sorted by id (see the module doc)."""
    if path.is_dir() and any(path.glob("manifest*.json")):
        return [TeachJob(k, e["path"], str(e.get("voice") or e.get("speaker") or "unknown"), relabel=True,
                         split=e.get("split")) for k, e in sorted(read_dataset(path).items())]
    if not path.is_dir():
        raise CorpusTeachError(f"{path}: no such folder")
    found, seen = [], {}
    for audio in sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        relative = audio.relative_to(path)
        job = TeachJob(clip_id(relative.with_suffix("")), str(audio),
                       relative.parts[0] if len(relative.parts) > 1 else (speaker or "unknown"))
        if job.id in seen:
            raise CorpusTeachError(f"{path}: {seen[job.id]} and {audio} make the same clip id {job.id!r}")
        seen[job.id] = audio
        found.append(job)
    if not found:
        raise CorpusTeachError(f"{path}: no audio file ({', '.join(AUDIO_SUFFIXES)}) in it")
    return found


def split_of(speaker: str, val_share: float) -> str:
    """`val` for a fixed share of speakers (by a hash of the name), `train` for the rest."""
    return "val" if (zlib.crc32(speaker.encode("utf-8")) % 1000) < val_share * 1000 else "train"


# --- one clip ----------------------------------------------------------------------

def taught_labels(teacher, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's own frames of `audio` → (labels (T, C), mask (T, C)): valid where the
    teacher predicts a blendshape; head angles and the rest masked out."""
    from ..animate import animate_pcm

    values = animate_pcm(teacher, audio, raw=True).values
    if not np.all(np.isfinite(values)):
        raise CorpusTeachError("the teacher gave non-finite frames")
    valid = np.zeros(labels.NUM_CHANNELS, bool)
    valid[labels.indices(sorted(set(teacher.predicted) & set(labels.BLENDSHAPES)))] = True
    return values.astype(np.float32), np.broadcast_to(valid, values.shape).copy()


def _audio_and_meta(job: TeachJob, runner: "TeachRunner"):
    """The clip's audio (N,), the metadata it starts from and its phonemes (a clip set's are
    kept: they still time its audio; a recording has none)."""
    if job.relabel:
        from .clips import load_clip

        old = load_clip(job.audio)
        meta = {**old.meta, "relabelled_from": str(job.audio), "split": job.split or old.meta.get("split", "train")}
        return old.audio, meta, old.phonemes
    from ..audio import load_audio

    audio = load_audio(job.audio, max_seconds=MAX_CLIP_SECONDS)
    return audio, {"source": runner.source, "speaker": job.speaker, "voice": job.speaker,
                   "audio_file": job.audio, "split": split_of(job.speaker, runner.val_share)}, None


@dataclass
class TeachRunner(jobs.Runner):
    """Worker side: one teacher per worker, one clip per job."""

    root: str
    source: str
    model: str
    teacher: str             # its name, recorded in each clip
    val_share: float

    job_errors = (ValueError,)      # unreadable audio or clip: this input, not the worker

    def setup(self) -> None:
        from ..runtime import load_model

        self._teacher = load_model(self.model)

    def run(self, job: TeachJob, progress) -> dict:
        audio, meta, phonemes = _audio_and_meta(job, self)
        audio = as_stored(audio)        # labels of the audio the clip will hold
        values, mask = taught_labels(self._teacher, audio)
        meta.update({"labels": "teacher", "teacher": self.teacher})
        clip = Clip(job.id, audio, values, mask, phonemes=phonemes, meta=meta)
        save_clip(clip_path(self.root, job.id), clip)
        return clip_entry(clip, Path(self.root))


class TeachBatch(ClipBatch):
    name = "corpus teach"
    meta_only = META_ONLY

    def __init__(self, root: Path, manifest: Manifest, teacher: str):
        super().__init__(root, manifest)
        self.teacher = teacher

    def made(self, fields: dict, job: TeachJob) -> bool:
        return fields.get("teacher") == self.teacher

    def describe(self, job: TeachJob) -> str:
        return f"{job.id} ({job.audio})"

    def on_failed(self, job: TeachJob, reason: str) -> None:
        self.manifest.record(job.id, "failed", save=False, error=reason, audio_file=job.audio, speaker=job.speaker)


def build(root: Path, found: list[TeachJob], runner: TeachRunner, config: jobs.PoolConfig, info: dict) -> jobs.Report:
    """Teach every recording not already taught by this teacher; failures are recorded, never raised."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root, info=info)
    manifest.info.update(info)
    return TeachBatch(root, manifest, runner.teacher).run(found, runner, config)
