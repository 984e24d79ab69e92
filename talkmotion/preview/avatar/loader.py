"""Load a user's .glb/.vrm: which morph targets play which ARKit shape, and where the head is.

Matching, in order of preference, for each ARKit name:
  1. a morph target named by it (case-insensitive; a prefix before the last '.' such as
     `Face.` or `blendShape1.` is ignored; `_L`/`_R` read as Left/Right);
  2. a VRM expression named by it (VRM 1.0 custom expressions, VRM 0.x blend shape groups).
With none matched the avatar is driven through its VRM presets (aa ih ou ee oh,
blink, blinkLeft, blinkRight, lookUp/Down/Left/Right, ...) using
`labels.to_vrm_presets`; with neither it is refused with a message saying so.

VRM 0.x models face -Z (VRM 1.0 and our head angles use +Z); `head_flip` says so,
and the head rotation is turned half round Y for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import labels
from ..gltf import Gltf, GltfError, read_glb
from . import AvatarError

log = logging.getLogger(__name__)

# VRM 0.x preset names → VRM 1.0 names (the ones labels.VRM_PRESETS uses).
VRM0_PRESETS = {"a": "aa", "i": "ih", "u": "ou", "e": "ee", "o": "oh", "blink": "blink",
                "blink_l": "blinkLeft", "blink_r": "blinkRight", "lookup": "lookUp", "lookdown": "lookDown",
                "lookleft": "lookLeft", "lookright": "lookRight", "joy": "happy", "angry": "angry",
                "sorrow": "sad", "fun": "relaxed", "neutral": "neutral"}
VRM0_WEIGHT_SCALE = 100.0  # VRM 0.x bind weights are 0..100
HEAD_NAME_HINTS = ("head", "j_bip_c_head", "mixamorig:head")
_ARKIT_KEYS = {name.lower(): name for name in labels.BLENDSHAPES}

Bind = tuple[int, int, float]  # (mesh index, morph target index, weight)


def arkit_name(raw: str) -> str | None:
    """The ARKit name a morph target or expression name stands for, or None."""
    key = raw.rsplit(".", 1)[-1].strip().replace(" ", "").lower()
    for suffix, side in (("_l", "left"), ("_r", "right")):
        if key.endswith(suffix):
            key = key[: -len(suffix)] + side
    return _ARKIT_KEYS.get(key.replace("_", ""))


@dataclass
class Avatar:
    path: Path
    gltf: Gltf
    arkit: dict[str, list[Bind]] = field(default_factory=dict)    # ARKit name → binds
    presets: dict[str, list[Bind]] = field(default_factory=dict)  # VRM 1.0 preset name → binds
    head_node: int | None = None
    vrm_version: str | None = None

    @property
    def mode(self) -> str:
        """'arkit' (perfect sync / ARKit morphs) or 'presets' (VRM presets only)."""
        return "arkit" if self.arkit else "presets"

    @property
    def head_flip(self) -> bool:
        return self.vrm_version == "0.x"

    @classmethod
    def load(cls, path: str | Path) -> "Avatar":
        path = Path(path)
        try:
            g = read_glb(path)
        except AvatarError:
            raise
        except GltfError as err:
            raise AvatarError(str(err)) from None
        avatar = cls(path, g)
        try:
            avatar._inspect()
        except AvatarError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:   # members of the wrong kind
            raise AvatarError(f"{path}: its glTF structure is broken ({err!r})") from None
        return avatar

    # --- inspection ----------------------------------------------------------------
    def _fail(self, what: str):
        raise AvatarError(f"{self.path}: {what}")

    def _inspect(self) -> None:
        doc = self.gltf.doc
        meshes, nodes = doc.get("meshes") or [], doc.get("nodes") or []
        if not meshes:
            self._fail("has no meshes, so there is no face to animate")
        ext = doc.get("extensions") or {}
        if "VRMC_vrm" in ext:
            self.vrm_version = "1.0"
        elif "VRM" in ext:
            self.vrm_version = "0.x"
        for m, mesh in enumerate(meshes):
            for t, name in enumerate(target_names(mesh)):
                key = arkit_name(name)
                if key and key not in self.arkit:
                    self.arkit[key] = [(m, t, 1.0)]
        try:
            expressions = self._vrm_expressions(ext, nodes, len(meshes))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            self._fail(f"broken VRM extension: expressions cannot be read ({err!r})")
        for name, binds in expressions.items():
            key = arkit_name(name)
            if key and key not in self.arkit and binds:
                self.arkit[key] = binds
            elif name in labels.VRM_PRESETS and binds:
                self.presets[name] = binds
        if not self.arkit and not self.presets:
            self._fail("has no ARKit morph targets and no VRM expressions (aa, ih, ou, ee, oh, blink...), "
                       "so nothing can move its face")
        try:
            self.head_node = self._find_head(ext, nodes)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            self._fail(f"broken VRM extension: humanoid bones cannot be read ({err!r})")
        self._check_node_tree(doc)

    def _check_node_tree(self, doc: dict) -> None:
        """glTF nodes form trees: a node reached twice from the scene (a cycle) would make every
        consumer of the avatar (preview, glb export) loop or place it twice."""
        from .scene import world_matrices

        try:
            world_matrices(doc)
        except ValueError as err:
            self._fail(f"its node tree cannot be animated ({err})")

    def _vrm_expressions(self, ext: dict, nodes: list, mesh_count: int) -> dict[str, list[Bind]]:
        """VRM 1.0 presets + customs, or VRM 0.x blend shape groups, as name → binds."""
        out: dict[str, list[Bind]] = {}
        if "VRMC_vrm" in ext:
            exprs = ext["VRMC_vrm"].get("expressions") or {}
            for group in ("preset", "custom"):
                for name, expr in (exprs.get(group) or {}).items():
                    binds = []
                    for b in expr.get("morphTargetBinds") or []:
                        node = nodes[int(b["node"])]
                        if "mesh" not in node:
                            raise ValueError(f"expression {name!r} binds node {b['node']}, which has no mesh")
                        binds.append((int(node["mesh"]), int(b["index"]), float(b.get("weight", 1.0))))
                    out[name] = binds
        elif "VRM" in ext:
            groups = (ext["VRM"].get("blendShapeMaster") or {}).get("blendShapeGroups") or []
            for group in groups:
                preset = str(group.get("presetName", "unknown")).lower()
                name = VRM0_PRESETS.get(preset, group.get("name", ""))
                binds = []
                for b in group.get("binds") or []:
                    if not 0 <= int(b["mesh"]) < mesh_count:
                        raise ValueError(f"blend shape group {name!r} binds mesh {b['mesh']}, which does not exist")
                    binds.append((int(b["mesh"]), int(b["index"]), float(b.get("weight", 100)) / VRM0_WEIGHT_SCALE))
                out[name] = binds
        return out

    def _find_head(self, ext: dict, nodes: list) -> int | None:
        head = None
        if "VRMC_vrm" in ext:
            bones = ext["VRMC_vrm"]["humanoid"]["humanBones"]
            head = bones["head"]["node"] if "head" in bones else None
        elif "VRM" in ext:
            for bone in ext["VRM"]["humanoid"]["humanBones"]:
                if bone.get("bone") == "head":
                    head = bone["node"]
        if head is None:
            for i, node in enumerate(nodes):
                if str(node.get("name", "")).lower() in HEAD_NAME_HINTS:
                    head = i
                    break
        if head is not None and not 0 <= int(head) < len(nodes):
            raise ValueError(f"head bone is node {head}, which does not exist")
        return None if head is None else int(head)

    # --- driving -------------------------------------------------------------------
    def mesh_weights(self, blendshapes: np.ndarray) -> dict[int, np.ndarray]:
        """ARKit weights (T, 52) → morph weights per mesh: {mesh index: (T, targets)} in [0, 1]."""
        blendshapes = np.clip(np.asarray(blendshapes, np.float32), 0.0, 1.0)
        steps = blendshapes.shape[0]
        out: dict[int, np.ndarray] = {}
        if self.mode == "arkit":
            sources = {name: blendshapes[:, labels.index(name)] for name in self.arkit}
            binds = self.arkit
        else:
            sources = labels.to_vrm_presets(blendshapes)
            binds = self.presets
        for name, bind_list in binds.items():
            for mesh, target, weight in bind_list:
                count = _target_count(self.gltf, mesh)
                if target >= count:
                    self._fail(f"expression {name!r} binds morph target {target} of mesh {mesh}, "
                               f"which has only {count}")
                w = out.setdefault(mesh, np.zeros((steps, count), np.float32))
                w[:, target] += weight * sources[name]
        return {m: np.clip(w, 0.0, 1.0) for m, w in out.items()}

    def describe(self) -> str:
        kind = {"1.0": "VRM 1.0", "0.x": "VRM 0.x", None: "glTF"}[self.vrm_version]
        if self.mode == "arkit":
            missing = [n for n in labels.BLENDSHAPES if n not in self.arkit]
            how = (f"ARKit morphs: {len(self.arkit)} of {labels.NUM_BLENDSHAPES} matched"
                   + (f" (missing: {', '.join(missing)})" if missing else " (perfect sync)"))
        else:
            how = ("no ARKit morphs; driven through VRM presets " + ", ".join(sorted(self.presets))
                   + " (mapping: labels.VRM_PRESETS)")
        head = f"head bone: node {self.head_node}" if self.head_node is not None else \
            "no head bone found: head rotation is not shown"
        return f"{self.path}: {kind} avatar; {how}; {head}"


def target_names(mesh: dict) -> list[str]:
    """Morph target names of a mesh: mesh.extras.targetNames, else the first primitive's."""
    names = (mesh.get("extras") or {}).get("targetNames")
    if not names and mesh.get("primitives"):
        names = (mesh["primitives"][0].get("extras") or {}).get("targetNames")
    return [str(n) for n in names] if isinstance(names, list) else []


def _target_count(g: Gltf, mesh: int) -> int:
    primitives = g.doc["meshes"][mesh].get("primitives") or [{}]
    return len(primitives[0].get("targets") or [])
