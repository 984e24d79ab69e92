"""Streaming video decode with PyAV: frames with their timestamps, and the audio track aligned to them.

Nothing here holds more than a frame or two: a ten-minute video costs the same
memory as a ten-second one.

Time origin: the first video frame is time 0 for both the frames and the audio,
so label frame i (time i / fps) and audio sample round(i * sr / fps) describe the
same moment even when the container starts its audio track earlier or later
than its video track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import TalkmotionError

# Frames larger than this (longest side, pixels) are scaled down before tracking:
# the landmarker works on small crops, so more pixels only cost conversion time.
DEFAULT_MAX_SIDE = 1280
# ... and smaller than this never: the face detector looks at a 128 px square of the frame.
MIN_MAX_SIDE = 128
# Source frame intervals differing by more than this ratio mark a variable frame rate.
VARIABLE_FPS_RATIO = 1.1


class VideoError(TalkmotionError, ValueError):
    """A video that cannot be used; the message names the file and what is wrong."""


def check_max_side(max_side: int) -> int:
    """--max-side as tracking can use it; VideoError otherwise (0 scaled every frame to nothing)."""
    if max_side < MIN_MAX_SIDE:
        raise VideoError(f"--max-side {max_side}: frames must keep at least {MIN_MAX_SIDE} px on their longest "
                         "side for a face to be found")
    return max_side


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float              # average frame rate the container states (0 when unknown)
    duration: float         # seconds, container estimate (0 when unknown)
    has_audio: bool
    codec: str


@dataclass
class SourceFrame:
    index: int              # position in decode order
    time: float             # seconds from the first frame
    rgb: np.ndarray         # (H, W, 3) uint8


def check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")


def open_container(path: str | Path):
    """An open PyAV container with a video stream; VideoError naming the file otherwise."""
    import av

    path = Path(path)
    check_file(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as err:
        raise VideoError(f"{path}: not a readable video file ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video track")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate, duration and audio presence, from the container header."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(str(path), stream.codec_context.width, stream.codec_context.height,
                         float(rate) if rate else 0.0, duration, bool(container.streams.audio),
                         stream.codec_context.name)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most max_side, kept even for the scaler."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def iter_frames(path: str | Path, max_side: int = DEFAULT_MAX_SIDE, threads: int = 1) -> Iterator[SourceFrame]:
    """Decode every video frame in presentation order as RGB with its time from the first frame.

    Frames whose timestamp does not advance (duplicates some muxers write) are dropped.
    """
    import av

    check_max_side(max_side)
    path = Path(path)
    container = open_container(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_count = max(1, threads)
        width, height = scaled_size(stream.codec_context.width or max_side,
                                    stream.codec_context.height or max_side, max_side)
        origin = None
        last_time = -math.inf
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    raise VideoError(f"{path}: video frames carry no timestamps")
                t = float(frame.pts * frame.time_base)
                origin = t if origin is None else origin
                t -= origin
                if t <= last_time:
                    continue
                last_time = t
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                yield SourceFrame(index, t, rgb)
                index += 1
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: video decoding failed after {index} frames, "
                             f"the file may be truncated ({err})") from err
        if index == 0:
            raise VideoError(f"{path}: contains no decodable video frames")


def first_video_time(path: str | Path) -> float:
    """Presentation time (s) of the first video frame, the shared time origin."""
    import av

    with open_container(path) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    return float(frame.pts * frame.time_base)
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: video decoding failed ({err})") from err
    return 0.0


class AudioTrack:
    """The first audio track as 16 kHz mono, read in exact sample counts, aligned to the video.

    `take(n)` returns the next n samples and how many of them came from the file
    (the rest are zeros past the end of the track). A file without audio gives
    zeros throughout and `present` is False.
    """

    def __init__(self, path: str | Path, video_origin: float, sr: int = SAMPLE_RATE):
        import av

        self.path = Path(path)
        self.sr = sr
        self.container = open_container(path)
        self.present = bool(self.container.streams.audio)
        self.peak = 0.0
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._skip = 0           # samples before the video origin still to drop
        self._chunks = None
        if self.present:
            stream = self.container.streams.audio[0]
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            self._chunks = self.container.decode(stream)
            self._origin = video_origin
            self._started = False

    def _decode_more(self) -> bool:
        """Append the next decoded chunk to the pending samples; False at the end of the track."""
        import av

        if self._chunks is None:
            return False
        try:
            frame = next(self._chunks, None)
        except av.error.FFmpegError as err:
            raise VideoError(f"{self.path}: audio decoding failed, the file may be truncated ({err})") from err
        if frame is None:
            out = self._resampler.resample(None)
            self._chunks = None
        else:
            if not self._started and frame.pts is not None:
                self._align(float(frame.pts * frame.time_base))
            out = self._resampler.resample(frame)
        pcm = [o.to_ndarray().reshape(-1) for o in out]
        if pcm:
            self._append(np.concatenate(pcm).astype(np.float32))
        return self._chunks is not None

    def _align(self, audio_start: float) -> None:
        """Pad or drop samples so sample 0 is the first video frame's moment."""
        self._started = True
        offset = int(round((audio_start - self._origin) * self.sr))
        if offset > 0:
            self._append(np.zeros(offset, np.float32))
        else:
            self._skip = -offset

    def _append(self, pcm: np.ndarray) -> None:
        if self._skip:
            drop = min(self._skip, pcm.size)
            pcm, self._skip = pcm[drop:], self._skip - drop
        if pcm.size:
            self.peak = max(self.peak, float(np.max(np.abs(pcm))))
            self._pending.append(pcm)
            self._pending_size += pcm.size

    def take(self, n: int) -> tuple[np.ndarray, int]:
        """(samples (n,) float32, how many were real audio rather than end-of-track zeros)."""
        while self._pending_size < n and self._chunks is not None:
            self._decode_more()
        have = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        real = min(n, have.size)
        out = np.zeros(n, np.float32)
        out[:real] = have[:real]
        rest = have[real:]
        self._pending, self._pending_size = ([rest] if rest.size else []), rest.size
        return out, real

    def close(self) -> None:
        self.container.close()


class FrameRateMeter:
    """Running frame-rate statistics of a stream of frame times, in constant memory."""

    def __init__(self):
        self.count = 0
        self.last = None
        self.gap_sum = 0.0
        self.gap_min = math.inf
        self.gap_max = 0.0

    def add(self, t: float) -> None:
        if self.last is not None:
            gap = t - self.last
            self.gap_sum += gap
            self.gap_min = min(self.gap_min, gap)
            self.gap_max = max(self.gap_max, gap)
        self.last = t
        self.count += 1

    @property
    def fps(self) -> float:
        """Mean frame rate (0 with fewer than two frames)."""
        return (self.count - 1) / self.gap_sum if self.count > 1 and self.gap_sum > 0 else 0.0

    @property
    def variable(self) -> bool:
        return self.count > 2 and self.gap_max > VARIABLE_FPS_RATIO * self.gap_min

    @property
    def frame_duration(self) -> float:
        """Mean gap between frames (s); the last frame is shown this long."""
        return self.gap_sum / (self.count - 1) if self.count > 1 else 0.0
