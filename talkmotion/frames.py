"""The one frame type every sink consumes, and the frames file format.

Frames file (version 1), read by other tools, so it changes only with a new version:
  {"format": "talkmotion.frames", "version": 1, "fps": 30, "duration": s,
   "latency_ms": ms, "model": "...", "blendshapes": [52 ARKit names],
   "head": ["pitch", "yaw", "roll"], "frames": [[52 weights, pitch, yaw, roll], ...]}
Frame i is at time i / fps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import labels
from .audio import SUPPORTED_FPS, num_frames
from .errors import TalkmotionError
from .files import loads_json

FORMAT = "talkmotion.frames"
VERSION = 1
DECIMALS = 5              # weights and degrees in the frames file: 1e-5 is far below what anyone sees
FILE_FPS_RANGE = (1, 240)   # frame rates a frames file may state; other tools may write other rates than ours


class FramesFileError(TalkmotionError, ValueError):
    """A frames file that cannot be read; the message names the file."""


class NonFiniteFramesError(TalkmotionError, ValueError):
    """Frames holding NaN or infinity, refused by every output; the message names the output."""


def check_finite(frames: "Frames", where: str) -> None:
    """Raise NonFiniteFramesError naming `where`, the first bad frame and channel, unless every value is finite."""
    finite = np.isfinite(frames.values)
    if finite.all():
        return
    row, col = np.argwhere(~finite)[0]
    raise NonFiniteFramesError(
        f"{where}: frame {frames.start + int(row)} has {labels.CHANNELS[col]} = {frames.values[row, col]}; "
        f"non-finite numbers are never written (a post-processing gain far too large, or a diverged model?)")


@dataclass
class Frames:
    """Consecutive animation frames.

    values: (T, labels.NUM_CHANNELS) float32 — blendshape weights then head degrees.
    start:  index of the first row in its stream (0 for a whole file).
    """

    values: np.ndarray
    fps: float = 30
    start: int = 0
    latency_ms: float = 0.0
    model: str = ""
    duration: float | None = None  # audio seconds covered; defaults to len/fps
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values, np.float32).reshape(-1, labels.NUM_CHANNELS)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def blendshapes(self) -> np.ndarray:  # (T, 52)
        return self.values[:, labels.BLENDSHAPE_SLICE]

    @property
    def head(self) -> np.ndarray:  # (T, 3) degrees
        return self.values[:, labels.HEAD_SLICE]

    @property
    def times(self) -> np.ndarray:  # (T,) seconds
        return (self.start + np.arange(len(self))) / self.fps

    @property
    def seconds(self) -> float:
        return self.duration if self.duration is not None else len(self) / self.fps

    def channel(self, name: str) -> np.ndarray:
        return self.values[:, labels.index(name)]

    def resample(self, fps: float) -> "Frames":
        """Linear interpolation to another frame rate over the same duration."""
        if fps == self.fps:
            return self
        if fps not in SUPPORTED_FPS:
            raise ValueError(f"fps {fps} not supported; choose one of {SUPPORTED_FPS}")
        n = num_frames(int(round(self.seconds * 16000)), fps, 16000)
        t_new = np.arange(n) / fps
        t_old = np.arange(len(self)) / self.fps
        if len(self) == 0:
            return replace(self, values=np.zeros((0, labels.NUM_CHANNELS)), fps=fps, start=0)
        cols = [np.interp(t_new, t_old, self.values[:, c]) for c in range(labels.NUM_CHANNELS)]
        return replace(self, values=np.stack(cols, 1), fps=fps, start=0)

    # --- frames file ---------------------------------------------------------
    def header_json(self) -> dict:
        """Every field of the frames file but the frames themselves."""
        return {
            "format": FORMAT, "version": VERSION, "fps": self.fps,
            "duration": round(float(self.seconds), 6), "latency_ms": round(float(self.latency_ms), 3),
            "model": self.model, "blendshapes": list(labels.BLENDSHAPES), "head": list(labels.HEAD),
        }

    def rounded_rows(self) -> list[list[float]]:
        """The frames as the file holds them: rows of Python floats rounded to DECIMALS places.

        The same numbers as round(float(v), DECIMALS): v * 10^DECIMALS is exact in
        float64 for a float32 v, so numpy's rint-and-divide rounds as Python does.
        """
        return np.round(self.values.astype(np.float64), DECIMALS).tolist()

    def to_json(self, where: str = "frames") -> dict:
        """The frames file as a JSON object; NonFiniteFramesError (naming `where`) if a value is not finite."""
        check_finite(self, where)
        return {**self.header_json(), "frames": self.rounded_rows()}

    @classmethod
    def from_json(cls, obj, source: str = "<frames>") -> "Frames":
        """A frames file's JSON object → Frames; FramesFileError naming `source` for anything
        that is not a well-formed, finite frames file."""
        if not isinstance(obj, dict):
            raise FramesFileError(f"{source}: not a talkmotion frames file (a {type(obj).__name__}, not an object)")
        if obj.get("format") != FORMAT:
            raise FramesFileError(f"{source}: not a talkmotion frames file (format={_brief(obj.get('format'))})")
        if obj.get("version") != VERSION:
            raise FramesFileError(f"{source}: frames version {_brief(obj.get('version'))} is not supported "
                                  f"(want {VERSION})")
        names = [*_names(obj, "blendshapes", source), *_names(obj, "head", source)]
        try:
            with np.errstate(over="ignore"):     # a value past float32 becomes inf, refused just below
                rows = np.asarray(obj.get("frames", []), np.float32)
        except (ValueError, TypeError, OverflowError):
            raise FramesFileError(f"{source}: 'frames' must be rows of numbers") from None
        if rows.size == 0:
            rows = rows.reshape(0, len(names))
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise FramesFileError(f"{source}: each frame must have {len(names)} numbers, one per named channel")
        if not np.isfinite(rows).all():
            raise FramesFileError(f"{source}: {int((~np.isfinite(rows)).sum())} values are NaN or infinite")
        values = np.zeros((rows.shape[0], labels.NUM_CHANNELS), np.float32)
        for col, name in enumerate(names):  # by name, never by position
            try:
                values[:, labels.index(name)] = rows[:, col]
            except KeyError as err:
                raise FramesFileError(f"{source}: {err.args[0]}") from None
        fps = obj.get("fps")
        if not _finite_number(fps) or not FILE_FPS_RANGE[0] <= fps <= FILE_FPS_RANGE[1]:
            raise FramesFileError(f"{source}: fps must be a number within {FILE_FPS_RANGE[0]}..{FILE_FPS_RANGE[1]}, "
                                  f"not {_brief(fps)}")
        duration, latency = obj.get("duration"), obj.get("latency_ms", 0.0)
        for key, value in (("duration", duration), ("latency_ms", latency)):
            if value is not None and not (_finite_number(value) and value >= 0):
                raise FramesFileError(f"{source}: {key} must be a finite number ≥ 0, not {_brief(value)}")
        return cls(values, fps=fps, latency_ms=latency, model=str(obj.get("model", "")), duration=duration)


def _names(obj: dict, key: str, source: str) -> list[str]:
    names = obj.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FramesFileError(f"{source}: '{key}' must be a list of channel names")
    return names


def _finite_number(value) -> bool:
    """A JSON number that is finite; ints of any size are (2**70 overflows numpy's isfinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _brief(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def read_frames(path: str | Path) -> Frames:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as err:
        raise FramesFileError(f"{path}: cannot read frames file ({err.strerror or err})") from None
    return Frames.from_json(loads_json(text, str(path), FramesFileError), str(path))
