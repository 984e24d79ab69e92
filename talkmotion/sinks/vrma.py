"""VRM Animation (.vrma): glTF 2.0 binary with the VRMC_vrm_animation 1.0 extension.

Loaded by three-vrm-animation and UniVRM onto any VRM. The file holds:
- a small humanoid skeleton (hips, spine, chest, neck, head at the reference
  avatar's rest positions, no rest rotations) named in
  `extensions.VRMC_vrm_animation.humanoid.humanBones` ({bone: {node}});
- one node per expression, listed in `expressions.preset` / `expressions.custom`
  ({name: {node}}); the node's translation x carries the expression weight
  (y and z are 0), as the extension specifies;
- with the presets, a gaze node listed in `extensions.VRMC_vrm_animation.lookAt`
  ({node}): its rotation is the gaze direction (yaw about Y, pitch about X,
  extrinsic ZXY, rest = looking along +Z), from the eyeLook* shapes
  (`labels.gaze_angles`);
- one glTF animation: head rotation split between the neck (NECK_SHARE of the
  angle) and the head, about the same axis, so neck·head is the whole rotation;
  the gaze node's rotation; and a LINEAR translation track per expression.

The spec forbids lookUp/lookDown/lookLeft/lookRight as animated presets (gaze goes
through lookAt), so they are never written. three-vrm-animation reads the gaze
node as the spec says: its rotation as Euler "YXZ" (three.js's name for
extrinsic ZXY), y as yaw and x as pitch (VRMLookAtQuaternionProxy).

Expressions (option `expressions`): "preset" writes the VRM presets from
`labels.to_vrm_presets` (aa ih ou ee oh blink blinkLeft blinkRight happy angry
sad surprised) and the gaze; "custom" writes the 52 ARKit shapes as perfect-sync
custom expressions (option `custom_case`: "camel" = ARKit's names, as the
reference avatar uses; "pascal" = `JawOpen`..., as many perfect-sync VRMs use),
gaze included in their eyeLook* shapes; "both" (default) writes the customs, the
presets VRM 1.0 lets customs block (vowels, blinks) and the gaze, so one file
drives avatars with and without perfect sync. A perfect-sync avatar whose customs
do not set overrideMouth/overrideBlink/overrideLookAt to "block" (the reference
avatar's do) moves those morphs twice with "both": use "custom" for it.
"""

from __future__ import annotations

import numpy as np

from .. import labels
from ..files import write_bytes
from ..frames import Frames
from ..preview.gltf import Gltf
from ..rotation import head_quaternions, quaternion_power
from . import FileSink

SPEC_VERSION = "1.0"
EXTENSION = "VRMC_vrm_animation"
# Rest skeleton: (bone, parent, translation from parent), the reference avatar's.
SKELETON = (("hips", None, (0.0, 0.95, 0.0)), ("spine", "hips", (0.0, 0.10, 0.0)),
            ("chest", "spine", (0.0, 0.15, 0.0)), ("neck", "chest", (0.0, 0.18, 0.0)),
            ("head", "neck", (0.0, 0.08, 0.0)))
NECK_SHARE = 0.3  # the neck takes this share of the head's turn; the head the rest
EXPRESSION_MODES = ("preset", "custom", "both")
CUSTOM_CASES = ("camel", "pascal")
# Presets written: every one labels.to_vrm_presets computes (relaxed and neutral it has none
# for) but the look presets, which the spec leaves to lookAt.
PRESET_NAMES = tuple(p for p in labels.VRM_PRESETS if p not in labels.VRM_LOOK_PRESETS)
# With the customs ("both"), only the presets a perfect-sync VRM can block while its
# customs play (VRM 1.0 overrideMouth/Blink): the emotions would move the same
# morphs a second time.
BLOCKABLE_PRESETS = tuple(p for p in PRESET_NAMES if p in labels.VRM_VOWELS or p.startswith("blink"))
GAZE_NODE = "lookAt"


