"""`talkmotion corpus align`: speech with transcripts → a phoneme-timed, rule-labelled clip set.

    talkmotion corpus align INPUT -o DATA [--speaker NAME] [--source NAME] [--split dev]
                                          [--dict my.dict] [--workers K]

INPUT is one of
  * a folder of pairs: `name.wav` (or .flac .ogg .mp3 .m4a .opus) beside
    `name.txt` (its transcript, UTF-8), searched recursively; the clip id is
    the relative path without its extension, `/` written as `-`;
  * a TSV file: `audio<TAB>transcript[<TAB>speaker]` per line (`#` starts a
    comment), audio paths relative to the file; the clip id is the audio
    file's name without extension (its relative path when two names clash);
  * a clip set (a folder with manifest*.json, e.g. from `corpus synth`): each
    clip is re-timed from its own audio and text, so a TTS engine's timings
    never grade its own voice. Its metadata (split, voice, label seed and
    style) is kept; the phonemes and the rule labels made from them are new.

Each clip is aligned by data/align.py (pocketsphinx, independent of any TTS
engine) and labelled by the viseme rules (data/visemes.py, as `corpus synth`
does). Metadata: source, speaker and voice (the same name, so `eval --by voice`
groups by it), text, the aligner, the word timings, the audio file, split, the
label seed and style. A clip whose transcript has words the dictionaries lack,
or whose transcript does not fit its audio, is skipped: its manifest entry says
why, DATA/skipped.tsv lists every skipped clip, and the rest is built. `--dict`
adds a CMU-style pronunciation file for missing words. With `--salvage` (meant for
transcripts a recogniser wrote, `corpus transcribe`), a clip whose transcript fits
only part of it keeps the longest part between pauses that fits, if it lasts
MIN_SALVAGE_S (data/align.py, `align_fitting_part`): the clip is that part, its
`text` the words in it, and `salvaged` in its metadata says where it was cut from,
the whole transcript and why the whole did not fit.

Resumable and parallel as `corpus synth` (data/jobs.py): made clips are kept,
clips skipped or failed before are tried again (a new --dict may fix them).
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TalkmotionError
from ..files import write_text
from . import jobs
from . import clips
from .clips import Clip, ClipBatch, Manifest, clip_path, read_dataset, save_clip

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")
DEFAULT_SPLIT = "dev"
DEFAULT_TIMEOUT_S = 120.0
SKIPPED_FILE = "skipped.tsv"
MIN_SALVAGE_S = 2.0       # shortest part of a misfit clip that --salvage keeps


class CorpusAlignError(TalkmotionError, ValueError):
    """An input that cannot be read as speech with transcripts; the message names it."""


@dataclass
class AlignJob:
    id: str
    audio: str            # an audio file, or a clip file when `retime`
    text: str
    speaker: str | None   # None: unknown (or, when re-timing, the clip's own voice)
    retime: bool = False  # the input is a clip whose audio and metadata are kept


# --- command line ---------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="a folder of NAME.wav + NAME.txt pairs, a TSV (audio, transcript[, speaker]) "
                             "or a clip set to re-time")
    parser.add_argument("-o", "--output", required=True, help="dataset folder (created; resumed if it exists)")
    parser.add_argument("--speaker", help="speaker name for clips that do not give one")
    parser.add_argument("--source", help="metadata `source` (default: the input's name)")
    parser.add_argument("--split", default=DEFAULT_SPLIT,
                        help=f"split written in each new clip's metadata (default {DEFAULT_SPLIT}; "
                             "re-timed clips keep theirs)")
    parser.add_argument("--input-split", metavar="SPLIT",
                        help="re-time only the clips of this split of an input clip set (e.g. test)")
    parser.add_argument("--dict", metavar="FILE", help="extra pronunciations, CMU style: `WORD  HH AH0 L OW1`")
    parser.add_argument("--salvage", action="store_true",
                        help="where a transcript fits only part of its clip (a recogniser's, missing a word), "
                             f"keep the longest part between pauses that fits, if it lasts {MIN_SALVAGE_S:g} s")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                        help="parallel worker processes (default: CPU count, at most 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds one clip may take before its worker is killed (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.workers < 1:
        raise CorpusAlignError(f"--workers must be at least 1, got {args.workers}")
    if args.dict:
        from .align import read_pronunciations

        read_pronunciations(args.dict)      # a bad file is an error now, not in every worker
    jobs_ = find_jobs(Path(args.input), args.speaker, args.input_split)
    root = Path(args.output)
    if root.resolve() == Path(args.input).resolve():
        raise CorpusAlignError(f"-o {root}: write the aligned clips to another folder than the input")
    info = {"command": "corpus align", "input": str(args.input), "dict": args.dict, "salvage": args.salvage}
    source = args.source or Path(args.input).stem
    report = build(root, jobs_, source, args.split, args.dict, args.workers, args.timeout, info,
                   progress=not args.no_progress, salvage=args.salvage)
    print(summary(report, root))
    for line in report.failures:
        print(f"talkmotion corpus: failed: {line}", file=sys.stderr)
    return 0 if report.done + report.skipped > 0 else 1


# --- finding the pairs -------------------------------------------------------------

def find_jobs(path: Path, speaker: str | None = None, input_split: str | None = None) -> list[AlignJob]:
    """The (audio, transcript) pairs of INPUT, sorted by id (see the module doc)."""
    is_clip_set = path.is_dir() and any(path.glob("manifest*.json"))
    if input_split is not None and not is_clip_set:
        raise CorpusAlignError(f"--input-split needs a clip set as INPUT; {path} is not one")
    if is_clip_set:
        return _clip_set_jobs(path, input_split)
    if path.is_file():
        return _tsv_jobs(path, speaker)
    if not path.is_dir():
        raise CorpusAlignError(f"{path}: no such folder or TSV file")
    found = []
    for audio in sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        text = audio.with_suffix(".txt")
        if text.is_file():
            found.append(AlignJob(clip_id(audio.relative_to(path).with_suffix("")), str(audio),
                                  _read_transcript(text), speaker))
    if not found:
        raise CorpusAlignError(f"{path}: no audio file with a transcript beside it "
                               f"(NAME{'/'.join(AUDIO_SUFFIXES)} + NAME.txt)")
    return _unique(found, path)


def clip_id(relative: Path) -> str:
    """A relative path without extension → a clip id usable as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(relative.parts))


