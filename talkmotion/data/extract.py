"""`talkmotion extract VIDEOS... -o DATA`: training clips from talking videos, labelled by MediaPipe.

    talkmotion extract talks/ more.mp4 -o DATA [--workers K] [--shard i/n] [--clip-seconds 20]
                       [--min-face-ratio 0.5] [--landmarker PATH] [--gpu]

Per video: frames are decoded one at a time (PyAV) and tracked by MediaPipe's
FaceLandmarker in VIDEO mode (it follows the face from frame to frame instead of
detecting it afresh). Each tracked frame gives the 52 ARKit blendshapes and the
head pose from the facial transformation matrix. Labels are resampled to the
model frame rate by timestamp, so variable-rate and 24/25/60 fps videos line up
with the audio, which is decoded to 16 kHz mono from the same time origin.
A video is cut into clips of at most --clip-seconds; each clip gets a quality
report and is kept, or skipped with the reason, by the filters.

Label frames where MediaPipe finds no face, or more than one, are masked
invalid (the whole row). tongueOut is always masked (MediaPipe lacks it). The
head translation (cm, camera frame) is kept in the clip metadata.

Resumable: the manifest records every clip (ok / skipped / failed) and every
video (done / failed); a rerun skips what is settled and continues a video
from its first unsettled clip. Clip files and manifests are written atomically.
`--shard i/n` (0 <= i < n) takes the videos whose path hash falls in shard i and
writes manifest.shard-i-of-n.json, so cluster jobs never write the same file.

Head pose. MediaPipe's facial transformation matrix maps the canonical face
(X toward the subject's left, Y up, Z out of the face) into a camera frame with
X to the image right, Y up and Z toward the viewer. For a subject facing the
camera that is the glTF/VRM frame of labels.py seen from the front (the avatar
faces +Z, its left is +X), so the matrix's rotation is the head rotation as
is: R = Ry(yaw) · Rx(pitch) · Rz(roll). An in-plane counter-clockwise turn of
the image tips the head toward the subject's right shoulder, positive roll
(tests/test_extract.py checks it on a rotating photo).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import sys
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import labels
from ..audio import FPS, SAMPLE_RATE, SUPPORTED_FPS
from ..errors import TalkmotionError
from ..workers import WorkerProcess
from .clips import Clip, ClipError, Manifest, clip_path, save_clip
from .video import (DEFAULT_MAX_SIDE, AudioTrack, FrameRateMeter, VideoError, first_video_time, iter_frames,
                    probe)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
MAX_FACES = 2                    # face counts are capped here: 2 means "more than one"
FACE_COUNT_INTERVAL_S = 0.2      # how often the face detector counts faces (s)
FACE_COUNT_CONFIDENCE = 0.5      # its minimum detection score
DETECTOR_MEMBER = "face_detector.tflite"
# A target time this close (as a fraction of the source interval) to a source frame uses that frame alone.
SNAP_FRACTION = 1e-3
# Scene cuts: luminance histograms of consecutive frames further apart than this (L1, 0..2).
SCENE_CUT_DISTANCE = 0.6
HISTOGRAM_BINS = 32
HISTOGRAM_STRIDE = 4             # every 4th pixel in each direction is plenty for a histogram
# The audio track may end this much before the video without losing label frames (zeros fill in).
AUDIO_END_TOLERANCE_S = 0.1
# A video decoding to less than this share of the length its header states is reported as truncated.
TRUNCATED_RATIO = 0.9
SILENT_PEAK = 1e-3               # an audio track whose peak stays below this is treated as absent
TEST_PERCENT, VAL_PERCENT = 10, 10
MANIFEST_SAVE_EVERY_S = 2.0
WORKER_POLL_S = 0.2
TRANSLATION_DECIMALS = 2


class ExtractError(TalkmotionError, ValueError):
    """Arguments, inputs or a landmarker that prevent extraction; the message names what is wrong."""


# --- head pose -----------------------------------------------------------------------

def pose_from_matrix(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe facial transformation matrix (4, 4) → (pitch, yaw, roll degrees (3,), translation cm (3,)).

    R = Ry(yaw) Rx(pitch) Rz(roll) (see the module docstring for why no axes flip);
    the rotation is orthonormalised first, since the matrix may carry a little scale.
    """
    m = np.asarray(matrix, np.float64).reshape(4, 4)
    u, _, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    pitch = math.asin(float(np.clip(-r[1, 2], -1.0, 1.0)))
    yaw = math.atan2(r[0, 2], r[2, 2])
    roll = math.atan2(r[1, 0], r[1, 1])
    return np.degrees([pitch, yaw, roll]).astype(np.float32), m[:3, 3].astype(np.float32)


