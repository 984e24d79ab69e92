"""VMC protocol (OSC over UDP), sent the way an *assistant* app sends it to a performer.

A performer such as VSeeFace or VMagicMirror listens on port 39540 for assistants
(protocol.vmc.info). Each frame becomes, in this order:
  /VMC/Ext/OK          (int)1                      the model is loaded
  /VMC/Ext/T           (float)seconds              sender-relative time (the frame's time)
  /VMC/Ext/Blend/Val   (string)name (float)weight  once per expression
  /VMC/Ext/Blend/Apply                             apply the values just sent
  /VMC/Ext/Bone/Pos    (string)"Neck"/"Head" (float)px py pz qx qy qz qw   local, Unity frame
Expression names are case sensitive (UniVRM): perfect-sync avatars take the 52
ARKit names in PascalCase ("JawOpen"); others take VRM 0.x presets ("A", "Blink_L").

Head rotation, glTF/VRM frame → Unity. Our angles live in glTF's right-handed
frame (Y up, the avatar faces +Z, its left at +X; see labels.py). Unity is
left-handed with the character also facing +Z, but its left at -X: the same
space seen in a mirror across the YZ plane. A reflection M = diag(-1, 1, 1)
turns a rotation about axis a by θ into one about M·a by -θ, so a quaternion
(x, y, z, w) becomes (x, -y, -z, w) and a position (x, y, z) becomes (-x, y, z).
(This is the X-axis flip UniVRM uses for VRM 1.0 files.)
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from .. import labels
from ..frames import Frames
from ..rotation import head_quaternions
from . import Sink
from .udp import SinkError, UdpSender, parse_address

DEFAULT_PORT = 39540  # a performer's port for assistants (VSeeFace, VMagicMirror)
NAME_SETS = ("both", "perfect-sync", "vrm0")

# labels.VRM_PRESETS key → the VRM 0.x BlendShapePreset name UniVRM expects.
# `surprised` has no VRM 0.x preset and is not sent.
VRM0_PRESETS: dict[str, str] = {
    "aa": "A", "ih": "I", "ou": "U", "ee": "E", "oh": "O",
    "blink": "Blink", "blinkLeft": "Blink_L", "blinkRight": "Blink_R",
    "lookUp": "LookUp", "lookDown": "LookDown", "lookLeft": "LookLeft", "lookRight": "LookRight",
    "happy": "Joy", "angry": "Angry", "sad": "Sorrow",
}

# The neck takes this share of the head's rotation and the head the rest, so the
# motion bends through both joints the way a real neck does.
NECK_SHARE = 0.4

# Local rest offsets of the bones (Unity frame, metres), typical of VRM adults.
# Receivers that apply rotations only ignore them; ones that sync bone positions
# get a plausible neck rather than a head collapsed into its parent.
NECK_OFFSET = (0.0, 0.10, 0.0)
HEAD_OFFSET = (0.0, 0.08, 0.0)

# Bundles stay under a typical Ethernet payload so no datagram is IP-fragmented
# (a lost fragment loses the whole datagram on Wi-Fi).
MAX_DATAGRAM_BYTES = 1400


def gltf_to_unity_quaternion(q: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw in the glTF frame → the same rotation in Unity's frame (x, -y, -z, w)."""
    q = np.asarray(q, np.float64)
    return q * np.array([1.0, -1.0, -1.0, 1.0])


def quaternion_power(q: np.ndarray, share: float) -> np.ndarray:
    """(..., 4) unit quaternions xyzw → q**share: the same axis, `share` of the angle."""
    q = np.asarray(q, np.float64)
    q = np.where(q[..., 3:4] < 0, -q, q)  # the short way round
    half = np.arccos(np.clip(q[..., 3], -1.0, 1.0))
    sin_half = np.sin(half)
    axis = np.where(sin_half[..., None] > 1e-9, q[..., :3] / np.maximum(sin_half, 1e-9)[..., None], 0.0)
    return np.concatenate([axis * np.sin(share * half)[..., None], np.cos(share * half)[..., None]], -1)