def _read_transcript(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusAlignError(f"{path}: cannot read the transcript ({err})") from err


def _tsv_jobs(path: Path, speaker: str | None) -> list[AlignJob]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusAlignError(f"{path}: cannot read the list ({err})") from err
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) not in (2, 3) or not cells[0].strip() or not cells[1].strip():
            raise CorpusAlignError(f"{path}:{number}: want `audio<TAB>transcript[<TAB>speaker]`, got {line[:80]!r}")
        audio = (path.parent / cells[0].strip())
        if not audio.is_file():
            raise CorpusAlignError(f"{path}:{number}: no audio file {audio}")
        who = cells[2].strip() if len(cells) == 3 and cells[2].strip() else speaker
        found.append(AlignJob(clip_id(Path(cells[0].strip()).with_suffix("")), str(audio),
                              " ".join(cells[1].split()), who))
    if not found:
        raise CorpusAlignError(f"{path}: the list has no entries")
    names = [clip_id(Path(Path(j.audio).stem)) for j in found]
    if len(set(names)) == len(names):          # short ids where the file names are unique
        for job, name in zip(found, names):
            job.id = name
    return _unique(found, path)


def _clip_set_jobs(path: Path, split: str | None) -> list[AlignJob]:
    entries = read_dataset(path)
    if split is not None:
        entries = {k: e for k, e in entries.items() if e.get("split") == split}
        if not entries:
            raise CorpusAlignError(f"{path}: no clips in split {split!r}")
    missing = sorted(k for k, e in entries.items() if not isinstance(e.get("text"), str))
    if missing:
        raise CorpusAlignError(f"{path}: clips without a `text` in their manifest entry cannot be re-timed: "
                               f"{', '.join(missing[:5])}")
    return [AlignJob(k, e["path"], e["text"], None, retime=True) for k, e in sorted(entries.items())]


def _unique(found: list[AlignJob], where: Path) -> list[AlignJob]:
    seen: dict[str, str] = {}
    for job in found:
        if job.id in seen:
            raise CorpusAlignError(f"{where}: {seen[job.id]} and {job.audio} make the same clip id {job.id!r}")
        seen[job.id] = job.audio
    return sorted(found, key=lambda j: j.id)


# --- one clip ----------------------------------------------------------------------

def make_clip(job: AlignJob, aligner, root: Path, source: str, split: str, salvage: bool = False) -> dict:
    """Align, label and save one clip → its manifest entry; {"skipped": reason} when the aligner refuses it.
    With `salvage`, a clip whose transcript fits only part of it becomes that part (module doc)."""
    from .align import AlignError, MisfitAlignment
    from .visemes import draw_style, make_labels, style_dict

    audio, meta, style = _audio_and_meta(job, source, split)
    try:
        result = aligner.align(audio, job.text)
    except MisfitAlignment as err:
        part = aligner.align_fitting_part(audio, err, MIN_SALVAGE_S) if salvage else None
        if part is None:
            tried = f"; no part of at least {MIN_SALVAGE_S:g} s fits" if salvage else ""
            return {"skipped": f"{err}{tried}", **_job_fields(job)}
        span, result = part
        audio = span.cut(audio)
        meta.update(text=" ".join(span.words), salvaged={
            "start_s": round(span.start, 3), "end_s": round(span.end, 3), "transcript": job.text, "reason": str(err)})
    except AlignError as err:
        return {"skipped": str(err), **_job_fields(job)}
    style = style or draw_style(np.random.default_rng([meta["seed"], 1]))
    labels, mask = make_labels(result.phonemes, audio, seed=meta["seed"], style=style)
    meta.update({"style": style_dict(style), "rules": "talkmotion.data.visemes", "aligner": aligner.name,
                 "words": [[w.text, round(w.start, 3), round(w.end, 3)] for w in result.words]})
    clip = Clip(job.id, audio, labels, mask, phonemes=result.phonemes, meta=meta)
    save_clip(clip_path(root, job.id), clip)
    return clip_entry(clip, root)


