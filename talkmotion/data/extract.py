"""`talkmotion extract VIDEOS... -o DATA`: training clips from talking videos, labelled by MediaPipe.

    talkmotion extract talks/ more.mp4 -o DATA [--workers K] [--shard i/n] [--clip-seconds 20]
                       [--min-face-ratio 0.5] [--landmarker PATH] [--gpu]

The stages: facetrack.py follows the face through a video (MediaPipe, resampled
to the label frame rate by timestamp), video_clips.py cuts one video into clips
with quality reports and filters, and this module finds the videos, plans them
against the manifest and runs them as a resumable batch (jobs.py), one video per
worker at a time.

Resumable: the manifest records every clip (ok / skipped) and every video
(done / failed); a rerun skips what is settled, recognises clips a killed run
wrote but never recorded, and continues a video past its settled clips. Clip
files and manifests are written atomically. `--shard i/n` (0 <= i < n) takes the
videos whose path hash falls in shard i and writes manifest.shard-i-of-n.json,
so cluster jobs never write the same file.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..audio import FPS, SUPPORTED_FPS
from . import jobs
from .clips import CLIP_SUFFIX, Manifest, clip_path, finished_clip
from .facetrack import ExtractError, check_landmarker_file
from .video import DEFAULT_MAX_SIDE
from .video_clips import Filters, VideoJob, clip_entry, clip_id, extract_video, made_by

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
TEST_PERCENT, VAL_PERCENT = 10, 10
DEFAULT_STALL_TIMEOUT_S = 600.0


# --- inputs -----------------------------------------------------------------------------

@dataclass
class InputProblem:
    path: str
    error: str


def find_videos(inputs: list[str]) -> tuple[list[Path], list[InputProblem]]:
    """Expand files and folders (recursively, video suffixes) → (sorted unique videos, unreadable inputs)."""
    found: dict[str, Path] = {}
    problems: list[InputProblem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            _walk(path, found, problems)
        elif path.exists():
            found.setdefault(os.path.abspath(path), path)
        else:
            problems.append(InputProblem(raw, "no such file or folder"))
    return [found[k] for k in sorted(found)], problems


def _walk(folder: Path, found: dict, problems: list) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        problems.append(InputProblem(str(folder), f"cannot read folder ({err.strerror or err})"))
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError as err:
            problems.append(InputProblem(str(path), f"cannot read ({err.strerror or err})"))
            continue
        if is_dir:
            _walk(path, found, problems)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.setdefault(os.path.abspath(path), path)


def video_id(path: Path) -> str:
    """Readable and unique: the file stem plus a hash of its absolute path (same names in other folders differ)."""
    key = os.path.abspath(path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40].strip("._") or "video"
    return f"{stem}-{zlib.crc32(key.encode('utf-8')):08x}"


def path_hash(path: Path) -> int:
    return zlib.crc32(os.path.abspath(path).encode("utf-8"))


def video_split(path: Path) -> str:
    """test / val / train by a hash of the video path: all clips of one video share a split."""
    bucket = zlib.crc32(b"split:" + os.path.abspath(path).encode("utf-8")) % 100
    return "test" if bucket < TEST_PERCENT else "val" if bucket < TEST_PERCENT + VAL_PERCENT else "train"


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ExtractError(f"--shard {text!r}: want i/n with 0 <= i < n, e.g. 0/4")
    return int(match[1]), int(match[2])


def manifest_name(shard: tuple[int, int]) -> str:
    i, n = shard
    return "manifest.json" if n == 1 else f"manifest.shard-{i}-of-{n}.json"


# --- the batch ----------------------------------------------------------------------------

class ExtractRunner(jobs.Runner):
    """Worker side: one video per job, each clip reported as it is settled."""

    def setup(self) -> None:
        import mediapipe  # noqa: F401 - its import takes seconds; no video's stall timer should count them

    def run(self, job: VideoJob, progress) -> dict:
        return extract_video(job, lambda status, cid, entry: progress((status, cid, entry)))


class ExtractBatch(jobs.Batch):
    """Parent side: records each clip as a worker reports it and each video as it ends."""

    name, unit = "extract", "video"

    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(manifest)
        self.root = root
        self.known: dict[str, set[int]] | None = None   # {video id: clip indices in the manifest or on disk}

    def key(self, job: VideoJob) -> str:
        return job.video_id

    def describe(self, job: VideoJob) -> str:
        return job.path

    def output_folders(self) -> list[Path]:
        return [clip_path(self.root, "x").parent]

    def owner(self, target: Path) -> str:
        return target.name.removesuffix(CLIP_SUFFIX).rpartition("-")[0]

    def remaining(self, job: VideoJob) -> VideoJob | None:
        """None when the video is done; else the job told which of its clips are settled already."""
        if video_done(self.manifest, job.video_id):
            return None
        return replace(job, settled=tuple(k for k in self.clip_indices(job.video_id) if self.settle(job, k)))

    def clip_indices(self, vid: str) -> list[int]:
        """Indices of the video's clips the manifest records or the clips folder holds."""
        if self.known is None:
            folder = clip_path(self.root, "x").parent
            names = [p.name.removesuffix(CLIP_SUFFIX) for p in folder.glob(f"*{CLIP_SUFFIX}")]
            self.known = {}
            for cid in [*self.manifest.entries, *names]:
                owner, _, index = cid.rpartition("-")
                if index.isdigit():
                    self.known.setdefault(owner, set()).add(int(index))
        return sorted(self.known.get(vid, ()))

    def settle(self, job: VideoJob, index: int) -> bool:
        """True when clip `index` needs no work: recorded as made or skipped, or made but not recorded."""
        cid = clip_id(job.video_id, index)
        entry = self.manifest.entries.get(cid)
        if entry is not None and (entry["status"] == "skipped" or self.manifest.done(cid)):
            return True
        clip = finished_clip(clip_path(self.root, cid))
        if clip is None or not made_by(clip, job, index):
            return False
        self.manifest.record(cid, "ok", save=False, **clip_entry(clip, self.root))
        self.report.tally["clips_recognised"] += 1
        return True

    def on_progress(self, job: VideoJob, message) -> None:
        status, cid, entry = message
        self.manifest.record(cid, status, save=False, **entry)
        if status == "ok":
            self.report.tally["clips_ok"] += 1
            self.report.tally["seconds_ok"] += entry["duration"]
        else:
            self.report.tally["clips_skipped"] += 1

    def on_done(self, job: VideoJob, facts: dict) -> None:
        self.manifest.record(job.video_id, "done", save=False, **self.video_fields(job), **facts)
        if "warning" in facts:
            self.report.warnings.append(f"{job.path}: {facts['warning']}")

    def on_failed(self, job: VideoJob, reason: str) -> None:
        error = reason if job.path in reason else f"{job.path}: {reason}"
        self.manifest.record(job.video_id, "failed", save=False, error=error, **self.video_fields(job))

    def video_fields(self, job: VideoJob) -> dict:
        return {"kind": "video", "video": job.path, "split": job.split,
                "clip_ids": settled_clips(self.manifest, job.video_id)}


