"""VMC protocol (OSC over UDP), in one of the protocol's two receiving roles.

The VMC spec (protocol.vmc.info) names the apps by role: a *Marionette* receives
a whole avatar's motion and draws it (commonly port 39539); a *Performer* owns
the skeleton and takes extra data from *Assistant* apps (commonly port 39540).
What moves depends on which role the receiver plays, so the sink sends one of:

role "marionette" (default, port 39539): what VSeeFace's VMC receiver (built on
  EVMC4U), VMagicMirror's VMCP receive, Warudo's VMC receiver and VNyan's VMC
  layers apply. Each frame, in this order:
    /VMC/Ext/OK          (int)1                      the model is loaded
    /VMC/Ext/T           (float)seconds              sender-relative time (the frame's time)
    /VMC/Ext/Blend/Val   (string)name (float)weight  once per expression
    /VMC/Ext/Blend/Apply                             apply the values just sent
    /VMC/Ext/Bone/Pos    (string)"Neck"/"Head" (float)px py pz qx qy qz qw   local, Unity frame
role "performer" (port 39540): the Assistant → Performer messages, for a strict
  performer such as VirtualMotionCapture. Its message list has no Bone/Pos (the
  performer drives the bones from its own trackers), so the head does not move there:
    /VMC/Ext/Blend/Val … /VMC/Ext/Blend/Apply       the expressions, as above
    /VMC/Ext/Set/Eye     (int)1 (float)x y z         the gaze target, relative to the Head
                                                     (spec V2.8), Unity frame, GAZE_TARGET_M away
Expression names are case sensitive (UniVRM): perfect-sync avatars take the 52
ARKit names in PascalCase ("JawOpen"); others take VRM 0.x presets ("A", "Blink_L").
Ports are whatever the receiver is set to; the defaults are the spec's. docs/avatars.md
says, per receiver, what it shows and which settings to switch on.

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
from ..rotation import head_quaternions, quaternion_matrices
from . import Sink
from .udp import SinkError, UdpSender, parse_address

# role → the VMC spec's usual port for it
ROLE_PORTS: dict[str, int] = {"marionette": 39539, "performer": 39540}
DEFAULT_ROLE = "marionette"
DEFAULT_PORT = ROLE_PORTS[DEFAULT_ROLE]
NAME_SETS = ("both", "perfect-sync", "vrm0")
GAZE_TARGET_M = 1.0  # the performer's eye target sits this far along the gaze, from the head

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


def gaze_targets(frames: Frames) -> np.ndarray:
    """(T, 3) eye targets relative to the head, Unity frame: GAZE_TARGET_M along the gaze."""
    yaw, pitch = np.moveaxis(labels.gaze_angles(np.clip(frames.blendshapes, 0.0, 1.0)), -1, 0)
    q = head_quaternions(np.stack([pitch, yaw, np.zeros_like(yaw)], -1))            # (T, 4) glTF frame
    direction = quaternion_matrices(q)[:, :, 2]                                       # the rest gaze +Z, turned
    return direction * [-1.0, 1.0, 1.0] * GAZE_TARGET_M                               # glTF → Unity: x flips


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
_EYE = osc_message("/VMC/Ext/Set/Eye", "ifff")
_EYE_VALUES = struct.Struct(">i3f")


@functools.lru_cache(maxsize=None)
def _blend_head(name: str) -> bytes:
    return osc_message("/VMC/Ext/Blend/Val", "sf", osc_string(name))


@functools.lru_cache(maxsize=None)
def _bone_head(name: str) -> bytes:
    return osc_message("/VMC/Ext/Bone/Pos", "sfffffff", osc_string(name))


def frame_messages(time_s: float, expressions: list[tuple[str, float]], neck_q, head_q) -> list[bytes]:
    """The OSC messages of one frame for a marionette, in the order a performer sends them."""
    msgs = [_OK, _TIME + _FLOAT.pack(time_s)]
    msgs += [_blend_head(name) + _FLOAT.pack(value) for name, value in expressions]
    msgs.append(_APPLY)
    msgs.append(_bone_head("Neck") + _BONE_VALUES.pack(*NECK_OFFSET, *neck_q))
    msgs.append(_bone_head("Head") + _BONE_VALUES.pack(*HEAD_OFFSET, *head_q))
    return msgs


def performer_messages(expressions: list[tuple[str, float]], eye_target) -> list[bytes]:
    """The OSC messages of one frame for a performer: only what its Assistant list takes."""
    msgs = [_blend_head(name) + _FLOAT.pack(value) for name, value in expressions]
    msgs.append(_APPLY)
    msgs.append(_EYE + _EYE_VALUES.pack(1, *eye_target))
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
    """Sends every frame written to it to one VMC receiver, at once (pacing is the caller's).

    address: 'HOST[:PORT]'; the port defaults to the role's (ROLE_PORTS).
    role: "marionette" (expressions and neck/head bones) or "performer" (expressions and gaze).
    """

    def __init__(self, address: str = "127.0.0.1", names: str = "both", role: str = DEFAULT_ROLE):
        if names not in NAME_SETS:
            raise SinkError(f"VMC: unknown name set {names!r}; choose one of {', '.join(NAME_SETS)}")
        if role not in ROLE_PORTS:
            raise SinkError(f"VMC: unknown role {role!r}; choose one of {', '.join(ROLE_PORTS)}")
        self.host, self.port = parse_address(address, ROLE_PORTS[role], "VMC")
        self.names, self.role = names, role
        self.sender: UdpSender | None = None

    def open(self, fps: float, model: str = "", latency_ms: float = 0.0) -> None:
        super().open(fps, model, latency_ms)
        self.sender = UdpSender(self.host, self.port, "VMC")

    def send(self, frames: Frames) -> None:
        if self.sender is None:
            raise SinkError("VMC: write before open")
        if not len(frames):
            return
        for messages in self._messages(frames):
            for datagram in pack_bundles(messages):
                self.sender.send(datagram)

    def _messages(self, frames: Frames) -> list[list[bytes]]:
        """Each frame's OSC messages for this sink's role."""
        expressions = expression_values(frames, self.names)
        rows = [[(name, values[t]) for name, values in expressions] for t in range(len(frames))]
        if self.role == "performer":
            return [performer_messages(row, eye) for row, eye in zip(rows, gaze_targets(frames))]
        neck, head = neck_and_head(frames.head)
        return [frame_messages(time_s, row, n, h) for time_s, row, n, h in zip(frames.times, rows, neck, head)]

    def close(self, duration: float | None = None) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    abort = close
