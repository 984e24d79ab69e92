"""`talkmotion imitate VIDEO -o OUT`: the video's own tracked face as frames (tracking mode).

    talkmotion imitate talk.mp4 -o tracked.json [-o tracked.csv] [--fps 30]

The face is tracked exactly as `extract` labels training clips (MediaPipe
FaceLandmarker in VIDEO mode, resampled to --fps by timestamp) and written
through the same file sinks as `animate`, so model output and the tracked face
can be compared frame by frame, or a tracked performance exported to an avatar.

Frames where no single face is found are filled: gaps are interpolated from
the frames around them, the ends hold the nearest tracked frame. tongueOut,
which MediaPipe does not give, is 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import labels
from .audio import FPS, SUPPORTED_FPS
from .data.facetrack import ExtractError, FaceTracker, check_landmarker_file, track_video
from .data.video import DEFAULT_MAX_SIDE, FrameRateMeter, check_max_side, probe
from .frames import Frames

MODEL_NAME = "mediapipe-face-landmarker"


class ImitateError(ExtractError):
    """A video or option `imitate` cannot use; the message names it."""


def track_frames(path: str | Path, landmarker: Path, fps: int = FPS, gpu: bool = False,
                 max_side: int = DEFAULT_MAX_SIDE, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tracked label rows of a whole video → (values (T, C) float32, face found (T,) bool);
    `progress`: a bar on a terminal."""
    from tqdm import tqdm

    total = round(probe(path).duration * fps) or None
    tracker = FaceTracker(str(landmarker), gpu)
    rows, found = [], []
    bar = tqdm(total=total, desc=Path(path).name, unit="frame", file=sys.stderr, disable=None if progress else True,
               leave=False)
    try:
        for frame in track_video(path, tracker, fps, max_side, meter=FrameRateMeter()):
            rows.append(frame.result.values)
            found.append(frame.result.faces == 1)
            bar.update()
    finally:
        bar.close()
        tracker.close()
    return np.asarray(rows, np.float32).reshape(-1, labels.NUM_CHANNELS), np.asarray(found, bool)


def fill_gaps(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(T, C) rows with untracked rows replaced: interpolated inside, nearest at the ends."""
    if found.all():
        return values
    t = np.arange(len(values))
    good = np.flatnonzero(found)
    out = values.copy()
    for c in range(values.shape[1]):
        out[:, c] = np.interp(t, good, values[good, c])
    return out


def imitate(path: str | Path, outputs: list[str], landmarker: Path, fps: int = FPS, gpu: bool = False,
            max_side: int = DEFAULT_MAX_SIDE, fmt: str | None = None, progress: bool = False) -> Frames:
    """Track `path` and write it to every output; returns the frames written."""
    from .files import check_output
    from .sinks import file_format, file_sink

    check_max_side(max_side)
    for out in outputs:              # a wrong extension or path fails before minutes of tracking
        try:
            file_format(check_output(out), fmt)
        except ValueError as err:
            raise ImitateError(str(err)) from None
    values, found = track_frames(path, landmarker, fps, gpu, max_side, progress)
    if not found.any():
        raise ImitateError(f"{path}: no single face found in any of its {len(found)} frames")
    frames = Frames(fill_gaps(values, found), fps=fps, model=MODEL_NAME,
                    meta={"tracked_ratio": float(found.mean())})
    for out in outputs:
        sink = file_sink(out, fmt)
        sink.open(fps, MODEL_NAME, 0.0)
        try:
            sink.write(frames)
        except BaseException:
            sink.abort()
            raise
        sink.close(frames.seconds)
    return frames


def add_arguments(parser) -> None:
    parser.add_argument("video", help="a video file with a face")
    parser.add_argument("-o", "--out", action="append", required=True,
                        help="output file, format by extension (json, csv, ...); repeatable")
    parser.add_argument("--format", default=None, help="output format instead of the file extension")
    parser.add_argument("--fps", type=int, default=FPS, choices=SUPPORTED_FPS, help="output frame rate")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"scale frames down to this longest side first (default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--landmarker", default=None, help="face_landmarker.task (default: the installed one)")
    parser.add_argument("--landmarker-sha256", default=None, help="expected SHA-256 of --landmarker")
    parser.add_argument("--gpu", action="store_true", help="MediaPipe's GPU delegate instead of the CPU")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show MediaPipe's own log lines")


def run(args) -> int:
    from .assets import LANDMARKER
    from .data.facetrack import show_native_logs

    if args.verbose:
        show_native_logs()

    landmarker = check_landmarker_file(Path(args.landmarker) if args.landmarker else LANDMARKER,
                                       args.landmarker_sha256)
    frames = imitate(args.video, args.out, landmarker, args.fps, args.gpu, args.max_side, args.format, progress=True)
    tracked = frames.meta["tracked_ratio"]
    print(f"imitate: {len(frames)} frames ({frames.seconds:.2f} s), face tracked in {tracked:.0%} → "
          f"{', '.join(args.out)}", file=sys.stderr)
    return 0
