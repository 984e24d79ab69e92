"""A small software rasterizer in numpy: orthographic, z-buffered, Gouraud-lit triangles.

Headless and dependency-free, for the MP4 preview. All triangles are expanded
into their row spans and then pixel centres at once (no Python loop per
triangle); a per-pixel `maximum.at` keeps the nearest surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIGHT_DIRECTION = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])  # toward the light
AMBIENT = 0.38
SRGB_GAMMA = 2.2
SRGB_LEVELS = 4096  # linear values are quantised to this many steps for the gamma lookup
_SRGB_TABLE = (np.linspace(0.0, 1.0, SRGB_LEVELS) ** (1 / SRGB_GAMMA) * 255 + 0.5).astype(np.uint8)


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


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts (N,): (owner (sum,), k (sum,)) — item i repeated counts[i] times, k counting 0.. within."""
    owner = np.repeat(np.arange(len(counts)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, k


def _row_spans(a, b, c, rows_y):
    """Pixel-centre x range [x_lo, x_hi] of each (triangle, row) pair: where y = rows_y crosses the triangle."""
    lo = np.full(rows_y.shape, np.inf)
    hi = np.full(rows_y.shape, -np.inf)
    for p, q in ((a, b), (b, c), (c, a)):
        crosses = (np.minimum(p[:, 1], q[:, 1]) <= rows_y) & (rows_y < np.maximum(p[:, 1], q[:, 1]))
        dy = np.where(crosses, q[:, 1] - p[:, 1], 1.0)
        x = p[:, 0] + (rows_y - p[:, 1]) * (q[:, 0] - p[:, 0]) / dy
        lo = np.where(crosses, np.minimum(lo, x), lo)
        hi = np.where(crosses, np.maximum(hi, x), hi)
    return lo, hi


def rasterize(screen: np.ndarray, triangles: np.ndarray, vertex_colors: np.ndarray,
              image: np.ndarray, depth_buffer: np.ndarray | None = None) -> np.ndarray:
    """Draw triangles over `image` (H, W, 3) float linear RGB, in place; return the depth buffer (H, W).

    screen: (V, 3) pixel x, pixel y, depth (larger nearer). Back faces (clockwise on
    screen, since y points down) are culled. Each triangle is cut into row spans,
    so only pixel centres inside it are visited. depth_buffer: the depths already
    in `image` (-inf where empty), so a pre-drawn static scene occludes correctly.
    """
    h, w = image.shape[:2]
    nearest = np.full(h * w, -np.inf) if depth_buffer is None else depth_buffer.reshape(-1).copy()
    depths = nearest.reshape(h, w)  # a view: filled in place below
    a, b, c = (screen[triangles[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ys = np.stack([a[:, 1], b[:, 1], c[:, 1]], 1)
    y0 = np.clip(np.ceil(ys.min(1) - 0.5), 0, h).astype(np.int64)       # first row whose centre is inside
    y1 = np.clip(np.floor(ys.max(1) - 0.5), -1, h - 1).astype(np.int64)
    keep = np.nonzero((area < -1e-9) & (y1 >= y0))[0]  # front-facing, covering a row centre
    if not len(keep):
        return depths
    tri_of_row, k = _expand((y1 - y0 + 1)[keep])
    tri = keep[tri_of_row]
    py_row = y0[tri] + k
    lo, hi = _row_spans(a[tri], b[tri], c[tri], py_row + 0.5)
    x0 = np.clip(np.ceil(lo - 0.5), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(hi - 0.5), -1, w - 1).astype(np.int64)
    spans = np.maximum(x1 - x0 + 1, 0)
    span_of_pixel, kx = _expand(spans)
    owner = tri[span_of_pixel]
    px = x0[span_of_pixel] + kx
    py = py_row[span_of_pixel]
    cx, cy = px + 0.5, py + 0.5
    ta, tb, tc = a[owner], b[owner], c[owner]
    inv = 1.0 / area[owner]
    # Barycentric weights from the edge functions.
    wa = ((tb[:, 0] - cx) * (tc[:, 1] - cy) - (tb[:, 1] - cy) * (tc[:, 0] - cx)) * inv
    wb = ((tc[:, 0] - cx) * (ta[:, 1] - cy) - (tc[:, 1] - cy) * (ta[:, 0] - cx)) * inv
    wc = 1.0 - wa - wb
    depth = wa * ta[:, 2] + wb * tb[:, 2] + wc * tc[:, 2]
    pixel = py * w + px
    np.maximum.at(nearest, pixel, depth)
    win = depth >= nearest[pixel]
    owner, pixel = owner[win], pixel[win]
    t = triangles[owner]
    color = (wa[win, None] * vertex_colors[t[:, 0]] + wb[win, None] * vertex_colors[t[:, 1]]
             + wc[win, None] * vertex_colors[t[:, 2]])
    image.reshape(-1, 3)[pixel] = color
    return depths


def to_srgb8(image: np.ndarray) -> np.ndarray:
    """Linear RGB float → sRGB-ish uint8 (gamma 2.2)."""
    steps = (np.clip(image, 0.0, 1.0) * (SRGB_LEVELS - 1) + 0.5).astype(np.int32)
    return _SRGB_TABLE[steps]