# --- tracking ------------------------------------------------------------------------

@dataclass
class FaceResult:
    faces: int                       # faces MediaPipe found (0, 1, or 2 meaning "more than one")
    values: np.ndarray               # (C,) label row; zeros unless faces == 1
    valid: np.ndarray                # (C,) bool
    translation: np.ndarray          # (3,) cm, NaN unless faces == 1

    @classmethod
    def empty(cls, faces: int) -> "FaceResult":
        return cls(faces, np.zeros(labels.NUM_CHANNELS, np.float32), np.zeros(labels.NUM_CHANNELS, bool),
                   np.full(3, np.nan, np.float32))


def check_landmarker_file(path: Path, sha256: str | None = None) -> Path:
    """The landmarker model if its SHA-256 is the expected one (the standard model's unless given)."""
    from ..assets import LANDMARKER_SHA256, AssetError, check_landmarker

    try:
        check_landmarker(Path(path), sha256 or LANDMARKER_SHA256)
    except AssetError as err:
        hint = "" if sha256 else "; pass --landmarker-sha256 HEX to use a different model on purpose"
        raise ExtractError(f"{err}{hint}") from err
    return Path(path)


class FaceTracker:
    """MediaPipe FaceLandmarker in VIDEO mode (one per video, frames in time order), plus a face count.

    The landmarker follows one face from frame to frame. Asking it for two
    would run its face detector on every frame while only one face is seen
    (a fifth more time per frame), so a second face is looked for instead by
    the bundle's own face detector every FACE_COUNT_INTERVAL_S: a frame counts
    as several faces when the latest count saw more than one.
    """

    def __init__(self, path: str, gpu: bool = False):
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        delegate = BaseOptions.Delegate.GPU if gpu else BaseOptions.Delegate.CPU
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=path, delegate=delegate),
            running_mode=vision.RunningMode.VIDEO, num_faces=1,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        detector = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=detector_model(path), delegate=delegate),
            running_mode=vision.RunningMode.IMAGE, min_detection_confidence=FACE_COUNT_CONFIDENCE)
        try:
            self.landmarker = vision.FaceLandmarker.create_from_options(options)
            self.detector = vision.FaceDetector.create_from_options(detector)
        except (RuntimeError, ValueError) as err:
            raise ExtractError(f"{path}: cannot start MediaPipe FaceLandmarker"
                               f"{' with the GPU delegate' if gpu else ''} ({err})") from err
        self.last_ms = -1
        self.counted_at = -math.inf
        self.count = 0

    def track(self, rgb: np.ndarray, seconds: float) -> FaceResult:
        """One RGB frame (H, W, 3) uint8 at `seconds` → its face result."""
        import mediapipe as mp

        ms = max(int(round(seconds * 1000)), self.last_ms + 1)  # VIDEO mode wants rising timestamps
        self.last_ms = ms
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if seconds - self.counted_at >= FACE_COUNT_INTERVAL_S:
            self.count, self.counted_at = len(self.detector.detect(image).detections), seconds
        found = self.landmarker.detect_for_video(image, ms)
        if not found.face_landmarks or not found.face_blendshapes or not found.facial_transformation_matrixes:
            return FaceResult.empty(0)
        if self.count > 1:
            return FaceResult.empty(MAX_FACES)
        weights, valid = labels.from_mediapipe({c.category_name: c.score for c in found.face_blendshapes[0]})
        angles, translation = pose_from_matrix(np.asarray(found.facial_transformation_matrixes[0]))
        values = np.concatenate([weights, angles]).astype(np.float32)
        return FaceResult(1, values, np.concatenate([valid, np.ones(labels.NUM_HEAD, bool)]), translation)

    def close(self) -> None:
        self.landmarker.close()
        self.detector.close()


