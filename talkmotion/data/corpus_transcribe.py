"""`talkmotion corpus transcribe`: speech without transcripts → (audio, transcript) pairs for `corpus align`.

    talkmotion corpus transcribe INPUT -o FOLDER [--pack-seconds 20] [--workers K]
    talkmotion corpus align FOLDER/transcripts.tsv -o DATA --dict FOLDER/guessed.dict --split train

Whisper tiny.en (asr.py, the weights set-up installs) writes down what is said, so that the
forced aligner can time its phones and the viseme rules label them: real voices with rule
labels, where `corpus teach` gives a teacher model's frames instead.

INPUT is a folder of audio files, searched recursively as `corpus teach` does; the speaker
is the first folder under INPUT (or --speaker for files directly in it). Whisper hears a
30 s window whatever the clip's length, so short clips are packed: each speaker's files, in
name order, are joined with PACK_GAP_S of silence into packs of at most --pack-seconds
(a longer file is a pack of its own, if it fits the window; a file over 30 s is refused).
FOLDER/packs/<speaker>/<n>.wav holds each pack as 16 kHz WAV; FOLDER/transcripts.tsv, written
at the end of every run, lists `audio<TAB>transcript<TAB>speaker` for each pack with text:
the TSV `corpus align` reads. Whisper's digits are spelled out (`spell_numbers`) because the
aligner's dictionary has no digits, and FOLDER/guessed.dict gives flite's pronunciations of the
other words it lacks (data/guess_words.py: names, coinages), for `corpus align --dict`. A file that cannot be decoded is
left out of its pack (its manifest entry's `dropped` names it and says why, and the run reports it);
a pack none of whose files can be decoded fails, is recorded, and the rest is built.

Resumable and parallel as the other corpus actions (data/jobs.py): FOLDER/manifest.json keeps
each pack's members and text; a rerun transcribes only what is not settled, failed packs again.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TalkmotionError
from ..files import atomic_path, write_text
from ..timing import SAMPLE_RATE
from . import jobs
from .corpus_teach import find_jobs as find_recordings

PACK_GAP_S = 0.5               # silence between the files of a pack
DEFAULT_PACK_SECONDS = 20.0
MAX_SECONDS = 30.0             # Whisper's window
DEFAULT_TIMEOUT_S = 300.0
TSV_NAME = "transcripts.tsv"
DICT_NAME = "guessed.dict"


class CorpusTranscribeError(TalkmotionError, ValueError):
    """An input or option that cannot be transcribed; the message names it."""


@dataclass(frozen=True)
class Pack:
    id: str                    # <speaker>/<n>: also the WAV's path under packs/
    speaker: str
    members: tuple[str, ...]   # audio files, in order


# --- command line ---------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="INPUT", help="a folder of audio files without transcripts")
    parser.add_argument("-o", "--output", required=True, help="folder for the packs and transcripts.tsv "
                                                              "(created; resumed if it exists)")
    parser.add_argument("--speaker", help="speaker of files directly in INPUT (default: unknown)")
    parser.add_argument("--pack-seconds", type=float, default=DEFAULT_PACK_SECONDS,
                        help=f"longest pack of joined files, in seconds (default {DEFAULT_PACK_SECONDS:g}, "
                             f"at most {MAX_SECONDS:g})")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                        help="parallel worker processes (default: CPU count, at most 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds one pack may take before its worker is killed (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.workers < 1:
        raise CorpusTranscribeError(f"--workers must be at least 1, got {args.workers}")
    if not 0 < args.pack_seconds <= MAX_SECONDS:
        raise CorpusTranscribeError(f"--pack-seconds must be in (0, {MAX_SECONDS:g}], got {args.pack_seconds}")
    source, root = Path(args.input), Path(args.output)
    if source.is_dir() and any(source.glob("manifest*.json")):
        raise CorpusTranscribeError(f"{source}: a clip set; transcribe a folder of audio files")
    from ..assets import WHISPER_TINY_EN, WHISPER_TINY_EN_VOCABULARY, check_asset

    for asset in (WHISPER_TINY_EN, WHISPER_TINY_EN_VOCABULARY):   # missing or corrupt: an error before any
        check_asset(asset)                                        # worker starts (each worker loads the model)
    packs = plan_packs(find_recordings(source, args.speaker), args.pack_seconds)
    manifest = TranscriptManifest(root / "manifest.json", {"command": "corpus transcribe", "input": str(source)})
    batch = TranscribeBatch(root, manifest)
    report = batch.run(packs, TranscribeRunner(str(root)),
                       jobs.PoolConfig(workers=args.workers, timeout=args.timeout, progress=not args.no_progress))
    written = write_tsv(root, manifest)
    guessed = guess_unknown_words(root, manifest)
    print(f"corpus transcribe: {report.done} packs transcribed, {report.skipped} already done, "
          f"{report.failed} failed, {len(batch.dropped)} undecodable files left out of their packs; {written} with text → {root / TSV_NAME}; {guessed} words the aligner "
          f"lacks guessed → {root / DICT_NAME}")
    for line in report.failures:
        print(f"talkmotion corpus: failed: {line}", file=sys.stderr)
    for line in batch.dropped:
        print(f"talkmotion corpus: left out: {line}", file=sys.stderr)
    return 0 if written else 1


# --- packing --------------------------------------------------------------------

def plan_packs(recordings, pack_seconds: float) -> list[Pack]:
    """Each speaker's files in name order, joined greedily into packs of at most `pack_seconds`.
    A file whose length cannot be read is a pack of its own, which then fails with the reason."""
    by_speaker: dict[str, list[tuple[str, float | None]]] = {}
    for rec in recordings:
        by_speaker.setdefault(rec.speaker, []).append((rec.audio, audio_seconds(rec.audio)))
    packs = []
    for speaker, files in sorted(by_speaker.items()):
        groups: list[list[str]] = []
        length = None                              # the open group's length; None: no group is open
        for path, seconds in sorted(files):
            if seconds is None:                    # unreadable: alone, and it closes the open group
                groups.append([path])
                length = None
                continue
            if seconds > MAX_SECONDS:
                raise CorpusTranscribeError(f"{path}: {seconds:.1f} s is longer than Whisper's {MAX_SECONDS:g} s "
                                            f"window; cut it first")
            if length is None or length + PACK_GAP_S + seconds > pack_seconds:
                groups.append([path])
                length = seconds
            else:
                groups[-1].append(path)
                length += PACK_GAP_S + seconds
        packs += [Pack(f"{speaker}/{n:05d}", speaker, tuple(g)) for n, g in enumerate(groups)]
    return packs


def audio_seconds(path: str) -> float | None:
    """A file's duration from its header (soundfile), by decoding it where soundfile cannot read
    it, or None where neither can."""
    import soundfile

    from ..audio import AudioError, load_audio

    try:
        return soundfile.info(path).duration
    except (RuntimeError, soundfile.LibsndfileError):
        pass
    try:
        return len(load_audio(path)) / SAMPLE_RATE
    except AudioError:
        return None


def joined(members: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """The members that decode, joined with PACK_GAP_S gaps, and `path: reason` for each that does not;
    AudioError if none does."""
    from ..audio import AudioError, load_audio

    gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE), np.float32)
    parts, dropped = [], []
    for path in members:
        try:
            audio = load_audio(path, max_seconds=MAX_SECONDS)
        except AudioError as err:
            dropped.append(str(err) if path in str(err) else f"{path}: {err}")
            continue
        parts += ([gap] if parts else []) + [audio]
    if not parts:
        raise AudioError("; ".join(dropped))
    return np.concatenate(parts), dropped


# --- numbers --------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """A whole number below a billion in English words ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10 ** 6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError(n)