class VrmaSink(FileSink):
    def __init__(self, path, expressions: str = "both", custom_case: str = "camel", **_ignored):
        super().__init__(path)
        if expressions not in EXPRESSION_MODES:
            raise ValueError(f"{path}: expressions must be one of {EXPRESSION_MODES}, not {expressions!r}")
        if custom_case not in CUSTOM_CASES:
            raise ValueError(f"{path}: custom_case must be one of {CUSTOM_CASES}, not {custom_case!r}")
        self.expressions, self.custom_case = expressions, custom_case

    def save(self, frames: Frames) -> None:
        write_bytes(self.path, build_vrma(frames, self.expressions, self.custom_case).to_glb())


def expression_tracks(frames: Frames, expressions: str = "both", custom_case: str = "camel"):
    """(preset {name: (T,)}, custom {name: (T,)}) weights in [0, 1]."""
    blend = np.clip(frames.blendshapes, 0.0, 1.0)
    preset, custom = {}, {}
    if expressions in ("preset", "both"):
        values = labels.to_vrm_presets(blend)
        preset = {name: values[name] for name in (PRESET_NAMES if expressions == "preset" else BLOCKABLE_PRESETS)}
    if expressions in ("custom", "both"):
        rename = labels.to_pascal if custom_case == "pascal" else (lambda n: n)
        custom = {rename(n): blend[:, i] for i, n in enumerate(labels.BLENDSHAPES)}
    return preset, custom


def build_vrma(frames: Frames, expressions: str = "both", custom_case: str = "camel") -> Gltf:
    g = Gltf()
    bones: dict[str, int] = {}
    for name, parent, t in SKELETON:
        bones[name] = g.add("nodes", {"name": name, "translation": list(t)})
        if parent:
            g.doc["nodes"][bones[parent]].setdefault("children", []).append(bones[name])
    preset, custom = expression_tracks(frames, expressions, custom_case)
    expression_nodes = {}
    for group, tracks in (("preset", preset), ("custom", custom)):
        for name in tracks:
            expression_nodes[(group, name)] = g.add("nodes", {"name": f"expression.{group}.{name}",
                                                                "translation": [0.0, 0.0, 0.0]})
    gaze_node = g.add("nodes", {"name": GAZE_NODE}) if expressions in ("preset", "both") else None
    roots = [bones["hips"], *expression_nodes.values(), *([gaze_node] if gaze_node is not None else [])]
    g.doc["scenes"] = [{"nodes": roots}]
    g.doc["scene"] = 0

    if len(frames):
        times = g.add_accessor((frames.start + np.arange(len(frames))) / frames.fps, bounds=True)
        q = head_quaternions(frames.head)
        samplers, channels = [], []

        def track(node: int, path: str, values: np.ndarray) -> None:
            samplers.append({"input": times, "output": g.add_accessor(values.astype(np.float32)),
                             "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

        track(bones["neck"], "rotation", quaternion_power(q, NECK_SHARE))
        track(bones["head"], "rotation", quaternion_power(q, 1.0 - NECK_SHARE))
        if gaze_node is not None:
            yaw, pitch = np.moveaxis(labels.gaze_angles(np.clip(frames.blendshapes, 0.0, 1.0)), -1, 0)
            gaze = head_quaternions(np.stack([pitch, yaw, np.zeros_like(yaw)], -1))
            track(gaze_node, "rotation", gaze.astype(np.float32))
        for (group, name), node in expression_nodes.items():
            weight = (preset if group == "preset" else custom)[name]
            xyz = np.zeros((len(frames), 3), np.float32)
            xyz[:, 0] = weight
            track(node, "translation", xyz)
        g.add("animations", {"name": "talkmotion", "channels": channels, "samplers": samplers})

    extension = {"specVersion": SPEC_VERSION,
                 "humanoid": {"humanBones": {name: {"node": i} for name, i in bones.items()}}}
    groups: dict[str, dict] = {}
    for (group, name), node in expression_nodes.items():
        groups.setdefault(group, {})[name] = {"node": node}
    if groups:
        extension["expressions"] = groups
    if gaze_node is not None:
        extension["lookAt"] = {"node": gaze_node}
    g.doc["extensionsUsed"] = [EXTENSION]
    g.doc["extensions"] = {EXTENSION: extension}
    return g
