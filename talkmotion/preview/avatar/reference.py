"""Write the reference avatar as glTF binary (.glb) and as VRM 1.0 (.vrm).

Node tree (the same in both files; rest pose has translations only, as VRM 1.0 asks):
  Root
  └─ hips ─┬─ spine ─ chest ─┬─ neck ─┬─ head ── Face (mesh: 52 ARKit morph targets)
           │                 │        └─ Neck (mesh)
           │                 ├─ leftUpperArm ─ leftLowerArm ─ leftHand    (no geometry:
           │                 ├─ rightUpperArm ─ rightLowerArm ─ rightHand  VRM requires them)
           │                 └─ Torso (mesh)
           ├─ leftUpperLeg ─ leftLowerLeg ─ leftFoot
           └─ rightUpperLeg ─ rightLowerLeg ─ rightFoot
Morph target names are in `meshes[i].extras.targetNames` (the convention three.js,
Blender and UniVRM read), in `labels.BLENDSHAPES` order.

The .vrm adds `VRMC_vrm` 1.0: meta, humanoid bones, and expressions — the
presets (aa ih ou ee oh, blink*, look*, emotions) bound to combinations of the
ARKit targets (`PRESET_BINDS`), and one custom expression per ARKit name bound
to its own target (perfect sync), which blocks the presets of its part while on
(`perfect_sync_overrides`), so players driving both never move a morph twice.
"""

from __future__ import annotations

import numpy as np

from ... import labels
from ..gltf import TARGET_ARRAY_BUFFER, TARGET_ELEMENT_ARRAY_BUFFER, Gltf
from .face import MeshPart, build_head, build_neck, build_torso

VRM_SPEC_VERSION = "1.0"
VRM_LICENSE_URL = "https://vrm.dev/licenses/1.0/"

# (name, parent, translation relative to the parent) in metres; world head joint at y = 1.46.
BONES: tuple[tuple[str, str | None, tuple[float, float, float]], ...] = (
    ("hips", None, (0.0, 0.95, 0.0)),
    ("spine", "hips", (0.0, 0.10, 0.0)),
    ("chest", "spine", (0.0, 0.15, 0.0)),
    ("neck", "chest", (0.0, 0.18, 0.0)),
    ("head", "neck", (0.0, 0.08, 0.0)),
    ("leftUpperArm", "chest", (0.20, 0.16, 0.0)),
    ("leftLowerArm", "leftUpperArm", (0.26, 0.0, 0.0)),
    ("leftHand", "leftLowerArm", (0.24, 0.0, 0.0)),
    ("rightUpperArm", "chest", (-0.20, 0.16, 0.0)),
    ("rightLowerArm", "rightUpperArm", (-0.26, 0.0, 0.0)),
    ("rightHand", "rightLowerArm", (-0.24, 0.0, 0.0)),
    ("leftUpperLeg", "hips", (0.09, -0.05, 0.0)),
    ("leftLowerLeg", "leftUpperLeg", (0.0, -0.42, 0.0)),
    ("leftFoot", "leftLowerLeg", (0.0, -0.40, 0.0)),
    ("rightUpperLeg", "hips", (-0.09, -0.05, 0.0)),
    ("rightLowerLeg", "rightUpperLeg", (0.0, -0.42, 0.0)),
    ("rightFoot", "rightLowerLeg", (0.0, -0.40, 0.0)),
)
FACE_NODE, NECK_NODE, TORSO_NODE = "Face", "Neck", "Torso"

# VRM 1.0 preset expressions on this avatar: preset → {ARKit target: weight}.
PRESET_BINDS: dict[str, dict[str, float]] = {
    "aa": {"jawOpen": 0.7},
    "ih": {"jawOpen": 0.25, "mouthStretchLeft": 0.5, "mouthStretchRight": 0.5},
    "ou": {"mouthPucker": 0.9, "jawOpen": 0.1},
    "ee": {"jawOpen": 0.15, "mouthStretchLeft": 0.6, "mouthStretchRight": 0.6, "mouthSmileLeft": 0.4,
           "mouthSmileRight": 0.4},
    "oh": {"mouthFunnel": 0.8, "jawOpen": 0.35},
    "blink": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    "blinkLeft": {"eyeBlinkLeft": 1.0},
    "blinkRight": {"eyeBlinkRight": 1.0},
    "lookUp": {"eyeLookUpLeft": 1.0, "eyeLookUpRight": 1.0},
    "lookDown": {"eyeLookDownLeft": 1.0, "eyeLookDownRight": 1.0},
    "lookLeft": {"eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0},
    "lookRight": {"eyeLookInLeft": 1.0, "eyeLookOutRight": 1.0},
    "happy": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6},
    "angry": {"browDownLeft": 1.0, "browDownRight": 1.0, "noseSneerLeft": 0.5, "noseSneerRight": 0.5},
    "sad": {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "browInnerUp": 0.8},
    "relaxed": {"mouthSmileLeft": 0.4, "mouthSmileRight": 0.4, "eyeSquintLeft": 0.4, "eyeSquintRight": 0.4},
    "surprised": {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0, "eyeWideLeft": 1.0,
                  "eyeWideRight": 1.0, "jawOpen": 0.3},
    "neutral": {},
}
# Eye-related presets: the lookAt type is "expression", so the look* presets move the eyes.
# A gaze angle maps back to the eyeLook* weight it came from (labels.gaze_angles).
_SIDEWAYS = {"inputMaxValue": labels.EYE_LOOK_FULL_YAW_DEG, "outputScale": 1.0}
_UP_DOWN = {"inputMaxValue": labels.EYE_LOOK_FULL_PITCH_DEG, "outputScale": 1.0}
LOOK_AT = {"offsetFromHeadBone": [0.0, 0.11, 0.08], "type": "expression",
           "rangeMapHorizontalInner": _SIDEWAYS, "rangeMapHorizontalOuter": _SIDEWAYS,
           "rangeMapVerticalDown": _UP_DOWN, "rangeMapVerticalUp": _UP_DOWN}


