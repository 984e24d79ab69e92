"""Minimal glTF 2.0 binary (.glb / .vrm / .vrma) reading and writing.

A `Gltf` is the JSON document plus one binary buffer. Writers append numpy
arrays as accessors; readers turn accessors back into numpy arrays (strided,
normalized and sparse accessors included, as exporters such as UniVRM and
Blender write them). Only what the avatar, the exporters and the renderer need.

GLB layout (glTF 2.0 spec, "Binary glTF Layout"): a 12-byte header
(magic "glTF", version 2, total length), a JSON chunk padded with spaces to 4
bytes, then an optional BIN chunk padded with zeros.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TalkmotionError
from ..files import loads_json

GLB_MAGIC = b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
HEADER = struct.Struct("<4sII")
CHUNK_HEADER = struct.Struct("<II")

# accessor.componentType → numpy dtype
COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16,
                    5125: np.uint32, 5126: np.float32}
DTYPE_COMPONENTS = {np.dtype(v): k for k, v in COMPONENT_DTYPES.items()}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
SIZE_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
TARGET_ARRAY_BUFFER = 34962
TARGET_ELEMENT_ARRAY_BUFFER = 34963


class GltfError(TalkmotionError, ValueError):
    """A glTF/GLB file that cannot be read; the message names the file."""


@dataclass
class Gltf:
    """A glTF document (`doc`, the parsed JSON) and its single binary buffer."""

    doc: dict = field(default_factory=lambda: {"asset": {"version": "2.0", "generator": "talkmotion"}})
    binary: bytearray = field(default_factory=bytearray)
    source: str = "<gltf>"

    # --- writing ----------------------------------------------------------------
    def add(self, kind: str, item: dict) -> int:
        """Append `item` to the top-level list `kind` (nodes, meshes, ...); return its index."""
        items = self.doc.setdefault(kind, [])
        items.append(item)
        return len(items) - 1

    def add_accessor(self, array: np.ndarray, target: int | None = None, bounds: bool = False) -> int:
        """Store a (count,) or (count, n) array as a tightly packed accessor; return its index.

        bounds: write min/max (required for POSITION and animation input accessors).
        """
        array = np.ascontiguousarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        count = array.shape[0]
        width = 1 if array.ndim == 1 else array.shape[1]
        while len(self.binary) % 4:  # accessors must be aligned to their component size
            self.binary.append(0)
        view = {"buffer": 0, "byteOffset": len(self.binary), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.binary.extend(array.tobytes())
        accessor = {"bufferView": self.add("bufferViews", view), "componentType": DTYPE_COMPONENTS[array.dtype],
                    "count": count, "type": SIZE_TYPES[width]}
        if bounds and count:
            flat = array.reshape(count, width)
            accessor["min"] = [float(v) for v in flat.min(0)]
            accessor["max"] = [float(v) for v in flat.max(0)]
        return self.add("accessors", accessor)

    def to_glb(self) -> bytes:
        doc = dict(self.doc)
        binary = bytes(self.binary)
        binary += b"\0" * (-len(binary) % 4)
        if binary:
            doc["buffers"] = [{"byteLength": len(binary)}]
        text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 4)
        total = HEADER.size + CHUNK_HEADER.size + len(text) + (CHUNK_HEADER.size + len(binary) if binary else 0)
        out = bytearray(HEADER.pack(GLB_MAGIC, GLB_VERSION, total))
        out += CHUNK_HEADER.pack(len(text), CHUNK_JSON) + text
        if binary:
            out += CHUNK_HEADER.pack(len(binary), CHUNK_BIN) + binary
        return bytes(out)

    # --- reading ----------------------------------------------------------------
    def accessor(self, index: int) -> np.ndarray:
        """Accessor `index` as float32 (count, width) or (count,) for scalars; normalized ints scaled."""
        try:
            acc = self.doc["accessors"][index]
            dtype = np.dtype(COMPONENT_DTYPES[acc["componentType"]])
            width = TYPE_SIZES[acc["type"]]
            count = int(acc["count"])
        except (KeyError, IndexError, TypeError) as err:
            raise GltfError(f"{self.source}: accessor {index} is missing or malformed ({err!r})") from None
        if "bufferView" in acc:
            data = self._view_elements(acc.get("bufferView"), acc.get("byteOffset", 0), dtype, width, count)
        else:  # no data: zeros, possibly overridden by sparse values
            data = np.zeros((count, width), dtype)
        if "sparse" in acc:
            data = data.copy()
            sparse = acc["sparse"]
            n = int(sparse["count"])
            idx_dtype = np.dtype(COMPONENT_DTYPES[sparse["indices"]["componentType"]])
            rows = self._view_elements(sparse["indices"]["bufferView"], sparse["indices"].get("byteOffset", 0),
                                       idx_dtype, 1, n)[:, 0]
            values = self._view_elements(sparse["values"]["bufferView"], sparse["values"].get("byteOffset", 0),
                                         dtype, width, n)
            data[rows.astype(np.int64)] = values
        out = data.astype(np.float32)
        if acc.get("normalized") and dtype.kind in "iu":
            out /= float(np.iinfo(dtype).max)
            if dtype.kind == "i":
                out = np.maximum(out, -1.0)
        return out[:, 0] if width == 1 else out

    def _view_elements(self, view_index: int, offset: int, dtype: np.dtype, width: int, count: int) -> np.ndarray:
        try:
            view = self.doc["bufferViews"][view_index]
        except (KeyError, IndexError, TypeError):
            raise GltfError(f"{self.source}: bufferView {view_index} does not exist") from None
        if view.get("buffer", 0) != 0:
            raise GltfError(f"{self.source}: only single-buffer GLB files are supported")
        element = dtype.itemsize * width
        view_offset, stride = view.get("byteOffset", 0), view.get("byteStride") or element
        view_length = view.get("byteLength", 0)
        numbers = (view_offset, view_length, offset, stride, count)
        if not all(isinstance(v, int) and v >= 0 for v in numbers) or stride < element:
            raise GltfError(f"{self.source}: bufferView {view_index} has a negative or non-integer offset, "
                            f"length, count or stride")
        start = view_offset + offset
        end = start + stride * (count - 1) + element if count else start
        if end > len(self.binary) or end > view_offset + view_length:
            raise GltfError(f"{self.source}: bufferView {view_index} is shorter than its accessor needs")
        raw = np.frombuffer(self.binary, np.uint8, count=end - start, offset=start) if count else np.zeros(0, np.uint8)
        if stride == element:
            return raw.view(dtype).reshape(count, width)
        rows = np.lib.stride_tricks.as_strided(raw, shape=(count, element), strides=(stride, 1))
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)


def parse_glb(data: bytes, source: str = "<glb>") -> Gltf:
    """Bytes of a .glb/.vrm/.vrma file → Gltf. Raises GltfError naming `source`."""
    if len(data) < HEADER.size or data[:4] != GLB_MAGIC:
        raise GltfError(f"{source}: not a binary glTF file (no 'glTF' header)")
    _, version, length = HEADER.unpack_from(data)
    if version != GLB_VERSION:
        raise GltfError(f"{source}: glTF container version {version} is not supported (want 2)")
    if length > len(data):
        raise GltfError(f"{source}: truncated: header says {length} bytes, file has {len(data)}")
    pos, doc, binary = HEADER.size, None, bytearray()
    while pos + CHUNK_HEADER.size <= length:
        size, kind = CHUNK_HEADER.unpack_from(data, pos)
        chunk = data[pos + CHUNK_HEADER.size: pos + CHUNK_HEADER.size + size]
        if len(chunk) != size:
            raise GltfError(f"{source}: truncated chunk at byte {pos}")
        if kind == CHUNK_JSON:
            doc = loads_json(bytes(chunk), f"{source}: JSON chunk", GltfError)
        elif kind == CHUNK_BIN and not binary:
            binary = bytearray(chunk)
        pos += CHUNK_HEADER.size + size
    if not isinstance(doc, dict):
        raise GltfError(f"{source}: no JSON chunk")
    return Gltf(doc, binary, source)


def read_glb(path: str | Path) -> Gltf:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GltfError(f"{path}: cannot read ({err.strerror or err})") from None
    return parse_glb(data, str(path))