def detector_model(landmarker: str) -> bytes:
    """The face detector inside the landmarker bundle (a zip), for counting faces."""
    try:
        with zipfile.ZipFile(landmarker) as bundle:
            return bundle.read(DETECTOR_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise ExtractError(f"{landmarker}: not a face landmarker bundle with {DETECTOR_MEMBER} ({err})") from err


def blend(a: FaceResult, b: FaceResult, w: float) -> FaceResult:
    """Result at fraction w between two tracked frames; linear when both hold one face."""
    if a.faces == 1 and b.faces == 1:
        return FaceResult(1, (1 - w) * a.values + w * b.values, a.valid & b.valid,
                          (1 - w) * a.translation + w * b.translation)
    return a if w < 0.5 else b


def luminance_histogram(rgb: np.ndarray) -> np.ndarray:
    """(HISTOGRAM_BINS,) normalised histogram of the green channel, a cheap stand-in for luminance."""
    green = rgb[::HISTOGRAM_STRIDE, ::HISTOGRAM_STRIDE, 1]
    counts = np.bincount((green >> 3).ravel(), minlength=HISTOGRAM_BINS)
    return counts / max(1, green.size)


@dataclass
class TrackedFrame:
    index: int                       # label frame index at the model frame rate
    result: FaceResult
    cut: bool                        # a scene cut happened since the previous label frame


class _SourcePair:
    """Tracks a source frame at most once, in time order, when a label frame needs it."""

    def __init__(self, tracker: FaceTracker):
        self.tracker = tracker
        self.cache: dict[int, FaceResult] = {}

    def result(self, frame) -> FaceResult:
        if frame.index not in self.cache:
            self.cache = {k: v for k, v in self.cache.items() if k > frame.index - 2}
            self.cache[frame.index] = self.tracker.track(frame.rgb, frame.time)
        return self.cache[frame.index]

    def at(self, prev, cur, w: float) -> FaceResult:
        if w <= SNAP_FRACTION:
            return self.result(prev)
        if w >= 1 - SNAP_FRACTION:
            return self.result(cur)
        return blend(self.result(prev), self.result(cur), w)


def track_video(path: str | Path, tracker: FaceTracker, fps: int = FPS, max_side: int = DEFAULT_MAX_SIDE,
                start_frame: int = 0, meter: FrameRateMeter | None = None) -> Iterator[TrackedFrame]:
    """Label frames i >= start_frame of a video, resampled to `fps` by timestamp.

    Label frame i is the face at time i / fps, interpolated between the two
    source frames around it (only those are tracked, so a 60 fps video costs
    about as much as a 30 fps one). After the last source frame, label frames
    continue for one source-frame duration. Frames before start_frame are
    decoded but not tracked (resuming).
    """
    meter = meter or FrameRateMeter()
    pair = _SourcePair(tracker)
    prev, prev_hist, cut_pending, i = None, None, False, 0
    for cur in iter_frames(path, max_side):
        meter.add(cur.time)
        hist = luminance_histogram(cur.rgb)
        if prev is not None:
            while i / fps < cur.time:
                if i >= start_frame:
                    w = (i / fps - prev.time) / (cur.time - prev.time)
                    yield TrackedFrame(i, pair.at(prev, cur, w), cut_pending)
                    cut_pending = False
                i += 1
            cut_pending |= float(np.abs(hist - prev_hist).sum()) > SCENE_CUT_DISTANCE
        prev, prev_hist = cur, hist
    end = prev.time + (meter.frame_duration or 1.0 / fps)
    while (i + 0.5) / fps <= end:    # a label frame the video covers at least half of
        if i >= start_frame:
            yield TrackedFrame(i, pair.result(prev), cut_pending)
            cut_pending = False
        i += 1


# --- clips ------------------------------------------------------------------------------

@dataclass
class Filters:
    min_face_ratio: float = 0.5        # share of frames with exactly one face
    max_multi_face_ratio: float = 0.1  # share of frames with more than one face
    max_scene_cuts: int | None = None  # None: any number
    min_fps: float = 15.0              # source frame rate
    min_seconds: float = 1.0           # clip duration
    require_audio: bool = True

    def reasons(self, q: dict) -> list[str]:
        """Why a clip with quality report q is left out (empty: keep it)."""
        out = []
        if q["frames"] == 0:
            return ["no frames left once the audio track ended"]
        if q["face_ratio"] < self.min_face_ratio:
            out.append(f"face in {q['face_ratio']:.0%} of frames (< --min-face-ratio {self.min_face_ratio:g})")
        if q["multi_face_ratio"] > self.max_multi_face_ratio:
            out.append(f"several faces in {q['multi_face_ratio']:.0%} of frames "
                       f"(> --max-multi-face-ratio {self.max_multi_face_ratio:g})")
        if self.max_scene_cuts is not None and q["scene_cuts"] > self.max_scene_cuts:
            out.append(f"{q['scene_cuts']} scene cuts (> --max-scene-cuts {self.max_scene_cuts})")
        if q["source_fps"] < self.min_fps:
            out.append(f"source {q['source_fps']:.1f} fps (< --min-fps {self.min_fps:g})")
        if q["duration"] < self.min_seconds:
            out.append(f"{q['duration']:.2f} s long (< --min-seconds {self.min_seconds:g})")
        if self.require_audio and not q["audio_present"]:
            out.append("no audio" + (" track" if not q["audio_track"] else " (silent track)"))
        return out


@dataclass
class VideoJob:
    path: str
    video_id: str
    split: str
    out: str
    fps: int = FPS
    clip_seconds: int = 20
    max_side: int = DEFAULT_MAX_SIDE
    start_clip: int = 0                # first clip not yet settled (resume)
    landmarker: str = ""
    gpu: bool = False
    filters: dict = field(default_factory=dict)


class _Segment:
    """Label rows of one clip as they arrive."""

    def __init__(self, index: int, length: int):
        self.index, self.length = index, length
        self.values = np.zeros((length, labels.NUM_CHANNELS), np.float32)
        self.valid = np.zeros((length, labels.NUM_CHANNELS), bool)
        self.translation = np.full((length, 3), np.nan, np.float32)
        self.faces = np.zeros(length, np.int8)
        self.cuts = 0
        self.filled = 0

    def add(self, row: int, frame: TrackedFrame) -> None:
        r = frame.result
        self.values[row], self.valid[row], self.translation[row], self.faces[row] = \
            r.values, r.valid, r.translation, min(r.faces, MAX_FACES)
        self.cuts += int(frame.cut and row > 0)
        self.filled = row + 1


def clip_id(video_id: str, segment: int) -> str:
    return f"{video_id}-{segment:04d}"


def extract_video(job: VideoJob, emit) -> dict:
    """Track one video and write its clips; `emit(status, id, entry)` reports each settled clip.

    Returns video-level facts (frame rate, decoded vs stated length, a warning
    when the file looks truncated). Raises VideoError / ExtractError for the
    video as a whole; clips already emitted stay valid.
    """
    stated = probe(job.path).duration
    filters = Filters(**job.filters)
    length = job.clip_seconds * job.fps
    meter = FrameRateMeter()
    origin = first_video_time(job.path)
    audio = AudioTrack(job.path, origin)
    tracker = FaceTracker(job.landmarker, job.gpu)
    try:
        start = job.start_clip * length
        for _ in range(job.start_clip):          # audio of settled clips, read past a clip at a time
            audio.take(job.clip_seconds * SAMPLE_RATE)
        segment = _Segment(job.start_clip, length)
        for frame in track_video(job.path, tracker, job.fps, job.max_side, start, meter):
            row = frame.index - segment.index * length
            if row >= length:
                emit(*finish_segment(job, segment, audio, meter, filters))
                segment = _Segment(segment.index + 1, length)
                row -= length
            segment.add(row, frame)
        if segment.filled:
            emit(*finish_segment(job, segment, audio, meter, filters))
    finally:
        tracker.close()
        audio.close()
    decoded = (meter.last or 0.0) + meter.frame_duration
    facts = {"source_fps": round(meter.fps, 3), "variable_fps": meter.variable,
             "decoded_seconds": round(decoded, 3), "stated_seconds": round(stated, 3)}
    if stated and decoded < TRUNCATED_RATIO * stated:
        facts["warning"] = f"decoded {decoded:.2f} s of the {stated:.2f} s the file states: truncated?"
    return facts


def finish_segment(job: VideoJob, seg: _Segment, audio: AudioTrack, meter: FrameRateMeter,
                   filters: Filters) -> tuple[str, str, dict]:
    """Audio for the segment, quality report, filters; save the clip → ("ok"|"skipped", id, entry)."""
    frames = seg.filled
    want = int(math.floor(frames * SAMPLE_RATE / job.fps))
    pcm, real = audio.take(want)
    if real < want - AUDIO_END_TOLERANCE_S * SAMPLE_RATE and audio.present:
        frames = int(math.floor(real * job.fps / SAMPLE_RATE))     # the audio ended: so does the clip
        want = int(math.floor(frames * SAMPLE_RATE / job.fps))
        pcm = pcm[:want]
    cid = clip_id(job.video_id, seg.index)
    quality = quality_report(seg, frames, pcm, audio, meter, job.fps)
    entry = {"source": "video", "video": job.path, "segment": seg.index,
             "start": seg.index * job.clip_seconds, "split": job.split, "quality": quality,
             "duration": round(frames / job.fps, 4)}
    reasons = filters.reasons(quality)
    if reasons:
        return "skipped", cid, {**entry, "reason": "; ".join(reasons)}
    mask = seg.valid[:frames].copy()
    meta = {**entry, "fps": job.fps,
            "head_translation_cm": [None if np.isnan(t).any() else [round(float(v), TRANSLATION_DECIMALS)
                                                                   for v in t] for t in seg.translation[:frames]]}
    clip = Clip(cid, pcm, seg.values[:frames], mask, fps=job.fps, meta=meta)
    path = clip_path(job.out, cid)
    save_clip(path, clip)
    return "ok", cid, {**entry, "file": path.relative_to(job.out).as_posix(), "duration": round(clip.duration, 4)}


def quality_report(seg: _Segment, frames: int, pcm: np.ndarray, audio: AudioTrack, meter: FrameRateMeter,
                   fps: int) -> dict:
    faces = seg.faces[:frames]
    n = max(1, frames)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    return {"frames": int(frames), "duration": round(frames / fps, 4),
            "face_ratio": round(float((faces == 1).sum()) / n, 4),
            "multi_face_ratio": round(float((faces > 1).sum()) / n, 4),
            "no_face_ratio": round(float((faces == 0).sum()) / n, 4),
            "scene_cuts": int(seg.cuts), "source_fps": round(meter.fps, 3), "variable_fps": meter.variable,
            "audio_track": audio.present, "audio_present": audio.present and peak >= SILENT_PEAK,
            "audio_peak": round(peak, 5)}


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

@dataclass
class Report:
    videos: int = 0
    videos_done: int = 0
    videos_skipped: int = 0
    videos_failed: int = 0
    clips_ok: int = 0
    clips_skipped: int = 0
    seconds_ok: float = 0.0
    wall_seconds: float = 0.0
    failures: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def first_unsettled_clip(manifest: Manifest, vid: str) -> int:
    """Clips of a video are made in order; resume after the last settled one."""
    k = 0
    while True:
        entry = manifest.entries.get(clip_id(vid, k))
        settled = entry is not None and (entry["status"] == "skipped" or manifest.done(clip_id(vid, k)))
        if not settled:
            return k
        k += 1


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


def remove_partial(root: Path, vid: str) -> None:
    """A killed run cannot clean its temporary files; this video's are removed before it is redone."""
    folder = clip_path(root, vid).parent
    if folder.is_dir():
        for tmp in folder.glob(f".{vid}-*.tmp"):
            tmp.unlink(missing_ok=True)


def plan_jobs(videos: list[Path], manifest: Manifest, root: Path, shard: tuple[int, int], options: dict,
              split: str) -> tuple[list[VideoJob], int]:
    """Jobs for this shard's videos that are not done → (jobs, number already done)."""
    i, n = shard
    jobs, done = [], 0
    for path in videos:
        if path_hash(path) % n != i:
            continue
        vid = video_id(path)
        if video_done(manifest, vid):
            done += 1
            continue
        remove_partial(root, vid)
        jobs.append(VideoJob(path=str(path), video_id=vid, split=video_split(path) if split == "auto" else split,
                             out=str(root), start_clip=first_unsettled_clip(manifest, vid), **options))
    return jobs, done


def _worker_main(conn) -> None:
    """Worker process: extract videos sent by the parent until it sends None."""
    while True:
        try:
            job = conn.recv()
        except EOFError:          # the parent is gone
            return
        if job is None:
            return
        job = VideoJob(**job)

        def emit(status, cid, entry):
            conn.send(("clip", status, cid, entry))

        try:
            facts = extract_video(job, emit)
            conn.send(("video", "done", job.video_id, facts))
        except (VideoError, ExtractError, ClipError) as err:
            conn.send(("video", "failed", job.video_id, str(err)))


class _Worker(WorkerProcess):
    """An extraction worker: one video at a time, reporting each clip as it is settled."""

    def __init__(self, ctx):
        super().__init__(ctx, _worker_main)


class _Batch:
    """Parent side: hands videos to workers, records what they report."""

    def __init__(self, root: Path, manifest: Manifest, report: Report, stall_timeout: float, progress):
        self.root, self.manifest, self.report = root, manifest, report
        self.stall_timeout, self.progress = stall_timeout, progress

    def on_clip(self, job: VideoJob, status: str, cid: str, entry: dict) -> None:
        self.manifest.record(cid, status, save=False, **entry)
        if status == "ok":
            self.report.clips_ok += 1
            self.report.seconds_ok += entry["duration"]
        else:
            self.report.clips_skipped += 1

    def on_video(self, job: VideoJob, status: str, payload) -> None:
        """payload: the video's facts when done, the error message when failed."""
        clip_ids = settled_clips(self.manifest, job.video_id)
        fields = {"kind": "video", "video": job.path, "split": job.split, "clip_ids": clip_ids}
        if status == "done":
            self.report.videos_done += 1
            self.manifest.record(job.video_id, "done", save=False, **fields, **payload)
            if "warning" in payload:
                self.report.warnings.append(f"{job.path}: {payload['warning']}")
        else:
            self.report.videos_failed += 1
            self.report.failures.append(payload if job.path in payload else f"{job.path}: {payload}")
            self.manifest.record(job.video_id, "failed", save=False, error=self.report.failures[-1], **fields)
        self.progress(job)

    def run(self, jobs: list[VideoJob], workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        pool = [_Worker(ctx) for _ in range(min(workers, len(jobs)))]
        queue, last_save = list(reversed(jobs)), time.monotonic()
        try:
            while queue or any(w.job for w in pool):
                for w in pool:
                    if w.job is None and queue:
                        w.give(queue.pop())
                busy = [w for w in pool if w.job]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=WORKER_POLL_S)
                for k, w in enumerate(pool):
                    if w.job is not None and not self._serve(w, ready):
                        pool[k] = _Worker(ctx)
                if time.monotonic() - last_save > MANIFEST_SAVE_EVERY_S:
                    self.manifest.save()
                    last_save = time.monotonic()
        finally:
            for w in pool:
                w.stop()
            self.manifest.save()

    def _serve(self, w: _Worker, ready) -> bool:
        """Take a worker's messages; False when it died or stalled and must be replaced."""
        while w.job is not None and w.conn in ready and w.conn.poll():
            try:
                kind, status, name, payload = w.conn.recv()
            except (EOFError, OSError):
                break
            w.since = time.monotonic()
            if kind == "clip":
                self.on_clip(w.job, status, name, payload)
            else:
                job, w.job = w.job, None
                self.on_video(job, status, payload)
                return True
        if w.job is None:
            return True
        if not w.process.is_alive():
            reason = f"the worker crashed (exit code {w.process.exitcode})"
        elif time.monotonic() - w.since > self.stall_timeout:
            reason = f"no progress for {self.stall_timeout:g} s; worker killed"
            w.process.kill()
            w.process.join()
        else:
            return True
        job, w.job = w.job, None
        remove_partial(self.root, job.video_id)
        self.on_video(job, "failed", reason)
        return False


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
    parser.add_argument("--stall-timeout", type=float, default=600.0,
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

    if args.workers < 1:
        raise ExtractError(f"--workers must be at least 1, got {args.workers}")
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
    return 0 if report.videos_failed == 0 and not problems else 1


def extract_batch(videos: list[Path], root: Path, shard: tuple[int, int], options: dict, workers: int,
                  split: str = "auto", stall_timeout: float = 600.0, problems: list | None = None,
                  quiet: bool = False) -> Report:
    """Extract every video of this shard not already done; failures are recorded, not raised."""
    info = {"command": "extract", "shard": f"{shard[0]}/{shard[1]}", **{k: v for k, v in options.items()}}
    manifest = Manifest(root, manifest_name(shard), info=info)
    manifest.info.update(info)
    jobs, already = plan_jobs(videos, manifest, root, shard, options, split)
    report = Report(videos=len(jobs) + already, videos_skipped=already)
    for p in problems or []:
        manifest.record(f"input:{p.path}", "failed", save=False, kind="input", video=p.path, error=p.error)
    started = time.monotonic()

    def progress(job: VideoJob) -> None:
        if not quiet:
            done = report.videos_done + report.videos_failed
            print(f"extract: [{done}/{len(jobs)}] {job.path}", file=sys.stderr)

    _Batch(root, manifest, report, stall_timeout, progress).run(jobs, workers)
    report.wall_seconds = time.monotonic() - started
    ids = [video_id(v) for v in videos if path_hash(v) % shard[1] == shard[0]]
    manifest.info["summary"] = {**asdict(report), "videos": {
        vid: video_stats([manifest.entries[c] for c in settled_clips(manifest, vid)]) for vid in ids}}
    manifest.save()
    if not quiet:
        print(summary_table(manifest, ids))
        print(f"extract: {report.clips_ok} clips kept ({report.seconds_ok:.1f} s), {report.clips_skipped} skipped "
              f"by the filters, {report.videos_skipped} videos already done, {report.videos_failed} failed; "
              f"{report.wall_seconds:.1f} s → {manifest.path}")
    for line in report.warnings:
        print(f"talkmotion extract: warning: {line}", file=sys.stderr)
    for line in report.failures:
        print(f"talkmotion extract: failed: {line}", file=sys.stderr)
    return report