def _audio_and_meta(job: AlignJob, source: str, split: str):
    """The clip's audio (N,), the metadata it starts from and its rules' Style, None for a new one
    (a re-timed clip keeps its own metadata and style)."""
    from .visemes import Style

    if job.retime:
        from .clips import load_clip

        old = load_clip(job.audio)
        meta = {**old.meta, "timings": "aligner", "retimed_from": str(job.audio)}
        meta.setdefault("seed", _seed(job.id))
        style = None
        if isinstance(old.meta.get("style"), dict):
            try:
                style = Style(**old.meta["style"])
            except TypeError:
                pass          # a style from another rules version: a fresh one is drawn from the seed
        return old.audio, meta, style
    from ..audio import load_audio

    speaker = job.speaker or "unknown"
    meta = {"source": source, "speaker": speaker, "voice": speaker, "text": job.text, "split": split,
            "audio_file": job.audio, "timings": "aligner", "seed": _seed(job.id)}
    return load_audio(job.audio), meta, None


def _seed(clip_id: str) -> int:
    """The rules' seed of a clip that has none: fixed by its id, so reruns label it the same."""
    return zlib.crc32(clip_id.encode("utf-8")) & 0x7FFFFFFF


def _job_fields(job: AlignJob) -> dict:
    return {"text": job.text, "audio_file": job.audio, "speaker": job.speaker}


META_ONLY = ("words",)      # clip metadata the manifest leaves out: the word timings


def clip_entry(clip: Clip, root: Path) -> dict:
    """The manifest entry of a saved clip (its metadata less the word timings)."""
    return clips.clip_entry(clip, root, drop=META_ONLY)


# --- the batch ---------------------------------------------------------------------

@dataclass
class AlignRunner(jobs.Runner):
    """Worker side: one aligner per worker (loading the model takes seconds), one clip per job."""

    root: str
    source: str
    split: str
    dictionary: str | None
    salvage: bool = False

    job_errors = (ValueError,)      # unreadable audio or clip: this input, not the worker

    def setup(self) -> None:
        from .align import Aligner

        self._aligner = Aligner(pronunciations=self.dictionary)

    def run(self, job: AlignJob, progress) -> dict:
        return make_clip(job, self._aligner, Path(self.root), self.source, self.split, self.salvage)


class AlignBatch(ClipBatch):
    name = "corpus align"
    meta_only = META_ONLY

    def made(self, fields: dict, job: AlignJob) -> bool:
        transcript = (fields.get("salvaged") or {}).get("transcript", fields.get("text"))
        return transcript == job.text and fields.get("timings") == "aligner"

    def describe(self, job: AlignJob) -> str:
        return f"{job.id} ({job.audio})"

    def on_done(self, job: AlignJob, entry: dict) -> None:
        if "skipped" in entry:
            self.manifest.record(job.id, "skipped", save=False, error=entry.pop("skipped"), **entry)
            self.report.tally["skipped_by_aligner"] += 1
            return
        self.report.tally["salvaged"] += "salvaged" in entry
        super().on_done(job, entry)

    def on_failed(self, job: AlignJob, reason: str) -> None:
        self.manifest.record(job.id, "failed", save=False, error=reason, **_job_fields(job))


def build(root: Path, found: list[AlignJob], source: str, split: str, dictionary: str | None, workers: int,
          timeout: float, info: dict, progress: bool = True, salvage: bool = False) -> jobs.Report:
    """Align every pair not already made; skipped and failed clips are recorded, never raised."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root, info=info)
    manifest.info.update(info)
    config = jobs.PoolConfig(workers=workers, timeout=timeout, progress=progress)
    runner = AlignRunner(str(root), source, split, dictionary, salvage)
    report = AlignBatch(root, manifest).run(found, runner, config)
    write_skipped(root, manifest, {j.id for j in found})
    return report


def write_skipped(root: Path, manifest: Manifest, ids: set[str]) -> None:
    """DATA/skipped.tsv: id, audio file, reason for every clip of this input not made."""
    rows = ["id\taudio\treason"]
    for key in sorted(ids):
        entry = manifest.entries.get(key, {})
        if entry.get("status") in ("skipped", "failed"):
            reason = " ".join(str(entry.get("error", "")).split())
            rows.append(f"{key}\t{entry.get('audio_file', '')}\t{entry['status']}: {reason}")
    write_text(root / SKIPPED_FILE, "\n".join(rows) + "\n")


def summary(report: jobs.Report, root: Path) -> str:
    skipped = report.tally["skipped_by_aligner"]
    salvaged = report.tally["salvaged"]
    part = f" ({salvaged} of them the part of their clip that fits)" if salvaged else ""
    return (f"corpus align: {report.done - skipped} clips made{part}, {skipped} skipped (see {root / SKIPPED_FILE}), "
            f"{report.skipped} already done, {report.failed} failed; {report.tally['audio_s']:.1f} s of audio "
            f"in {report.wall_seconds:.1f} s → {root / 'manifest.json'}")
