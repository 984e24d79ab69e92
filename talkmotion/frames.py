"""The one frame type every sink consumes, and the frames file format.

Frames file (version 1), read by other tools, so it changes only with a new version:
  {"format": "talkmotion.frames", "version": 1, "fps": 30, "duration": s,
   "latency_ms": ms, "model": "...", "blendshapes": [52 ARKit names],
   "head": ["pitch", "yaw", "roll"], "frames": [[52 weights, pitch, yaw, roll], ...]}
Frame i is at time i / fps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import labels
from .audio import SUPPORTED_FPS, num_frames
from .errors import TalkmotionError

FORMAT = "talkmotion.frames"
VERSION = 1
DECIMALS = 5              # weights and degrees in the frames file: 1e-5 is far below what anyone sees


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
    def from_json(cls, obj: dict, source: str = "<frames>") -> "Frames":
        if obj.get("format") != FORMAT:
            raise FramesFileError(f"{source}: not a talkmotion frames file (format={obj.get('format')!r})")
        if obj.get("version") != VERSION:
            raise FramesFileError(f"{source}: frames version {obj.get('version')} is not supported (want {VERSION})")
        names = list(obj.get("blendshapes", [])) + list(obj.get("head", []))
        rows = np.asarray(obj.get("frames", []), np.float32).reshape(-1, len(names))
        values = np.zeros((rows.shape[0], labels.NUM_CHANNELS), np.float32)
        for col, name in enumerate(names):  # by name, never by position
            try:
                values[:, labels.index(name)] = rows[:, col]
            except KeyError as err:
                raise FramesFileError(f"{source}: {err.args[0]}") from None
        return cls(values, fps=obj["fps"], latency_ms=obj.get("latency_ms", 0.0),
                   model=obj.get("model", ""), duration=obj.get("duration"))


def read_frames(path: str | Path) -> Frames:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FramesFileError(f"{path}: cannot read frames file ({err})") from err
    return Frames.from_json(obj, str(path))
