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
from pathlib import Path

import numpy as np

from .. import labels
from ..files import write_chunks
from ..frames import Frames, FramesFileError
from . import FileSink, numtext
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


VALUE_DECIMALS = 6
ROWS_PER_BLOCK = 4096          # frames formatted at once; long takes never sit in memory as text


def timecodes(frames: np.ndarray, fps: float) -> np.ndarray:
    """Frame indices (T,) → (T, W) bytes of 'HH:MM:SS:FF.mmm' (FF counts frames within the second at `fps`)."""
    seconds = np.asarray(frames, np.float64).reshape(-1) / fps
    whole = np.floor(seconds + 1e-9)
    in_second = (seconds - whole) * fps
    ff = np.floor(in_second + 1e-6)
    millis = np.rint(np.maximum(0.0, in_second - ff) * 1000).astype(np.int64) % 1000
    hours, rest = np.divmod(whole.astype(np.int64), SECONDS_PER_HOUR)
    minutes, secs = np.divmod(rest, SECONDS_PER_MINUTE)
    rows = len(seconds)
    colon = numtext.literal(":", rows)
    return np.concatenate([numtext.integers(hours, 2), colon, numtext.integers(minutes, 2), colon,
                           numtext.integers(secs, 2), colon, numtext.integers(ff.astype(np.int64), 2),
                           numtext.literal(".", rows), numtext.integers(millis, 3)], axis=1)


def timecode(frame: int, fps: float) -> str:
    """Frame index → 'HH:MM:SS:FF.mmm'."""
    text = timecodes(np.array([frame]), fps)[0]
    return text[text != numtext.PAD].tobytes().decode()


def livelink_chunks(frames: Frames):
    """The take file's bytes, a block of rows at a time; every value as f"{v:.6f}" writes it."""
    yield (",".join(COLUMNS) + "\n").encode()
    shape_cols = labels.indices(CSV_SHAPE_ORDER)
    head_cols = labels.indices(HEAD_COLUMNS.values())
    for start in range(0, len(frames), ROWS_PER_BLOCK):
        block = frames.values[start:start + ROWS_PER_BLOCK]
        rows = len(block)
        values = np.concatenate([np.clip(block[:, shape_cols], 0.0, 1.0), head_to_live_link(block[:, head_cols]),
                                 np.zeros((rows, len(EYE_COLUMNS)), np.float32)], axis=1)
        yield numtext.join(numtext.fixed(values, VALUE_DECIMALS), values.shape[1], b",", first_columns=[
            timecodes(frames.start + start + np.arange(rows), frames.fps),
            numtext.literal(str(BLEND_SHAPE_COUNT), rows)])


class LiveLinkCsvSink(FileSink):
    def save(self, frames: Frames) -> None:
        write_chunks(self.path, livelink_chunks(frames))


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
