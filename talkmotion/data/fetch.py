"""`talkmotion fetch-dataset LIST -o DIR`: talking videos named by public dataset lists, via yt-dlp.

    talkmotion fetch-dataset avspeech_train.csv -o videos/ [--min-interval 5] [--rate-limit 2M] [--limit N]
    talkmotion extract videos/segments -o DATA

List formats (--list-format, or recognised from the first row):
  avspeech  AVSpeech CSV rows: YouTube id, start s, end s[, face x, face y]
  tubes     TalkingHead-1KH *_video_tubes.txt rows: NAME, H, W, S, E, L, T, R, B where NAME is
            <YouTube id>_<one-minute chunk number> and S..E are frames inside that chunk
            (times are taken as chunk * 60 s + frame / fps of the download, so approximate)
  ids       one YouTube id per line (TalkingHead-1KH *_video_ids.txt): whole videos

Each YouTube video is downloaded once (yt-dlp, a single file with sound and
picture, at most 720p) into DIR/raw, then each segment is cut out with PyAV into
DIR/segments (H.264 picture, 16 kHz mono PCM sound, .mkv) and, unless
--keep-raw, the download is deleted once its segments are cut. Downloads are
spaced by --min-interval seconds and capped at --rate-limit bytes/s.
DIR/fetch.json records every row: ok with its file, or failed with the reason;
a rerun skips rows already settled (failed ones too unless --retry-failed).
"""

from __future__ import annotations

import csv
import glob
import math
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import TalkmotionError
from ..files import TEMP_SUFFIX, atomic_path
from . import jobs
from .video import VideoError, check_file, open_container, probe

FETCH_FORMAT = "talkmotion.fetch"
MANIFEST_NAME = "fetch.json"
LIST_FORMATS = ("avspeech", "tubes", "ids")
CHUNK_SECONDS = 60                       # TalkingHead-1KH splits downloads into one-minute chunks
YOUTUBE_URL = "https://www.youtube.com/watch?v={}"
YTDLP_FORMAT = "b[height<=720][vcodec!=none][acodec!=none]/b"   # one file with both tracks: no ffmpeg merge
DEFAULT_MIN_INTERVAL_S = 5.0
SEGMENT_SUFFIX = ".mkv"
VIDEO_CODEC = "libx264"
VIDEO_OPTIONS = {"preset": "veryfast", "crf": "20"}
OUT_TIME_BASE = Fraction(1, 1000)        # millisecond timestamps keep variable frame rates as they are
AUDIO_BLOCK = 1024                       # samples per encoded audio frame
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{6,20}")
PARTIAL_SUFFIXES = (".part", ".ytdl", TEMP_SUFFIX)   # what yt-dlp (and atomic writes) leave while downloading
DEFAULT_TIMEOUT_S = 1800.0               # a stuck download or cut; a slow one keeps reporting its rows


class FetchError(TalkmotionError, ValueError):
    """A list, row, download or cut that failed; the message names it."""


@dataclass
class FetchItem:
    id: str                               # output file stem, unique per row
    youtube_id: str
    line: int                             # 1-based line in the list file
    start: float | None = None            # seconds into the video (avspeech)
    end: float | None = None
    chunk: int | None = None              # tubes: one-minute chunk and frames inside it
    start_frame: int | None = None
    end_frame: int | None = None

    def times(self, fps: float) -> tuple[float, float] | None:
        """(start, end) seconds of the segment, None for a whole video."""
        if self.chunk is not None:
            base = self.chunk * CHUNK_SECONDS
            return base + self.start_frame / fps, base + (self.end_frame + 1) / fps
        if self.start is None:
            return None
        return self.start, self.end


# --- lists ---------------------------------------------------------------------------------