def world_positions() -> dict[str, np.ndarray]:
    """World position of every bone at rest."""
    out: dict[str, np.ndarray] = {}
    for name, parent, t in BONES:
        out[name] = np.asarray(t, np.float64) + (out[parent] if parent else 0.0)
    return out


def _vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (positions[triangles[:, k]].astype(np.float64) for k in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(positions, dtype=np.float64)
    for k in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(triangles[:, k], face[:, axis], len(positions))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


def _add_mesh(g: Gltf, part: MeshPart, origin: np.ndarray, name: str, material: int) -> int:
    local = (part.positions - origin).astype(np.float32)  # the mesh node sits at its bone
    attributes = {
        "POSITION": g.add_accessor(local, TARGET_ARRAY_BUFFER, bounds=True),
        "NORMAL": g.add_accessor(_vertex_normals(local, part.triangles), TARGET_ARRAY_BUFFER),
        "COLOR_0": g.add_accessor(part.colors.astype(np.float32), TARGET_ARRAY_BUFFER),
    }
    primitive = {"attributes": attributes, "indices": g.add_accessor(part.triangles.reshape(-1),
                                                                     TARGET_ELEMENT_ARRAY_BUFFER),
                 "material": material, "mode": 4}
    mesh: dict = {"name": name, "primitives": [primitive]}
    if part.morphs:
        names = list(part.morphs)
        primitive["targets"] = [{"POSITION": g.add_accessor(part.morphs[n], TARGET_ARRAY_BUFFER, bounds=True)}
                                for n in names]
        mesh["weights"] = [0.0] * len(names)
        mesh["extras"] = {"targetNames": names}
    return g.add("meshes", mesh)


def build_gltf(vrm: bool) -> Gltf:
    """The reference avatar as a Gltf document; with `vrm`, the VRMC_vrm 1.0 extension too."""
    g = Gltf()
    material = g.add("materials", {"name": "VertexColour", "pbrMetallicRoughness": {
        "baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.85}})
    root = g.add("nodes", {"name": "Root", "children": []})
    index: dict[str, int] = {}
    for name, parent, t in BONES:
        index[name] = g.add("nodes", {"name": name, "translation": list(t)})
        parent_node = g.doc["nodes"][index[parent] if parent else root]
        parent_node.setdefault("children", []).append(index[name])
    world = world_positions()
    for node_name, bone, part in ((FACE_NODE, "head", build_head()), (NECK_NODE, "neck", build_neck()),
                                  (TORSO_NODE, "chest", build_torso())):
        mesh = _add_mesh(g, part, world[bone], node_name, material)
        index[node_name] = g.add("nodes", {"name": node_name, "mesh": mesh})
        g.doc["nodes"][index[bone]].setdefault("children", []).append(index[node_name])
    g.doc["scenes"] = [{"name": "talkmotion reference avatar", "nodes": [root]}]
    g.doc["scene"] = 0
    if vrm:
        g.doc["extensionsUsed"] = ["VRMC_vrm"]
        g.doc.setdefault("extensions", {})["VRMC_vrm"] = vrm_extension(index)
    return g


def perfect_sync_overrides(name: str) -> dict[str, str]:
    """While a perfect-sync expression is on, it blocks the presets that move the same part.

    A player that drives both the presets and the ARKit customs (a .vrma written with
    both) then moves each morph once: VRM 1.0 zeroes the mouth presets (aa ih ou ee oh)
    while any mouth custom is above 0, the blink presets for lid customs, the look
    presets for gaze customs.
    """
    if name.startswith("eyeLook"):
        return {"overrideLookAt": "block"}
    if name.startswith(("eyeBlink", "eyeSquint", "eyeWide")):
        return {"overrideBlink": "block"}
    if name in labels.MOUTH:
        return {"overrideMouth": "block"}
    return {}


def vrm_extension(index: dict[str, int]) -> dict:
    """VRMC_vrm 1.0: meta, humanoid (bone → node), expressions (presets + perfect-sync customs)."""
    face = index[FACE_NODE]
    target = {name: i for i, name in enumerate(labels.BLENDSHAPES)}

    def expression(binds: dict[str, float], overrides: dict[str, str] | None = None) -> dict:
        return {"morphTargetBinds": [{"node": face, "index": target[n], "weight": w} for n, w in binds.items()],
                "isBinary": False, "overrideBlink": "none", "overrideLookAt": "none", "overrideMouth": "none",
                **(overrides or {})}

    return {
        "specVersion": VRM_SPEC_VERSION,
        "meta": {"name": "talkmotion reference head", "version": "1", "authors": ["talkmotion"],
                 "licenseUrl": VRM_LICENSE_URL, "avatarPermission": "everyone", "commercialUsage": "corporation",
                 "creditNotation": "unnecessary", "allowRedistribution": True,
                 "modification": "allowModificationRedistribution", "allowExcessivelyViolentUsage": True,
                 "allowExcessivelySexualUsage": False, "allowPoliticalOrReligiousUsage": True,
                 "allowAntisocialOrHateUsage": False},
        "humanoid": {"humanBones": {name: {"node": index[name]} for name, _, _ in BONES}},
        "lookAt": LOOK_AT,
        "expressions": {
            "preset": {preset: expression(binds) for preset, binds in PRESET_BINDS.items()},
            "custom": {name: expression({name: 1.0}, perfect_sync_overrides(name)) for name in labels.BLENDSHAPES},
        },
    }
