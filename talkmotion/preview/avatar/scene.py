"""An avatar's triangles in world space, posable by morph weights and a head rotation.

Used by the preview renderer. The rest pose comes from the node tree (and the
skins' inverse bind matrices for skinned meshes); morph displacements are moved
into world space with the same per-vertex linear map. Head rotation turns each
vertex about the head joint by its share of skin weight on the head bone and
its children (1 for meshes hanging under the head node), which is what linear
blend skinning does for a rotation of that one bone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..gltf import GltfError
from . import AvatarError
from .loader import Avatar

MODE_TRIANGLES = 4
SRGB_GAMMA = 2.2


@dataclass
class PosableMesh:
    base: np.ndarray         # (V, 3) float32 world rest positions
    deltas: np.ndarray       # (K, V, 3) float32 world displacement per morph slot
    slots: list              # K × (mesh index, target index)
    colors: np.ndarray       # (V, 3) float32 linear RGB
    triangles: np.ndarray    # (F, 3) int64
    head_weight: np.ndarray  # (V,) float32 share of the head rotation
    head_pivot: np.ndarray   # (3,) head joint, world

    def slot_weights(self, avatar: Avatar, blendshapes: np.ndarray) -> np.ndarray:
        """(T, 52) ARKit weights → (T, K) weights of this mesh's morph slots."""
        per_mesh = avatar.mesh_weights(blendshapes)
        out = np.zeros((blendshapes.shape[0], len(self.slots)), np.float32)
        for k, (mesh, target) in enumerate(self.slots):
            if mesh in per_mesh:
                out[:, k] = per_mesh[mesh][:, target]
        return out

    def pose(self, weights: np.ndarray, head_rotation: np.ndarray) -> np.ndarray:
        """(K,) slot weights and a (3, 3) world head rotation → (V, 3) world positions."""
        active = np.nonzero(weights > 1e-4)[0]
        pos = self.base.copy()
        if len(active):
            pos += np.tensordot(weights[active], self.deltas[active], axes=1)
        rel = pos - self.head_pivot
        turned = rel @ head_rotation.T + self.head_pivot
        return pos + self.head_weight[:, None] * (turned - pos)


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # glTF stores column-major
    from ...rotation import quaternion_matrices

    m = np.eye(4)
    m[:3, :3] = quaternion_matrices(np.asarray(node.get("rotation", [0, 0, 0, 1]), np.float64)) \
        * np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


def world_matrices(doc: dict) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Rest world matrix of every node reachable from the scene, and each node's parent."""
    nodes = doc.get("nodes") or []
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    scenes = doc.get("scenes") or []
    roots = scenes[doc.get("scene", 0)]["nodes"] if scenes else [i for i in range(len(nodes)) if i not in parent]
    world: dict[int, np.ndarray] = {}
    stack = [(r, np.eye(4)) for r in roots]
    while stack:
        i, above = stack.pop()
        if i in world:   # glTF nodes form trees; a node reached twice would loop or be placed twice
            raise ValueError(f"node {i} is reached twice from the scene (a cycle or a shared child)")
        world[i] = above @ _local_matrix(nodes[i])
        stack += [(c, world[i]) for c in nodes[i].get("children", [])]
    return world, parent


def _subtree(doc: dict, root: int | None) -> set[int]:
    if root is None:
        return set()
    nodes, out, stack = doc["nodes"], set(), [root]
    while stack:
        i = stack.pop()
        out.add(i)
        stack += nodes[i].get("children", [])
    return out


def _texture_colors(avatar: Avatar, material: dict, uv: np.ndarray | None) -> np.ndarray | None:
    """Base colour texture sampled at each vertex's TEXCOORD_0 (linear RGB), if readable."""
    info = (material.get("pbrMetallicRoughness") or {}).get("baseColorTexture")
    if info is None or uv is None:
        return None
    doc, g = avatar.gltf.doc, avatar.gltf
    try:
        image = doc["images"][doc["textures"][info["index"]]["source"]]
        view = doc["bufferViews"][image["bufferView"]]
    except (KeyError, IndexError, TypeError):
        return None  # external or missing image: fall back to the colour factor
    from PIL import Image, UnidentifiedImageError

    start = view.get("byteOffset", 0)
    try:
        pixels = np.asarray(Image.open(io.BytesIO(bytes(g.binary[start:start + view["byteLength"]]))).convert("RGB"))
    except (UnidentifiedImageError, OSError):
        return None
    h, w = pixels.shape[:2]
    x = np.clip((np.mod(uv[:, 0], 1.0) * w).astype(int), 0, w - 1)
    y = np.clip((np.mod(uv[:, 1], 1.0) * h).astype(int), 0, h - 1)
    return (pixels[y, x] / 255.0) ** SRGB_GAMMA


