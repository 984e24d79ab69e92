"""Live Link Face CSV: the take file Epic's iOS app exports and Unreal's importers read.

Columns, found by name (never by position) by the readers:
  Timecode          HH:MM:SS:FF.mmm — hours, minutes, seconds, frame within the second at
                    the take's frame rate, then the sub-frame as a fraction
  BlendShapeCount   61 (the 52 ARKit shapes + 9 pose values)
  EyeBlinkLeft ... TongueOut      the 52 ARKit shapes, PascalCase, in the app's CSV order
  HeadYaw, HeadPitch, HeadRoll, LeftEyeYaw, LeftEyePitch, LeftEyeRoll, RightEyeYaw, RightEyePitch, RightEyeRoll
The app records the values its Unreal code computes for the UDP stream, so the head
columns use the same unit and signs as sinks/livelink_udp.py: Unreal's degrees / 180
(-1..1), HeadYaw = -yaw / 180, HeadPitch = pitch / 180, HeadRoll = -roll / 180. Eye
angles are 0 (gaze lives in the eyeLook* shapes). The header names are the app's,
as independent importers of its takes spell them (e.g. the Blender LiveLinkFace
add-on's LIVE_LINK_FACE_HEADER); note the app's CSV lists JawRight before JawLeft
and MouthRight before MouthLeft, unlike its UDP order. We write each value under
its own name, so readers that go by name get the right shape.
The timecode starts at 00:00:00:00.000 for frame 0.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .. import labels
from ..files import write_csv
from ..frames import Frames, FramesFileError
from . import FileSink
from .livelink_udp import head_from_live_link, head_to_live_link

# The app's CSV column order for the shapes (it differs from its UDP order around jaw/mouth left/right).
CSV_SHAPE_ORDER: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
HEAD_COLUMNS = {"HeadYaw": "yaw", "HeadPitch": "pitch", "HeadRoll": "roll"}
EYE_COLUMNS = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
COLUMNS: tuple[str, ...] = ("Timecode", "BlendShapeCount", *(labels.to_pascal(n) for n in CSV_SHAPE_ORDER),
                            *HEAD_COLUMNS, *EYE_COLUMNS)
BLEND_SHAPE_COUNT = len(CSV_SHAPE_ORDER) + len(HEAD_COLUMNS) + len(EYE_COLUMNS)  # 61
SECONDS_PER_HOUR, SECONDS_PER_MINUTE = 3600, 60


def timecode(frame: int, fps: float) -> str:
    """Frame index → 'HH:MM:SS:FF.mmm' (FF counts frames within the second at `fps`)."""
    seconds = frame / fps
    whole = int(math.floor(seconds + 1e-9))
    in_second = (seconds - whole) * fps
    ff = int(math.floor(in_second + 1e-6))
    sub = max(0.0, in_second - ff)
    h, rest = divmod(whole, SECONDS_PER_HOUR)
    m, s = divmod(rest, SECONDS_PER_MINUTE)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(round(sub * 1000)) % 1000:03d}"


def livelink_rows(frames: Frames) -> list[list[str]]:
    blend = np.clip(frames.blendshapes, 0.0, 1.0)
    shape_cols = labels.indices(CSV_SHAPE_ORDER)
    head = head_to_live_link(frames.values[:, labels.indices(HEAD_COLUMNS.values())])
    rows = []
    for i in range(len(frames)):
        rows.append([timecode(frames.start + i, frames.fps), str(BLEND_SHAPE_COUNT),
                     *(f"{v:.6f}" for v in blend[i, shape_cols]), *(f"{v:.6f}" for v in head[i]),
                     *("0.000000" for _ in EYE_COLUMNS)])
    return rows


class LiveLinkCsvSink(FileSink):
    def save(self, frames: Frames) -> None:
        write_csv(self.path, COLUMNS, livelink_rows(frames))


def read_livelink_csv(path: str | Path, fps: float = 30) -> Frames:
    """A Live Link Face CSV → Frames, columns found by name; missing shapes read as 0.

    fps: the take's frame rate (the file does not store it); frames keep the file's rows.
    """
    path = Path(path)
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FramesFileError(f"{path}: cannot read Live Link CSV ({err})") from None
    if not reader.fieldnames or "Timecode" not in reader.fieldnames:
        raise FramesFileError(f"{path}: not a Live Link Face CSV (no Timecode column)")
    values = np.zeros((len(rows), labels.NUM_CHANNELS), np.float32)
    head = np.zeros((len(rows), len(HEAD_COLUMNS)), np.float32)
    known = {labels.to_pascal(n): labels.index(n) for n in labels.BLENDSHAPES}
    head_order = list(HEAD_COLUMNS)
    try:
        for r, row in enumerate(rows):
            for column, text in row.items():
                if column in known:
                    values[r, known[column]] = float(text)
                elif column in HEAD_COLUMNS:
                    head[r, head_order.index(column)] = float(text)
    except (TypeError, ValueError) as err:
        raise FramesFileError(f"{path}: row {r + 2} has a value that is not a number ({err})") from None
    values[:, labels.indices(HEAD_COLUMNS.values())] = head_from_live_link(head)
    return Frames(values, fps=fps)
