"""Live Link Face over UDP, as Epic's iOS app sends it to Unreal's Live Link (port 11111).

One datagram per frame, big-endian (network order), packet version 6:
  uint8    version = 6
  int32    length, then that many UTF-8 bytes: device id
  int32    length, then that many UTF-8 bytes: subject name (the name shown in Unreal)
  int32    frame number      } Unreal's FQualifiedFrameTime: the frame time
  float32  sub-frame         }   (frame + sub-frame) at the frame rate
  int32    rate numerator    }   numerator / denominator
  int32    rate denominator  }
  uint8    value count = 61
  float32  × 61              ARKit's 52 in Apple's enum order (`LIVE_LINK_ORDER`),
                             then head yaw, pitch, roll and both eyes' yaw, pitch, roll.
Sources for the layout: Unreal's FLiveLinkFacePacket reader and independent
parsers of captured app traffic; they agree on the above. Two facts they do not
settle, stated here as our choices: head angles are sent in radians, and with
our signs (labels.py: pitch positive looks down, yaw positive turns to the
avatar's left, roll positive tilts toward its right shoulder). Eye angles are 0.
Frame numbers count from the local time of day at open, as the app's timecode does.
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

# Apple's ARFaceAnchor.BlendShapeLocation order, which the app sends.
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


def live_link_values(frames: Frames) -> np.ndarray:
    """Frames → (T, 61) values in VALUE_NAMES order; head in radians, eyes 0."""
    out = np.zeros((len(frames), NUM_VALUES), np.float32)
    out[:, :len(LIVE_LINK_ORDER)] = np.clip(frames.values[:, _BLEND_COLUMNS], 0.0, 1.0)
    out[:, len(LIVE_LINK_ORDER):len(LIVE_LINK_ORDER) + 3] = np.radians(frames.values[:, _HEAD_COLUMNS])
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

    def write(self, frames: Frames) -> None:
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
