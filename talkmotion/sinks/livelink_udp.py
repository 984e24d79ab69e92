"""Live Link Face over UDP, as Epic's iOS app sends it to Unreal's Live Link (port 11111).

Target: Unreal's legacy ARKit Live Link source (AppleARKitFaceSupport plugin:
`AppleARKitLiveLinkSource.cpp` reads the packet, `ToBlendShapeMap` in
`AppleARKitFaceMeshConversion.h` fills the values). Not UE 5.6's MetaHuman
"LiveLinkFace" source, whose packet differs.

One datagram per frame, big-endian (Unreal's FNboSerializeFromBuffer), packet version 6:
  uint8    version = 6
  int32    length, then that many UTF-8 bytes: device id
  int32    length, then that many UTF-8 bytes: subject name (the name shown in Unreal)
  int32    frame number      } Unreal's FQualifiedFrameTime: the frame time
  float32  sub-frame         }   (frame + sub-frame) at the frame rate
  int32    rate numerator    }   numerator / denominator
  int32    rate denominator  }
  uint8    value count = 61  (EARFaceBlendShape::MAX)
  float32  × 61              in Unreal's `EARFaceBlendShape` order (`LIVE_LINK_ORDER`): the 52
                             ARKit shapes, then head yaw, pitch, roll and both eyes' yaw, pitch, roll.

Angles, as `ToBlendShapeMap` computes them: the face anchor's rotation converted to
Unreal's axes (`FAppleARKitConversion::ToFTransform`: ARKit (x, y, z) → Unreal
(-z, x, y)) as an FRotator, each angle / 180, so -180..180 degrees become -1..1.
Unreal negates yaw and roll unless the face is mirrored, and in the same branch
swaps every Left/Right shape; we send the shapes unswapped (our eyeBlinkLeft is
Unreal's EyeBlinkLeft), so the angles go unnegated, the pair staying one
consistent face. ARKit's face axes are ours (labels.py: x to the face's own left,
y up, z out of the face; rest = facing the camera), and through ToFTransform and
FRotator's definitions (yaw turns X toward Y, pitch X toward Z, roll Z toward Y):
  HeadYaw = -yaw / 180,  HeadPitch = pitch / 180,  HeadRoll = -roll / 180   (ours in degrees).
So a 10-degree turn sends 0.0556, not the 0.1745 of radians. Eye angles are 0: gaze
travels in the eyeLook* shapes. Frame numbers count from the local time of day at
open, as the app's timecode does.
"""

from __future__ import annotations

import datetime
import math
import struct

import numpy as np

from .. import labels
from ..errors import TalkmotionError
from ..frames import Frames
from . import Sink
from .udp import SinkError, UdpSender, parse_address

DEFAULT_PORT = 11111
PACKET_VERSION = 6
DEFAULT_SUBJECT = "talkmotion"
DEFAULT_DEVICE = "talkmotion"

# Unreal's EARFaceBlendShape order (ARTrackable.h), the order of the packet's values.
LIVE_LINK_ORDER: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
POSE_NAMES: tuple[str, ...] = ("headYaw", "headPitch", "headRoll",
                               "leftEyeYaw", "leftEyePitch", "leftEyeRoll",
                               "rightEyeYaw", "rightEyePitch", "rightEyeRoll")
VALUE_NAMES = LIVE_LINK_ORDER + POSE_NAMES
NUM_VALUES = len(VALUE_NAMES)  # 61
# Unreal maps -180..180 degrees to -1..1 (ToBlendShapeMap).
DEGREES_PER_UNIT = 180.0
# Our (yaw, pitch, roll) → Unreal's HeadYaw, HeadPitch, HeadRoll signs (module docstring).
HEAD_SIGNS = np.array([-1.0, 1.0, -1.0], np.float32)

_BLEND_COLUMNS = labels.indices(LIVE_LINK_ORDER)
_HEAD_COLUMNS = labels.indices(("yaw", "pitch", "roll"))
_HEADER = struct.Struct(">B")
_TIME = struct.Struct(">ifii")
_VALUES = struct.Struct(f">B{NUM_VALUES}f")
_LENGTH = struct.Struct(">i")
SECONDS_PER_DAY = 86_400


class LiveLinkPacketError(TalkmotionError, ValueError):
    """A datagram that is not a Live Link Face packet; the message says why."""


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def encode_packet(values: np.ndarray, frame: int, fps: float, subject: str = DEFAULT_SUBJECT,
                  device: str = DEFAULT_DEVICE) -> bytes:
    """One frame's (61,) values (VALUE_NAMES order) → a Live Link Face datagram."""
    numerator, denominator = _frame_rate(fps)
    return (_HEADER.pack(PACKET_VERSION) + _string(device) + _string(subject)
            + _TIME.pack(int(frame), 0.0, numerator, denominator)
            + _VALUES.pack(NUM_VALUES, *(float(v) for v in values)))