def spell_numbers(text: str) -> str:
    """Digits in a transcript → words: "1,200" → "one thousand two hundred", "3rd" stays for the
    aligner to refuse (an ordinal spelled wrongly would mislabel the clip)."""
    def spell(match):
        digits = match.group(0).replace(",", "")
        return number_words(int(digits)) if len(digits) <= 9 else match.group(0)

    return re.sub(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?!\w|[,.]\d)|(?<![\w.,])\d+(?!\w|[,.]\d)", spell, text)


# --- workers and the manifest -------------------------------------------------------

@dataclass
class TranscribeRunner(jobs.Runner):
    """Worker side: one recogniser per worker, one pack per job."""

    root: str
    job_errors = (ValueError,)      # an undecodable member: this pack, not the worker

    def setup(self) -> None:
        from ..asr import WhisperRecognizer

        self._recognizer = WhisperRecognizer.installed()

    def run(self, pack: Pack, progress) -> dict:
        from ..audio import write_wav

        audio, dropped = joined(pack.members)
        wav = pack_path(Path(self.root), pack)
        wav.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(wav) as tmp:
            write_wav(tmp, audio)
        text = spell_numbers(self._recognizer.transcribe([audio])[0])
        return {"text": text, "seconds": round(len(audio) / SAMPLE_RATE, 3), **({"dropped": dropped} if dropped else {})}