def read_list(path: str | Path, list_format: str = "auto") -> tuple[list[FetchItem], list[tuple[int, str]]]:
    """(items, problems as (line, message)) from a dataset list; bad rows are problems, not errors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FetchError(f"{path}: cannot read the list ({err})") from err
    rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(text.splitlines()), 1)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise FetchError(f"{path}: the list is empty")
    kind = guess_format(rows[0][1]) if list_format == "auto" else list_format
    if kind not in LIST_FORMATS:
        raise FetchError(f"{path}: cannot tell the list format from its first row {rows[0][1]!r}; "
                         f"pass --list-format {'|'.join(LIST_FORMATS)}")
    items, problems, seen = [], [], set()
    for line, cells in rows:
        try:
            item = PARSERS[kind](cells, line)
        except (ValueError, IndexError) as err:
            problems.append((line, f"{path}:{line}: not a {kind} row ({err})"))
            continue
        if item.id not in seen:
            seen.add(item.id)
            items.append(item)
    return items, problems


def guess_format(cells: list[str]) -> str:
    if len(cells) == 1:
        return "ids"
    if len(cells) in (3, 5):
        return "avspeech"
    if len(cells) == 9:
        return "tubes"
    return "unknown"


def _youtube_id(text: str) -> str:
    if not YOUTUBE_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a YouTube id")
    return text


def parse_avspeech(cells: list[str], line: int) -> FetchItem:
    yid, start, end = _youtube_id(cells[0]), float(cells[1]), float(cells[2])
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"segment {start}..{end} s is empty or negative")
    return FetchItem(f"{yid}_{start:.3f}_{end:.3f}", yid, line, start=start, end=end)


def parse_tubes(cells: list[str], line: int) -> FetchItem:
    name = cells[0]
    yid, _, chunk = name.rpartition("_")
    numbers = [int(c) for c in cells[1:9]]
    start_frame, end_frame = numbers[2], numbers[3]
    if end_frame < start_frame or start_frame < 0:
        raise ValueError(f"frames {start_frame}..{end_frame} are empty or negative")
    return FetchItem(f"{name}_S{start_frame}_E{end_frame}", _youtube_id(yid), line, chunk=int(chunk),
                     start_frame=start_frame, end_frame=end_frame)


def parse_ids(cells: list[str], line: int) -> FetchItem:
    yid = _youtube_id(cells[0])
    return FetchItem(yid, yid, line)


PARSERS = {"avspeech": parse_avspeech, "tubes": parse_tubes, "ids": parse_ids}


# --- downloading -------------------------------------------------------------------------

class Downloader(Protocol):
    def fetch(self, youtube_id: str, folder: Path) -> Path:
        """Download one video into `folder`; return its file. Raises FetchError."""


class YtDlpDownloader:
    """yt-dlp, one file with picture and sound, no ffmpeg needed."""

    def __init__(self, rate_limit: int | None = None, fmt: str = YTDLP_FORMAT):
        self.rate_limit, self.format = rate_limit, fmt

    def fetch(self, youtube_id: str, folder: Path) -> Path:
        import yt_dlp

        options = {"format": self.format, "outtmpl": str(folder / "%(id)s.%(ext)s"), "quiet": True,
                   "no_warnings": True, "noprogress": True, "noplaylist": True, "retries": 3}
        if self.rate_limit:
            options["ratelimit"] = self.rate_limit
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(YOUTUBE_URL.format(youtube_id), download=True)
                path = Path(ydl.prepare_filename(info))
        except yt_dlp.utils.YoutubeDLError as err:
            raise FetchError(f"{youtube_id}: download failed ({err})") from err
        if not path.is_file():
            raise FetchError(f"{youtube_id}: yt-dlp reported success but {path} is missing")
        return path


class RateLimiter:
    """At least `interval` seconds between the starts of consecutive downloads."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval, self.clock, self.sleep = interval, clock, sleep
        self.last: float | None = None

    def wait(self) -> None:
        if self.last is not None:
            remaining = self.interval - (self.clock() - self.last)
            if remaining > 0:
                self.sleep(remaining)
        self.last = self.clock()