def neck_and_head(head_degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) pitch, yaw, roll degrees → Unity local quaternions (neck (T, 4), head (T, 4)).

    neck = q**s and head = q**(1-s) about the same axis, so neck·head = q exactly.
    """
    q = head_quaternions(head_degrees)  # (T, 4) xyzw, glTF frame
    unity = gltf_to_unity_quaternion(q)
    return quaternion_power(unity, NECK_SHARE), quaternion_power(unity, 1.0 - NECK_SHARE)


def expression_values(frames: Frames, names: str) -> list[tuple[str, np.ndarray]]:
    """(name, (T,) weights) for each expression sent under the name set `names`."""
    out: list[tuple[str, np.ndarray]] = []
    blend = np.clip(frames.blendshapes, 0.0, 1.0)
    if names in ("both", "perfect-sync"):
        out += [(labels.to_pascal(n), blend[:, i]) for i, n in enumerate(labels.BLENDSHAPES)]
    if names in ("both", "vrm0"):
        presets = labels.to_vrm_presets(blend)
        out += [(vrm0, presets[key]) for key, vrm0 in VRM0_PRESETS.items()]
    return out


# --- OSC 1.0 encoding -------------------------------------------------------------
# Strings are NUL-terminated and padded to 4 bytes, numbers big-endian; a bundle is
# "#bundle", a time tag, then each message prefixed by its size. Every Blend/Val
# message differs from the last only in its final 4 bytes, so its head is built
# once per name. (python-osc's builders cost ~4 ms a frame; this ~0.2 ms.)

def osc_string(text: str) -> bytes:
    data = text.encode("utf-8") + b"\0"
    return data + b"\0" * (-len(data) % 4)


def osc_message(address: str, tags: str = "", head: bytes = b"") -> bytes:
    """A message's bytes up to its numeric arguments: address, type tags, leading string args."""
    return osc_string(address) + osc_string("," + tags) + head


_BUNDLE_HEAD = osc_string("#bundle") + struct.pack(">Q", 1)  # time tag 1 = "immediately"
_OK = osc_message("/VMC/Ext/OK", "i") + struct.pack(">i", 1)
_TIME = osc_message("/VMC/Ext/T", "f")
_APPLY = osc_message("/VMC/Ext/Blend/Apply")
_FLOAT = struct.Struct(">f")
_BONE_VALUES = struct.Struct(">7f")


@functools.lru_cache(maxsize=None)
def _blend_head(name: str) -> bytes:
    return osc_message("/VMC/Ext/Blend/Val", "sf", osc_string(name))


@functools.lru_cache(maxsize=None)
def _bone_head(name: str) -> bytes:
    return osc_message("/VMC/Ext/Bone/Pos", "sfffffff", osc_string(name))


def frame_messages(time_s: float, expressions: list[tuple[str, float]], neck_q, head_q) -> list[bytes]:
    """The OSC messages of one frame, in the order an assistant sends them."""
    msgs = [_OK, _TIME + _FLOAT.pack(time_s)]
    msgs += [_blend_head(name) + _FLOAT.pack(value) for name, value in expressions]
    msgs.append(_APPLY)
    msgs.append(_bone_head("Neck") + _BONE_VALUES.pack(*NECK_OFFSET, *neck_q))
    msgs.append(_bone_head("Head") + _BONE_VALUES.pack(*HEAD_OFFSET, *head_q))
    return msgs


def pack_bundles(messages: list[bytes], limit: int = MAX_DATAGRAM_BYTES) -> list[bytes]:
    """Messages → as few OSC bundles as fit in `limit` bytes each, order kept."""
    datagrams, current = [], [_BUNDLE_HEAD]
    size = len(_BUNDLE_HEAD)
    for msg in messages:
        item = 4 + len(msg)  # each element is prefixed by its int32 size
        if len(current) > 1 and size + item > limit:
            datagrams.append(b"".join(current))
            current, size = [_BUNDLE_HEAD], len(_BUNDLE_HEAD)
        current += [struct.pack(">i", len(msg)), msg]
        size += item
    if len(current) > 1:
        datagrams.append(b"".join(current))
    return datagrams


class VmcSink(Sink):
    """Sends every frame written to it to one VMC performer, at once (pacing is the caller's)."""

    def __init__(self, address: str = f"127.0.0.1:{DEFAULT_PORT}", names: str = "both"):
        if names not in NAME_SETS:
            raise SinkError(f"VMC: unknown name set {names!r}; choose one of {', '.join(NAME_SETS)}")
        self.host, self.port = parse_address(address, DEFAULT_PORT, "VMC")
        self.names = names
        self.sender: UdpSender | None = None

    def open(self, fps: float, model: str = "", latency_ms: float = 0.0) -> None:
        super().open(fps, model, latency_ms)
        self.sender = UdpSender(self.host, self.port, "VMC")

    def write(self, frames: Frames) -> None:
        if self.sender is None:
            raise SinkError("VMC: write before open")
        if not len(frames):
            return
        expressions = expression_values(frames, self.names)
        neck, head = neck_and_head(frames.head)
        for t, time_s in enumerate(frames.times):
            row = [(name, values[t]) for name, values in expressions]
            for datagram in pack_bundles(frame_messages(time_s, row, neck[t], head[t])):
                self.sender.send(datagram)

    def close(self, duration: float | None = None) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    abort = close