def pack_path(root: Path, pack: Pack) -> Path:
    return root / "packs" / f"{pack.id}.wav"


class TranscriptManifest(jobs.Manifest):
    FORMAT = "talkmotion.transcripts"
    SECTION = "packs"
    Error = CorpusTranscribeError


class TranscribeBatch(jobs.Batch):
    name = "corpus transcribe"
    unit = "pack"

    def __init__(self, root: Path, manifest: TranscriptManifest):
        super().__init__(manifest)
        self.root = root
        self.dropped: list[str] = []     # `path: reason` of each member this run left out of its pack

    def key(self, pack: Pack) -> str:
        return pack.id

    def remaining(self, pack: Pack):
        entry = self.manifest.entries.get(pack.id)
        done = entry and entry["status"] == "done" and entry.get("members") == list(pack.members) \
            and pack_path(self.root, pack).is_file()
        return None if done else pack

    def output_folders(self):
        packs = self.root / "packs"
        return sorted(p for p in packs.iterdir() if p.is_dir()) if packs.is_dir() else []

    def owner(self, target: Path):
        packs = self.root / "packs"
        return target.relative_to(packs).with_suffix("").as_posix() if target.is_relative_to(packs) else None

    def on_done(self, pack: Pack, payload: dict) -> None:
        self.report.tally["audio_s"] += payload["seconds"]
        self.dropped += payload.get("dropped", [])
        self.manifest.record(pack.id, "done", save=False, speaker=pack.speaker, members=list(pack.members),
                             **payload)

    def on_failed(self, pack: Pack, reason: str) -> None:
        self.manifest.record(pack.id, "failed", save=False, error=reason, speaker=pack.speaker,
                             members=list(pack.members))


def write_tsv(root: Path, manifest: TranscriptManifest) -> int:
    """FOLDER/transcripts.tsv from every done pack with text (audio paths relative to it); the row count."""
    rows = [f"packs/{key}.wav\t{' '.join(entry['text'].split())}\t{entry['speaker']}"
            for key, entry in sorted(manifest.entries.items())
            if entry["status"] == "done" and entry["text"].strip()]
    write_text(root / TSV_NAME, "# audio\ttranscript\tspeaker (corpus transcribe: Whisper tiny.en)\n"
               + "".join(row + "\n" for row in rows))
    return len(rows)


def guess_unknown_words(root: Path, manifest: TranscriptManifest) -> int:
    """FOLDER/guessed.dict: flite's pronunciations of the transcripts' words the aligner lacks."""
    from .align import Aligner
    from .guess_words import unknown_words, write_guesses

    texts = [e["text"] for e in manifest.entries.values() if e["status"] == "done"]
    aligner = Aligner()
    return len(write_guesses(root / DICT_NAME, unknown_words(texts, aligner), aligner))