def settled_clips(manifest: Manifest, vid: str) -> list[str]:
    """Ids of a video's clips the manifest records, in order (they are numbered from 0)."""
    ids = []
    while clip_id(vid, len(ids)) in manifest.entries:
        ids.append(clip_id(vid, len(ids)))
    return ids


def video_done(manifest: Manifest, vid: str) -> bool:
    entry = manifest.entries.get(vid)
    if not entry or entry.get("status") != "done":
        return False
    return all(manifest.done(c) for c in entry.get("clip_ids", [])
               if manifest.entries.get(c, {}).get("status") == "ok")


def plan_jobs(videos: list[Path], root: Path, shard: tuple[int, int], options: dict, split: str) -> list[VideoJob]:
    """One job per video of this shard."""
    i, n = shard
    return [VideoJob(path=str(path), video_id=video_id(path), out=str(root),
                     split=video_split(path) if split == "auto" else split, **options)
            for path in videos if path_hash(path) % n == i]


# --- summary -------------------------------------------------------------------------------

def summary_table(manifest: Manifest, video_ids: list[str]) -> str:
    """One line per video: clips kept / skipped, seconds, face and multi-face share, cuts, fps, audio."""
    header = f"{'video':<48} {'status':<7} {'kept':>4} {'skip':>4} {'sec':>7} {'face%':>6} {'multi%':>6} " \
             f"{'cuts':>4} {'fps':>6} audio"
    lines = [header, "-" * len(header)]
    for vid in video_ids:
        entry = manifest.entries.get(vid, {})
        clips = [manifest.entries[c] for c in entry.get("clip_ids", []) if c in manifest.entries]
        stats = video_stats(clips)
        name = Path(entry.get("video", vid)).name[:48]
        lines.append(f"{name:<48} {entry.get('status', '?'):<7} {stats['kept']:>4} {stats['skipped']:>4} "
                     f"{stats['seconds']:>7.1f} {stats['face_ratio']:>6.0%} {stats['multi_face_ratio']:>6.0%} "
                     f"{stats['scene_cuts']:>4} {stats['source_fps']:>6.1f} {stats['audio']}")
    return "\n".join(lines)