def parse_rate(text: str | None) -> int | None:
    """'500K', '2M', '1.5M' or bytes → bytes per second."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text.strip().upper())
    if not match:
        raise FetchError(f"--rate-limit {text!r}: want bytes per second such as 500K or 2M")
    return int(float(match[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match[2]])


# --- cutting -----------------------------------------------------------------------------------

def cut_segment(src: Path, dst: Path, start: float, end: float) -> Path:
    """Frames and sound of src in [start, end) s → dst (.mkv: H.264 + 16 kHz mono PCM), atomically."""
    import av

    check_file(src)
    with atomic_path(dst) as tmp:
        try:
            with av.open(str(tmp), "w", format="matroska") as out, open_container(src) as source:
                video = _video_stream(out, source.streams.video[0])
                audio = _audio_stream(out) if source.streams.audio else None   # every stream before muxing
                frames = _copy_video(source, video, out, start, end)
                if audio is not None:
                    _copy_audio(src, audio, out, start, end)
        except av.error.FFmpegError as err:
            raise FetchError(f"{src}: cutting {start:.3f}..{end:.3f} s failed ({err})") from err
        if frames == 0:
            raise FetchError(f"{src}: no video frames between {start:.3f} and {end:.3f} s "
                             f"(the video is {probe(src).duration:.1f} s long)")
    return dst


def _seek(container, stream, seconds: float) -> None:
    if seconds > 0 and stream.time_base is not None:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)


def _stream_origin(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _video_stream(out, source):
    rate = source.average_rate or source.guessed_rate or 30
    video = out.add_stream(VIDEO_CODEC, rate=Fraction(rate).limit_denominator(1000))
    video.width, video.height = source.codec_context.width // 2 * 2, source.codec_context.height // 2 * 2
    video.pix_fmt = "yuv420p"
    video.time_base = OUT_TIME_BASE
    video.codec_context.time_base = OUT_TIME_BASE
    video.options = dict(VIDEO_OPTIONS)
    return video


def _audio_stream(out):
    audio = out.add_stream("pcm_s16le", rate=SAMPLE_RATE)
    audio.layout = "mono"
    return audio


def _copy_video(container, video, out, start: float, end: float) -> int:
    stream = container.streams.video[0]
    origin = _stream_origin(stream)
    _seek(container, stream, start + origin)
    count = 0
    for frame in container.decode(stream):
        t = float(frame.pts * frame.time_base) - origin
        if t < start:
            continue
        if t >= end:
            break
        image = frame.reformat(format="yuv420p", width=video.width, height=video.height)
        image.pts, image.time_base = int(round((t - start) / OUT_TIME_BASE)), OUT_TIME_BASE
        for packet in video.encode(image):
            out.mux(packet)
        count += 1
    for packet in video.encode():
        out.mux(packet)
    return count


def _copy_audio(src: Path, audio, out, start: float, end: float) -> None:
    """The sound of [start, end) as 16 kHz mono PCM, on the video's clock."""
    import av

    with open_container(src) as container:
        stream = container.streams.audio[0]
        origin = _stream_origin(container.streams.video[0])
        _seek(container, stream, start + origin)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pcm = np.zeros(int(round((end - start) * SAMPLE_RATE)), np.int16)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base) - origin
            if t >= end:
                break
            for chunk in resampler.resample(frame):
                _place(pcm, chunk.to_ndarray().reshape(-1), int(round((t - start) * SAMPLE_RATE)))
                t += chunk.samples / SAMPLE_RATE
    for i in range(0, pcm.size, AUDIO_BLOCK):
        block = av.AudioFrame.from_ndarray(pcm[None, i:i + AUDIO_BLOCK], format="s16", layout="mono")
        block.sample_rate, block.pts, block.time_base = SAMPLE_RATE, i, Fraction(1, SAMPLE_RATE)
        for packet in audio.encode(block):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)


def _place(pcm: np.ndarray, chunk: np.ndarray, offset: int) -> None:
    """Copy chunk into pcm at offset, clipped to pcm's bounds."""
    lo, hi = max(0, offset), min(pcm.size, offset + chunk.size)
    if hi > lo:
        pcm[lo:hi] = chunk[lo - offset:hi - offset]


# --- the batch -----------------------------------------------------------------------------------

class FetchManifest(jobs.Manifest):
    """DIR/fetch.json: every row's status, {item id: {"status": "ok" | "failed", "file" | "error", ...}}."""

    FORMAT = FETCH_FORMAT
    SECTION = "items"
    Error = FetchError

    def __init__(self, root: Path, info: dict | None = None):
        self.root = Path(root)
        super().__init__(self.root / MANIFEST_NAME, info)

    def settled(self, item: FetchItem, retry_failed: bool) -> bool:
        entry = self.entries.get(item.id)
        if not entry:
            return False
        if entry["status"] == "ok":
            return (self.root / entry["file"]).is_file()
        return not retry_failed


@dataclass
class FetchJob:
    youtube_id: str
    items: list[FetchItem]            # its rows not yet settled