def decode_packet(data: bytes) -> dict:
    """A Live Link Face datagram → {version, device, subject, frame, subframe, fps, values: {name: v}}."""
    try:
        (version,) = _HEADER.unpack_from(data, 0)
        if version != PACKET_VERSION:
            raise LiveLinkPacketError(f"packet version {version}, expected {PACKET_VERSION}")
        offset = _HEADER.size
        strings = []
        for _ in range(2):
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if length < 0 or offset + length > len(data):
                raise LiveLinkPacketError(f"string length {length} runs past the packet's {len(data)} bytes")
            strings.append(data[offset:offset + length].decode("utf-8"))
            offset += length
        frame, subframe, numerator, denominator = _TIME.unpack_from(data, offset)
        offset += _TIME.size
        count, *values = _VALUES.unpack_from(data, offset)
    except struct.error as err:
        raise LiveLinkPacketError(f"truncated packet of {len(data)} bytes ({err})") from None
    if count != NUM_VALUES:
        raise LiveLinkPacketError(f"{count} values, expected {NUM_VALUES}")
    return {"version": version, "device": strings[0], "subject": strings[1], "frame": frame,
            "subframe": subframe, "fps": numerator / denominator, "values": dict(zip(VALUE_NAMES, values))}


def _frame_rate(fps: float) -> tuple[int, int]:
    """fps → (numerator, denominator), exact for integer and NTSC-style rates."""
    if float(fps).is_integer():
        return int(fps), 1
    numerator = round(fps * 1001)
    return numerator, 1001


def head_to_live_link(head_yaw_pitch_roll: np.ndarray) -> np.ndarray:
    """(T, 3) our yaw, pitch, roll in degrees → (T, 3) HeadYaw, HeadPitch, HeadRoll in Unreal's -1..1."""
    return np.asarray(head_yaw_pitch_roll, np.float32) * HEAD_SIGNS / DEGREES_PER_UNIT


def head_from_live_link(values: np.ndarray) -> np.ndarray:
    """(T, 3) HeadYaw, HeadPitch, HeadRoll (-1..1) → (T, 3) our yaw, pitch, roll in degrees."""
    return np.asarray(values, np.float32) * DEGREES_PER_UNIT * HEAD_SIGNS


def live_link_values(frames: Frames) -> np.ndarray:
    """Frames → (T, 61) values in VALUE_NAMES order; head as Unreal's degrees / 180, eyes 0."""
    out = np.zeros((len(frames), NUM_VALUES), np.float32)
    out[:, :len(LIVE_LINK_ORDER)] = np.clip(frames.values[:, _BLEND_COLUMNS], 0.0, 1.0)
    out[:, len(LIVE_LINK_ORDER):len(LIVE_LINK_ORDER) + 3] = head_to_live_link(frames.values[:, _HEAD_COLUMNS])
    return out


def time_of_day_frame(fps: float, now: datetime.datetime | None = None) -> int:
    """Frames since local midnight: the app's timecode at this moment."""
    now = now or datetime.datetime.now()
    seconds = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
    return int(math.floor(seconds * fps)) % int(SECONDS_PER_DAY * fps)


class LiveLinkUdpSink(Sink):
    """Sends every frame written to it to one Live Link receiver (pacing is the caller's)."""

    def __init__(self, address: str = f"127.0.0.1:{DEFAULT_PORT}", subject: str = DEFAULT_SUBJECT,
                 device: str = DEFAULT_DEVICE, first_frame: int | None = None):
        self.host, self.port = parse_address(address, DEFAULT_PORT, "Live Link")
        if not subject:
            raise SinkError("Live Link: the subject name must not be empty")
        self.subject, self.device = subject, device
        self.first_frame = first_frame
        self.sender: UdpSender | None = None

    def open(self, fps: float, model: str = "", latency_ms: float = 0.0) -> None:
        super().open(fps, model, latency_ms)
        if self.first_frame is None:
            self.first_frame = time_of_day_frame(fps)
        self.sender = UdpSender(self.host, self.port, "Live Link")

    def send(self, frames: Frames) -> None:
        if self.sender is None:
            raise SinkError("Live Link: write before open")
        for i, row in enumerate(live_link_values(frames)):
            packet = encode_packet(row, self.first_frame + frames.start + i, frames.fps, self.subject, self.device)
            self.sender.send(packet)

    def close(self, duration: float | None = None) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    abort = close
