"""Head angles → quaternions in the glTF/VRM frame (Y up, the avatar faces +Z, its left is +X).

Our head channels (labels.py) are pitch, yaw, roll in degrees, right-hand rule,
applied yaw then pitch then roll. Each positive angle is a positive rotation
about its glTF axis: pitch about +X turns the face (+Z) toward -Y (looks down),
yaw about +Y turns it toward +X (the avatar's left), roll about +Z tips the top
of the head toward -X (its right shoulder). Intrinsic Y, then X, then Z is the
product q = q_yaw · q_pitch · q_roll.

Quaternions are xyzw, as glTF animation samplers and three.js store them.
Every output that needs a head rotation (.vrma, glTF animation, VMC, the
preview renderer) uses this module so they cannot disagree.
"""

from __future__ import annotations

import numpy as np

X_AXIS = np.array([1.0, 0.0, 0.0])
Y_AXIS = np.array([0.0, 1.0, 0.0])
Z_AXIS = np.array([0.0, 0.0, 1.0])


def axis_angle_quaternions(axis: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotations by `degrees` (...,) about a unit `axis` (3,) → (..., 4) xyzw."""
    half = np.radians(np.asarray(degrees, np.float64)) / 2
    xyz = np.sin(half)[..., None] * np.asarray(axis, np.float64)
    return np.concatenate([xyz, np.cos(half)[..., None]], -1)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a·b of (..., 4) xyzw quaternions: rotate by b, then by a."""
    ax, ay, az, aw = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bx, by, bz, bw = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], -1)


def head_quaternions(head_degrees: np.ndarray) -> np.ndarray:
    """(..., 3) pitch, yaw, roll in degrees → (..., 4) xyzw unit quaternions, glTF frame."""
    head = np.asarray(head_degrees, np.float64)
    if head.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) pitch, yaw, roll, got shape {head.shape}")
    pitch = axis_angle_quaternions(X_AXIS, head[..., 0])
    yaw = axis_angle_quaternions(Y_AXIS, head[..., 1])
    roll = axis_angle_quaternions(Z_AXIS, head[..., 2])
    q = quaternion_multiply(quaternion_multiply(yaw, pitch), roll)
    # One sign for neighbouring frames keeps interpolation between them the short way.
    return np.where(q[..., 3:4] < 0, -q, q)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw unit quaternions → (..., 3, 3) rotation matrices (column vectors: v' = R v)."""
    x, y, z, w = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_power(q: np.ndarray, share: float) -> np.ndarray:
    """(..., 4) unit xyzw quaternions → q**share: the same axis, `share` of the angle (short way)."""
    q = np.asarray(q, np.float64)
    q = np.where(q[..., 3:4] < 0, -q, q)
    half = np.arccos(np.clip(q[..., 3], -1.0, 1.0))
    sin_half = np.sin(half)
    axis = q[..., :3] / np.maximum(sin_half, 1e-12)[..., None]
    axis = np.where(sin_half[..., None] > 1e-9, axis, 0.0)
    return np.concatenate([axis * np.sin(share * half)[..., None], np.cos(share * half)[..., None]], -1)


def quaternion_conjugate(q: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw → the inverse rotation (for unit quaternions)."""
    return np.asarray(q, np.float64) * np.array([-1.0, -1.0, -1.0, 1.0])