@dataclass
class FetchRunner(jobs.Runner):
    """Worker side: download one video (or reuse what an earlier run left), cut each of its rows."""

    root: str
    downloader: Downloader
    keep_raw: bool = False

    def run(self, job: FetchJob, progress) -> None:
        raw, segments = Path(self.root) / "raw", Path(self.root) / "segments"
        source = downloaded(job.youtube_id, raw) or self.downloader.fetch(job.youtube_id, raw)
        for item in job.items:
            try:
                path = _segment(item, source, segments)
                progress((item.id, "ok", path.relative_to(self.root).as_posix()))
            except (FetchError, VideoError) as err:
                progress((item.id, "failed", str(err)))
        if not self.keep_raw and source.parent == raw and source.exists():
            source.unlink()


class FetchBatch(jobs.Batch):
    """Parent side: one job per video, each row recorded as it is cut; downloads spaced by the limiter."""

    name, unit = "fetch-dataset", "video"

    def __init__(self, root: Path, manifest: FetchManifest, limiter: RateLimiter, retry_failed: bool,
                 log: Callable[[str], None]):
        super().__init__(manifest)
        self.root, self.limiter, self.retry_failed, self.log = root, limiter, retry_failed, log
        self.rows: dict[str, FetchItem] = {}            # item id → row, for the workers' messages
        self.recorded: set[str] = set()                 # rows settled by this run

    def key(self, job: FetchJob) -> str:
        return job.youtube_id

    def remaining(self, job: FetchJob) -> FetchJob | None:
        self.rows.update((item.id, item) for item in job.items)
        left = [item for item in job.items if not self.settle(item)]
        self.report.tally["skipped"] += len(job.items) - len(left)
        return FetchJob(job.youtube_id, left) if left else None

    def settle(self, item: FetchItem) -> bool:
        """True when the row needs no work: recorded, or cut but not recorded (then it is recorded now)."""
        if self.manifest.settled(item, self.retry_failed):
            return True
        path = cut_file(self.root / "segments", item)
        if path is None:
            return False
        self.manifest.record(item.id, "ok", save=False, youtube_id=item.youtube_id, line=item.line,
                             file=path.relative_to(self.root).as_posix(), **_times(item))
        self.report.tally["recognised"] += 1
        return True

    def output_folders(self) -> list[Path]:
        return [self.root / "segments"]

    def owner(self, target: Path) -> str | None:
        item = self.rows.get(target.stem)
        return item.youtube_id if item else None

    def pace(self, job: FetchJob) -> None:
        if downloaded(job.youtube_id, self.root / "raw") is None:
            self.limiter.wait()
            self.report.tally["downloads"] += 1

    def on_progress(self, job: FetchJob, message) -> None:
        item_id, status, detail = message
        item = self.rows[item_id]
        fields = {"file": detail} if status == "ok" else {"error": detail}
        self._record(item, status, **fields)
        self.log(f"fetch: ok {Path(detail).name}" if status == "ok" else f"fetch: failed line {item.line}: {detail}")

    def on_done(self, job: FetchJob, payload) -> None:
        pass                                            # each row was recorded as it was cut

    def on_failed(self, job: FetchJob, reason: str) -> None:
        """The download failed, or the worker died: the rows not yet recorded fail with the reason."""
        for item in job.items:
            if item.id not in self.recorded:
                self._record(item, "failed", error=reason)
                self.log(f"fetch: failed line {item.line}: {reason}")

    def _record(self, item: FetchItem, status: str, **fields) -> None:
        self.manifest.record(item.id, status, save=False, youtube_id=item.youtube_id, line=item.line,
                             **fields, **_times(item))
        self.report.tally[status] += 1
        self.recorded.add(item.id)


