"""A small software rasterizer in numpy: orthographic, z-buffered, Gouraud-lit triangles.

Headless and dependency-free, for the MP4 preview. Every triangle is expanded
into the pixel centres of its bounding box at once (no Python loop per
triangle); a per-pixel `maximum.at` keeps the nearest surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIGHT_DIRECTION = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])  # toward the light
AMBIENT = 0.38
SRGB_GAMMA = 2.2
# Bounding boxes larger than this (pixels) are skipped: such a triangle is a
# degenerate or camera-clipping one, and expanding it would cost memory.
MAX_TRIANGLE_BOX = 256 * 256


@dataclass
class OrthoCamera:
    """Looks along -Z from +Z (a front view of an avatar facing +Z)."""

    center: np.ndarray  # (3,) world point at the image centre
    height_m: float     # world metres shown from top to bottom
    width: int
    height: int

    def project(self, points: np.ndarray) -> np.ndarray:
        """(V, 3) world → (V, 3): pixel x, pixel y (down), depth (larger is nearer)."""
        scale = self.height / self.height_m
        x = (points[:, 0] - self.center[0]) * scale + self.width / 2
        y = (self.center[1] - points[:, 1]) * scale + self.height / 2
        return np.stack([x, y, points[:, 2]], -1)


def vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (positions[triangles[:, k]] for k in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros((len(positions), 3))
    for k in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(triangles[:, k], face[:, axis], len(positions))
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def shade(positions: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per-vertex lit colour (V, 3) in linear RGB: ambient + Lambert from one light."""
    lambert = np.clip(vertex_normals(positions, triangles) @ LIGHT_DIRECTION, 0.0, 1.0)
    return colors * (AMBIENT + (1 - AMBIENT) * lambert)[:, None]


def rasterize(screen: np.ndarray, triangles: np.ndarray, vertex_colors: np.ndarray,
              image: np.ndarray) -> np.ndarray:
    """Draw triangles over `image` (H, W, 3) float linear RGB, in place; return the coverage mask (H, W).

    screen: (V, 3) pixel x, pixel y, depth (larger nearer). Back faces (clockwise on
    screen, since y points down) are culled.
    """
    h, w = image.shape[:2]
    a, b, c = (screen[triangles[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    xs = np.stack([a[:, 0], b[:, 0], c[:, 0]], 1)
    ys = np.stack([a[:, 1], b[:, 1], c[:, 1]], 1)
    x0 = np.clip(np.floor(xs.min(1) - 0.5), 0, w).astype(np.int64)
    x1 = np.clip(np.ceil(xs.max(1) - 0.5), -1, w - 1).astype(np.int64)
    y0 = np.clip(np.floor(ys.min(1) - 0.5), 0, h).astype(np.int64)
    y1 = np.clip(np.ceil(ys.max(1) - 0.5), -1, h - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    keep = (area < -1e-9) & (bw > 0) & (bh > 0) & (bw * bh <= MAX_TRIANGLE_BOX)  # front-facing
    tri = np.nonzero(keep)[0]
    sizes = (bw * bh)[tri]
    mask = np.zeros((h, w), bool)
    if sizes.sum() == 0:
        return mask
    owner = np.repeat(tri, sizes)
    k = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    px = x0[owner] + k % bw[owner]
    py = y0[owner] + k // bw[owner]
    cx, cy = px + 0.5, py + 0.5
    ta, tb, tc = a[owner], b[owner], c[owner]
    inv = 1.0 / area[owner]
    # Barycentric weights from the edge functions (all share the area's sign inside).
    wa = ((tb[:, 0] - cx) * (tc[:, 1] - cy) - (tb[:, 1] - cy) * (tc[:, 0] - cx)) * inv
    wb = ((tc[:, 0] - cx) * (ta[:, 1] - cy) - (tc[:, 1] - cy) * (ta[:, 0] - cx)) * inv
    wc = 1.0 - wa - wb
    inside = (wa >= 0) & (wb >= 0) & (wc >= 0)
    owner, px, py, wa, wb, wc = owner[inside], px[inside], py[inside], wa[inside], wb[inside], wc[inside]
    depth = wa * a[owner, 2] + wb * b[owner, 2] + wc * c[owner, 2]
    pixel = py * w + px
    nearest = np.full(h * w, -np.inf)
    np.maximum.at(nearest, pixel, depth)
    win = depth >= nearest[pixel]
    owner, pixel = owner[win], pixel[win]
    t = triangles[owner]
    color = (wa[win, None] * vertex_colors[t[:, 0]] + wb[win, None] * vertex_colors[t[:, 1]]
             + wc[win, None] * vertex_colors[t[:, 2]])
    flat = image.reshape(-1, 3)
    flat[pixel] = color
    mask.reshape(-1)[pixel] = True
    return mask


def to_srgb8(image: np.ndarray) -> np.ndarray:
    """Linear RGB float → sRGB-ish uint8 (gamma 2.2)."""
    return (np.clip(image, 0.0, 1.0) ** (1 / SRGB_GAMMA) * 255 + 0.5).astype(np.uint8)