def video_stats(clips: list[dict]) -> dict:
    """Totals over a video's clip entries, frame-weighted ratios."""
    quality = [c["quality"] for c in clips if "quality" in c]
    frames = sum(q["frames"] for q in quality) or 1
    return {"kept": sum(c["status"] == "ok" for c in clips),
            "skipped": sum(c["status"] == "skipped" for c in clips),
            "seconds": sum(q["duration"] for q in quality),
            "face_ratio": sum(q["face_ratio"] * q["frames"] for q in quality) / frames,
            "multi_face_ratio": sum(q["multi_face_ratio"] * q["frames"] for q in quality) / frames,
            "scene_cuts": sum(q["scene_cuts"] for q in quality),
            "source_fps": quality[0]["source_fps"] if quality else 0.0,
            "audio": ("yes" if all(q["audio_present"] for q in quality) else "no") if quality else "-"}


# --- command line -----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO", help="video files or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, help="dataset folder (created; resumed if it exists)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show MediaPipe's own log lines")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="parallel worker processes, one video each (default: CPU count, at most 4)")
    parser.add_argument("--shard", default=None, metavar="i/n",
                        help="take only shard i of n (0-based) for a cluster job array")
    parser.add_argument("--clip-seconds", type=int, default=20, help="longest clip, whole seconds (default 20)")
    parser.add_argument("--fps", type=int, default=FPS, choices=SUPPORTED_FPS, help="label frame rate (default 30)")
    parser.add_argument("--split", default="auto", choices=("auto", "train", "val", "test"),
                        help="split for every clip; auto: 10%% test, 10%% val by a hash of the video path")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"scale frames down to this longest side first (default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--landmarker", default=None, help="face_landmarker.task to use (default: the installed one)")
    parser.add_argument("--landmarker-sha256", default=None,
                        help="expected SHA-256 of --landmarker when it is not the standard model")
    parser.add_argument("--gpu", action="store_true", help="MediaPipe's GPU delegate instead of the CPU")
    d = Filters()
    parser.add_argument("--min-face-ratio", type=float, default=d.min_face_ratio,
                        help=f"skip clips with one face in fewer frames than this share (default {d.min_face_ratio})")
    parser.add_argument("--max-multi-face-ratio", type=float, default=d.max_multi_face_ratio,
                        help=f"skip clips with several faces in more frames (default {d.max_multi_face_ratio})")
    parser.add_argument("--max-scene-cuts", type=int, default=None, help="skip clips with more scene cuts")
    parser.add_argument("--min-fps", type=float, default=d.min_fps,
                        help=f"skip videos with a lower source frame rate (default {d.min_fps:g})")
    parser.add_argument("--min-seconds", type=float, default=d.min_seconds,
                        help=f"skip clips shorter than this (default {d.min_seconds:g})")
    parser.add_argument("--allow-no-audio", action="store_true",
                        help="keep clips without audio (silence), e.g. for imitation data")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT_S,
                        help="seconds a worker may go without finishing a clip before it is killed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def filters_from_args(args) -> Filters:
    for name in ("min_face_ratio", "max_multi_face_ratio"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise ExtractError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    return Filters(args.min_face_ratio, args.max_multi_face_ratio, args.max_scene_cuts, args.min_fps,
                   args.min_seconds, not args.allow_no_audio)


def run(args) -> int:
    from ..assets import LANDMARKER
    from .facetrack import show_native_logs

    if args.verbose:
        show_native_logs()

    if args.workers < 1:
        raise ExtractError(f"--workers must be at least 1, got {args.workers}")
    if not args.stall_timeout > 0:
        raise ExtractError(f"--stall-timeout must be a positive number of seconds, got {args.stall_timeout}")
    if args.clip_seconds < 1:
        raise ExtractError(f"--clip-seconds must be at least 1, got {args.clip_seconds}")
    shard = parse_shard(args.shard)
    filters = filters_from_args(args)
    landmarker = Path(args.landmarker) if args.landmarker else LANDMARKER
    check_landmarker_file(landmarker, args.landmarker_sha256)
    root = Path(args.output)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExtractError(f"{root}: cannot create the dataset folder ({err.strerror or err})") from err
    videos, problems = find_videos(args.inputs)
    for p in problems:
        print(f"talkmotion extract: warning: {p.path}: {p.error}; left out", file=sys.stderr)
    if not videos:
        raise ExtractError(f"no video files found in {', '.join(args.inputs)} "
                           f"(looked for {', '.join(VIDEO_SUFFIXES)})")
    options = {"fps": args.fps, "clip_seconds": args.clip_seconds, "max_side": args.max_side,
               "landmarker": str(landmarker), "gpu": args.gpu, "filters": asdict(filters)}
    report = extract_batch(videos, root, shard, options, args.workers, args.split, args.stall_timeout,
                           problems, quiet=args.quiet)
    return 0 if report.failed == 0 and not problems else 1




def extract_batch(videos: list[Path], root: Path, shard: tuple[int, int], options: dict, workers: int,
                  split: str = "auto", stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
                  problems: list | None = None, quiet: bool = False) -> jobs.Report:
    """Extract every video of this shard not already done; failures are recorded, not raised."""
    info = {"command": "extract", "shard": f"{shard[0]}/{shard[1]}", **options}
    manifest = Manifest(root, manifest_name(shard), info=info)
    manifest.info.update(info)
    for p in problems or []:
        manifest.record(f"input:{p.path}", "failed", save=False, kind="input", video=p.path, error=p.error)
    todo = plan_jobs(videos, root, shard, options, split)
    config = jobs.PoolConfig(workers=workers, timeout=stall_timeout, timeout_flag="--stall-timeout",
                             progress=not quiet)
    report = ExtractBatch(root, manifest).run(todo, ExtractRunner(), config)
    ids = [job.video_id for job in todo]
    manifest.info["summary"] = {**report.as_dict(), "videos": {
        vid: video_stats([manifest.entries[c] for c in settled_clips(manifest, vid)]) for vid in ids}}
    manifest.save()
    if not quiet:
        print(summary_table(manifest, ids))
        tally = report.tally
        print(f"extract: {tally['clips_ok']} clips kept ({tally['seconds_ok']:.1f} s), {tally['clips_skipped']} "
              f"skipped by the filters, {report.skipped} videos already done, {report.failed} failed; "
              f"{report.wall_seconds:.1f} s → {manifest.path}")
    for line in report.warnings:
        print(f"talkmotion extract: warning: {line}", file=sys.stderr)
    for line in report.failures:
        print(f"talkmotion extract: failed: {line}", file=sys.stderr)
    return report