def fetch(items: list[FetchItem], root: Path, downloader: Downloader, limiter: RateLimiter,
          retry_failed: bool = False, keep_raw: bool = False, info: dict | None = None,
          log: Callable[[str], None] = lambda line: None, workers: int = 0,
          timeout: float | None = None) -> jobs.Report:
    """Download and cut every item not already settled; failures are recorded, not raised.

    workers=0 runs in this process (a downloader that cannot cross to a worker
    process, as in tests); the command line uses one worker, so a download or a
    cut that hangs past `timeout` is killed and recorded. The report's tally
    counts rows: ok, failed, skipped (settled before), recognised, downloads.
    """
    (root / "raw").mkdir(parents=True, exist_ok=True)
    (root / "segments").mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[FetchItem]] = {}
    for item in items:
        by_video.setdefault(item.youtube_id, []).append(item)
    todo = [FetchJob(yid, rows) for yid, rows in by_video.items()]
    config = jobs.PoolConfig(workers=workers, timeout=timeout, timeout_flag="--timeout", progress=False)
    batch = FetchBatch(root, FetchManifest(root, info), limiter, retry_failed, log)
    return batch.run(todo, FetchRunner(str(root), downloader, keep_raw), config)


def _times(item: FetchItem) -> dict:
    return {k: v for k, v in asdict(item).items() if k not in ("id", "youtube_id", "line") and v is not None}


def downloaded(yid: str, raw: Path) -> Path | None:
    """A whole download an earlier run left in raw/ (yt-dlp's partial files aside), None when there is none."""
    done = sorted(p for p in raw.glob(f"{yid}.*") if p.suffix not in PARTIAL_SUFFIXES)
    return done[0] if done else None


def cut_file(segments: Path, item: FetchItem) -> Path | None:
    """The row's cut in segments/ if a whole, readable one is there (a killed run may not have recorded it)."""
    for path in sorted(segments.glob(f"{glob.escape(item.id)}.*")):
        try:
            if path.suffix != TEMP_SUFFIX and probe(path).duration > 0:
                return path
        except VideoError:
            continue                                    # not whole: cut it again
    return None


def _segment(item: FetchItem, source: Path, segments: Path) -> Path:
    """Cut the item's part of the download (or take the whole file) into segments/."""
    info = probe(source)
    times = item.times(info.fps or 30.0)
    if times is None:
        dst = segments / f"{item.id}{source.suffix}"
        with atomic_path(dst) as tmp:
            shutil.copyfile(source, tmp)
        return dst
    return cut_segment(source, segments / f"{item.id}{SEGMENT_SUFFIX}", *times)


# --- command line ---------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("list", help="AVSpeech CSV, TalkingHead-1KH tubes or ids list")
    parser.add_argument("-o", "--output", required=True, help="folder for raw/, segments/ and fetch.json")
    parser.add_argument("--list-format", default="auto", choices=("auto",) + LIST_FORMATS,
                        help="list format (default: recognised from the first row)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--min-interval", type=float, default=DEFAULT_MIN_INTERVAL_S,
                        help=f"seconds between download starts (default {DEFAULT_MIN_INTERVAL_S:g})")
    parser.add_argument("--rate-limit", default=None, help="download bandwidth cap, bytes/s (e.g. 2M)")
    parser.add_argument("--retry-failed", action="store_true", help="try rows that failed before again")
    parser.add_argument("--keep-raw", action="store_true", help="keep whole downloads after cutting")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds a download or cut may go without progress before it is stopped and "
                             f"recorded as failed (default {DEFAULT_TIMEOUT_S:g})")


def run(args) -> int:
    items, problems = read_list(args.list, args.list_format)
    if args.limit is not None:
        items = items[:max(0, args.limit)]
    root = Path(args.output)
    if args.min_interval < 0:
        raise FetchError(f"--min-interval must be >= 0, got {args.min_interval}")
    if not args.timeout > 0:
        raise FetchError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    downloader = YtDlpDownloader(parse_rate(args.rate_limit))
    for _, message in problems:
        print(f"talkmotion fetch-dataset: warning: {message}; row left out", file=sys.stderr)
    info = {"list": str(args.list), "min_interval": args.min_interval, "rate_limit": args.rate_limit,
            "problems": [m for _, m in problems]}
    report = fetch(items, root, downloader, RateLimiter(args.min_interval), args.retry_failed, args.keep_raw,
                   info, log=lambda line: print(line, file=sys.stderr), workers=1, timeout=args.timeout)
    rows = report.tally
    print(f"fetch-dataset: {rows['ok']} segments ok, {rows['failed']} failed, {rows['skipped']} already settled, "
          f"{rows['downloads']} downloads → {root / MANIFEST_NAME}")
    return 0 if rows["failed"] == 0 and not problems else 1
