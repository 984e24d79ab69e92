"""glTF binary (.glb): the input avatar with an added animation of its morph weights and head.

`file_sink("out.glb", avatar="me.vrm")` (avatar: a path, an `Avatar`, or None for
the reference avatar). The avatar's document and buffer are copied unchanged and
one animation named "talkmotion" is appended:
- a `weights` channel (LINEAR) on every node that shows a driven mesh, with
  the mesh's morph weights per frame: ARKit morphs directly, or the VRM
  presets for avatars without them (see avatar/loader.py; which one is logged);
- a `rotation` channel on the head node: our head rotation (rotation.py, the
  glTF frame) expressed in the head's parent frame and applied on top of the
  head's rest rotation. VRM 0.x models face -Z, so the rotation is turned
  half round Y for them first.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from .. import labels
from ..preview.avatar import load_avatar
from ..preview.avatar.loader import Avatar
from ..preview.avatar.scene import world_matrices
from ..files import write_bytes
from ..frames import Frames
from ..preview.gltf import Gltf
from ..rotation import head_quaternions, quaternion_conjugate, quaternion_multiply
from . import FileSink

log = logging.getLogger(__name__)
ANIMATION_NAME = "talkmotion"
# Conjugating by a half turn about Y maps a rotation in a +Z-facing frame to a -Z-facing one.
HALF_TURN_Y = np.array([0.0, 1.0, 0.0, 0.0])


class GltfAnimationSink(FileSink):
    def __init__(self, path, avatar: str | Avatar | None = None, **_ignored):
        super().__init__(path)
        self.avatar = avatar if isinstance(avatar, Avatar) else load_avatar(avatar)

    def save(self, frames: Frames) -> None:
        # Say how the avatar is driven when it is not plain perfect sync (presets, missing morphs).
        (log.info if self.avatar.mode == "arkit" and len(self.avatar.arkit) == labels.NUM_BLENDSHAPES
         else log.warning)(self.avatar.describe())
        write_bytes(self.path, animate_avatar(self.avatar, frames).to_glb())


def _rotation_of(matrix: np.ndarray) -> np.ndarray:
    """Rotation part of a 4×4 world matrix (scale divided out) as xyzw."""
    m = matrix[:3, :3] / np.maximum(np.linalg.norm(matrix[:3, :3], axis=0), 1e-12)
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    if w > 1e-6:
        return np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 4 * w * w]) / (4 * w)
    # A half turn: take the axis from the largest diagonal element.
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = np.sqrt(max(0.0, 1 + m[i, i] - m[j, j] - m[k, k])) * 2
    q = np.zeros(4)
    q[i], q[j], q[k], q[3] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s, (m[k, j] - m[j, k]) / s
    return q


def head_local_rotations(avatar: Avatar, head_degrees: np.ndarray) -> np.ndarray:
    """(T, 3) head angles → (T, 4) local rotations of the avatar's head node (rest rotation included)."""
    doc = avatar.gltf.doc
    q = head_quaternions(head_degrees)
    if avatar.head_flip:
        q = quaternion_multiply(quaternion_multiply(HALF_TURN_Y, q), quaternion_conjugate(HALF_TURN_Y))
    world, parent = world_matrices(doc)     # a tree: Avatar.load refuses cycles
    up = parent.get(avatar.head_node)
    p = _rotation_of(world[up]) if up in world else np.array([0.0, 0.0, 0.0, 1.0])
    rest = np.asarray(doc["nodes"][avatar.head_node].get("rotation", [0.0, 0.0, 0.0, 1.0]), np.float64)
    if "matrix" in doc["nodes"][avatar.head_node]:
        rest = _rotation_of(np.asarray(doc["nodes"][avatar.head_node]["matrix"], np.float64).reshape(4, 4).T)
    in_parent = quaternion_multiply(quaternion_multiply(quaternion_conjugate(p), q), p)
    out = quaternion_multiply(in_parent, rest)
    return np.where(out[..., 3:4] < 0, -out, out)


def animate_avatar(avatar: Avatar, frames: Frames) -> Gltf:
    """A copy of the avatar's glTF with one added animation of `frames`."""
    g = Gltf(copy.deepcopy(avatar.gltf.doc), bytearray(avatar.gltf.binary), avatar.gltf.source)
    if not len(frames):
        return g
    times = g.add_accessor((frames.start + np.arange(len(frames))) / frames.fps, bounds=True)
    samplers, channels = [], []

    def track(node: int, path: str, values: np.ndarray) -> None:
        samplers.append({"input": times, "output": g.add_accessor(values.astype(np.float32)),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    weights = avatar.mesh_weights(frames.blendshapes)
    for node_index, node in enumerate(g.doc.get("nodes", [])):
        if node.get("mesh") in weights:
            track(node_index, "weights", weights[node["mesh"]].reshape(-1))  # T × targets, frame-major
    if avatar.head_node is not None:
        track(avatar.head_node, "rotation", head_local_rotations(avatar, frames.head))
    g.add("animations", {"name": ANIMATION_NAME, "channels": channels, "samplers": samplers})
    return g