def build_posable(avatar: Avatar) -> PosableMesh:
    """Gather every triangle primitive of the avatar's scene into one posable mesh.
    AvatarError naming the file when its scene cannot be assembled."""
    try:
        with np.errstate(invalid="ignore", over="ignore"):   # non-finite data is refused below instead
            mesh = _build_posable(avatar)
    except (AvatarError, GltfError):
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:   # a file's broken references
        raise AvatarError(f"{avatar.path}: its scene cannot be assembled for drawing ({err!r})") from None
    for name in ("base", "deltas", "colors", "head_pivot"):
        if not np.isfinite(getattr(mesh, name)).all():
            raise AvatarError(f"{avatar.path}: its mesh data ({name.replace('_', ' ')}) holds NaN or infinite numbers")
    return mesh


def _build_posable(avatar: Avatar) -> PosableMesh:
    g, doc = avatar.gltf, avatar.gltf.doc
    world, _ = world_matrices(doc)
    head_nodes = _subtree(doc, avatar.head_node)
    used = sorted({(m, t) for binds in (*avatar.arkit.values(), *avatar.presets.values()) for m, t, _ in binds})
    slot_index = {s: k for k, s in enumerate(used)}
    bases, colors, tris, heads, deltas = [], [], [], [], []
    offset = 0
    for node_index, mat in world.items():
        node = doc["nodes"][node_index]
        if "mesh" not in node:
            continue
        mesh_index = node["mesh"]
        for prim in doc["meshes"][mesh_index].get("primitives", []):
            if prim.get("mode", MODE_TRIANGLES) != MODE_TRIANGLES:
                continue
            attrs = prim["attributes"]
            local = g.accessor(attrs["POSITION"]).astype(np.float64)
            n = len(local)
            if "skin" in node and "JOINTS_0" in attrs and "WEIGHTS_0" in attrs:
                skin = doc["skins"][node["skin"]]
                joints = skin["joints"]
                ibm = (g.accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
                       if "inverseBindMatrices" in skin else np.tile(np.eye(4), (len(joints), 1, 1)))
                joint_mats = np.stack([world.get(j, np.eye(4)) for j in joints]) @ ibm
                jidx = g.accessor(attrs["JOINTS_0"]).astype(np.int64)
                jw = g.accessor(attrs["WEIGHTS_0"]).astype(np.float64)
                jw /= np.maximum(jw.sum(1, keepdims=True), 1e-9)
                per_vertex = np.einsum("vk,vkij->vij", jw, joint_mats[jidx])
                in_head = np.array([j in head_nodes for j in joints])
                head_w = (jw * in_head[jidx]).sum(1)
            else:
                per_vertex = np.broadcast_to(mat, (n, 4, 4))
                head_w = np.full(n, 1.0 if node_index in head_nodes else 0.0)
            linear = per_vertex[:, :3, :3]
            bases.append(np.einsum("vij,vj->vi", linear, local) + per_vertex[:, :3, 3])
            heads.append(head_w)
            material = doc["materials"][prim["material"]] if "material" in prim else {}
            factor = np.asarray((material.get("pbrMetallicRoughness") or {}).get("baseColorFactor", [1, 1, 1, 1]))[:3]
            col = np.tile(factor, (n, 1))
            if "COLOR_0" in attrs:
                col = col * g.accessor(attrs["COLOR_0"])[:, :3]
            tex = _texture_colors(avatar, material, g.accessor(attrs["TEXCOORD_0"]) if "TEXCOORD_0" in attrs else None)
            if tex is not None:
                col = col * tex
            colors.append(col)
            idx = g.accessor(prim["indices"]).astype(np.int64) if "indices" in prim else np.arange(n)
            tris.append(idx.reshape(-1, 3) + offset)
            block = np.zeros((len(used), n, 3), np.float32)
            for t, target in enumerate(prim.get("targets") or []):
                k = slot_index.get((mesh_index, t))
                if k is not None and "POSITION" in target:
                    block[k] = np.einsum("vij,vj->vi", linear, g.accessor(target["POSITION"]))
            deltas.append(block)
            offset += n
    if not bases:
        raise AvatarError(f"{avatar.path}: no triangle meshes in its scene")
    pivot = world[avatar.head_node][:3, 3] if avatar.head_node in world else np.zeros(3)
    return PosableMesh(np.concatenate(bases).astype(np.float32), np.concatenate(deltas, axis=1),
                       used, np.concatenate(colors).astype(np.float32), np.concatenate(tris),
                       np.concatenate(heads).astype(np.float32), pivot.astype(np.float32))
