"""Face tracking for `extract` and `imitate`: MediaPipe labels per video frame, resampled to label frames.

Per video: frames are decoded one at a time (PyAV) and tracked by MediaPipe's
FaceLandmarker in VIDEO mode (it follows the face from frame to frame instead of
detecting it afresh). Each tracked frame gives the 52 ARKit blendshapes and the
head pose from the facial transformation matrix. Labels are resampled to the
model frame rate by timestamp, so variable-rate and 24/25/60 fps videos line up
with the audio. Label frames where MediaPipe finds no face, or more than one,
are masked invalid (the whole row). tongueOut is always masked (MediaPipe lacks it).

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
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import labels
from ..audio import FPS
from ..errors import TalkmotionError
from .video import DEFAULT_MAX_SIDE, FrameRateMeter, iter_frames

MAX_FACES = 2                    # face counts are capped here: 2 means "more than one"
FACE_COUNT_INTERVAL_S = 0.2      # how often the face detector counts faces (s)
FACE_COUNT_CONFIDENCE = 0.5      # its minimum detection score
DETECTOR_MEMBER = "face_detector.tflite"
# Set to "1" (the --verbose flag does) to let MediaPipe's C++ log lines reach stderr; workers inherit it.
NATIVE_LOGS_ENV = "TALKMOTION_NATIVE_LOGS"
_native_logs_quiet = False
# A target time this close (as a fraction of the source interval) to a source frame uses that frame alone.
SNAP_FRACTION = 1e-3
# Scene cuts: luminance histograms of consecutive frames further apart than this (L1, 0..2).
SCENE_CUT_DISTANCE = 0.6
HISTOGRAM_BINS = 32
HISTOGRAM_STRIDE = 4             # every 4th pixel in each direction is plenty for a histogram


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


def show_native_logs() -> None:
    """Let MediaPipe's own log lines through, here and in worker processes started from here."""
    os.environ[NATIVE_LOGS_ENV] = "1"


def quiet_native_logs() -> None:
    """Send what native code writes to file descriptor 2 (MediaPipe's C++ log lines, a dozen
    per tracker and some mid-run) to /dev/null, once per process, while Python's own stderr
    (errors, progress, warnings) keeps the terminal through a copy of the descriptor.

    Left alone when stderr is not the process's own (a test capturing it) or with --verbose.
    """
    global _native_logs_quiet
    if _native_logs_quiet or os.environ.get(NATIVE_LOGS_ENV) == "1" or sys.stderr is not sys.__stderr__:
        return
    _native_logs_quiet = True
    sys.stderr.flush()
    kept = os.dup(2)
    sys.stderr = sys.__stderr__ = os.fdopen(kept, "w", buffering=1, encoding=sys.stderr.encoding,
                                            errors=sys.stderr.errors)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class FaceTracker:
    """MediaPipe FaceLandmarker in VIDEO mode (one per video, frames in time order), plus a face count.

    The landmarker follows one face from frame to frame. Asking it for two
    would run its face detector on every frame while only one face is seen
    (a fifth more time per frame), so a second face is looked for instead by
    the bundle's own face detector every FACE_COUNT_INTERVAL_S: a frame counts
    as several faces when the latest count saw more than one.
    """

    def __init__(self, path: str, gpu: bool = False):
        quiet_native_logs()
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
                wanted: Callable[[int], bool] = lambda i: True,
                meter: FrameRateMeter | None = None) -> Iterator[TrackedFrame]:
    """Label frames i with wanted(i), resampled to `fps` by timestamp.

    Label frame i is the face at time i / fps, interpolated between the two
    source frames around it (only those are tracked, so a 60 fps video costs
    about as much as a 30 fps one). After the last source frame, label frames
    continue for one source-frame duration. Frames not wanted are decoded but
    not tracked (resuming past clips already made).
    """
    meter = meter or FrameRateMeter()
    pair = _SourcePair(tracker)
    prev, prev_hist, cut_pending, i = None, None, False, 0
    for cur in iter_frames(path, max_side):
        meter.add(cur.time)
        hist = luminance_histogram(cur.rgb)
        if prev is not None:
            while i / fps < cur.time:
                if wanted(i):
                    w = (i / fps - prev.time) / (cur.time - prev.time)
                    yield TrackedFrame(i, pair.at(prev, cur, w), cut_pending)
                    cut_pending = False
                i += 1
            cut_pending |= float(np.abs(hist - prev_hist).sum()) > SCENE_CUT_DISTANCE
        prev, prev_hist = cur, hist
    end = prev.time + (meter.frame_duration or 1.0 / fps)
    while (i + 0.5) / fps <= end:    # a label frame the video covers at least half of
        if wanted(i):
            yield TrackedFrame(i, pair.result(prev), cut_pending)
            cut_pending = False
        i += 1
