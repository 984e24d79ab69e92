"""The reference head, built procedurally: geometry, vertex colours and the 52 ARKit morph targets.

Everything is in metres in the glTF/VRM frame (Y up, the avatar faces +Z, its
left is +X). The head is a deformed ellipsoid (nose, brow ridge, eye sockets,
chin, a tapering jaw) whose grid is cut along the mouth line, so the lower lip
and the jaw can pull away from the upper lip and show a dark mouth cavity with
teeth and a tongue. The eyes are separate balls that rotate for eyeLook*, and
the eyelids are spherical shells around them that slide closed for eyeBlink*.

Colour is per vertex (no textures), so every colour edge that must read as a
clean line is a line of vertices: each eyeball is tessellated in rings around its
gaze axis, with rings on the pupil, iris and limbus edges (round at any size, not
the diamond a lat-long grid gives), and the brows are their own tapered strips
of geometry on the skin, moved by the brow morphs like the skin under them.

Each morph target is a displacement of the region that ARKit's shape moves, as
a smooth (Gaussian) falloff or a rotation, so a frame of weights reads as a face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import labels
from ...rotation import axis_angle_quaternions, quaternion_matrices

# --- proportions (metres) -----------------------------------------------------
HEAD_CENTER = np.array([0.0, 1.56, 0.005])
HEAD_RADII = np.array([0.075, 0.10, 0.092])
HEAD_ROWS, HEAD_COLUMNS = 64, 96      # latitude rows × longitude columns of the skin grid
MOUTH_ROW = 42                        # the grid row the mouth opens along (v ≈ -0.047)
MOUTH_HALF_WIDTH = 0.024
JAW_TAPER = 0.22                      # the jaw is this much narrower than the skull at the chin
EYE_OFFSET = np.array([0.031, 0.014])  # (±x, y) of the eye centres from the head centre
EYE_RADIUS = 0.0135
EYE_SINK = 0.005                      # eyeball centre behind the (indented) skin
# The lids close from both sides, and stand 1.5 mm off the ball: a morph moves a vertex
# along a straight chord, and over these arcs (42° and 20°) the chord's middle still
# clears the eyeball, so a half-closed lid edge stays in front of the eye.
LID_RADIUS = 0.0150
UPPER_LID_OPEN = np.radians(27.0)     # elevation of the upper lid's edge, eye open
UPPER_LID_CLOSED = np.radians(-15.0)  # ... when blinking (overlaps the raised lower lid)
LOWER_LID_EDGE = np.radians(-32.0)
LOWER_LID_CLOSED = np.radians(-12.0)  # the lower lid's edge when blinking
LID_SPAN = np.radians(75.0)           # lids cover ±this azimuth around the eye
LID_REACH = np.radians(80.0)          # ... and up/down to this elevation (not the pole: no degenerate triangles)

# --- motion amounts -------------------------------------------------------------
JAW_OPEN_DEG = 14.0
JAW_PIVOT = HEAD_CENTER + np.array([0.0, -0.005, -0.045])
EYE_LOOK_DEG = 25.0

# --- eyes and brows: shapes (degrees from the gaze axis; metres on the face) -------
PUPIL_DEG = 9.0                       # pupil radius as an angle on the eyeball
IRIS_DEG = 27.0                       # iris radius (a human iris spans about 12 mm of a 24 mm ball)
LIMBUS_DEG = 2.5                      # the dark ring at the iris's rim
EDGE_DEG = 0.5                        # colour edges go from one colour to the next over this
EYE_SEGMENTS = 48                     # vertices around each ring
SCLERA_RINGS_DEG = (45.0, 70.0, 95.0, 125.0, 155.0)  # rings behind the iris, to the back pole
BROW_INNER_U, BROW_OUTER_U = 0.012, 0.053  # |x| of each brow's inner and outer end
BROW_THICKNESS = ((0.0, 0.0050), (0.3, 0.0065), (0.75, 0.0045), (1.0, 0.0015))  # (along, thickness)
BROW_SEGMENTS = 24                    # quads along each brow
BROW_LIFT = 0.0015                    # brows float this far in front of the skin (no z-fighting)
LASH_DEG = 3.0                        # the dark lash band along the upper lid's edge
LID_WIDE_RAD = np.radians(14.0)
LID_SQUINT_RAD = np.radians(16.0)

# --- colours (linear RGB) --------------------------------------------------------
SKIN = (0.92, 0.72, 0.60)
LIPS = (0.72, 0.30, 0.30)
BROWS = (0.22, 0.14, 0.10)
HAIR = (0.20, 0.12, 0.07)
SCLERA = (0.95, 0.95, 0.92)
IRIS_INNER = (0.30, 0.42, 0.50)       # an iris lighter round the pupil, darker at its rim
IRIS_OUTER = (0.07, 0.17, 0.30)
LIMBUS = (0.03, 0.05, 0.08)
PUPIL = (0.01, 0.01, 0.01)
LASH = (0.06, 0.035, 0.03)
CAVITY = (0.22, 0.04, 0.06)
TEETH = (0.95, 0.93, 0.86)
TONGUE = (0.80, 0.35, 0.38)
SHIRT = (0.25, 0.35, 0.55)

# Part ids: which region a vertex belongs to (morphs select by part).
PART_SKIN, PART_EYE_LEFT, PART_EYE_RIGHT, PART_LID_LEFT, PART_LID_RIGHT, PART_CAVITY, PART_TONGUE = range(7)


@dataclass
class MeshPart:
    """Triangle soup with per-vertex colours and the bookkeeping the morphs need."""

    positions: np.ndarray            # (V, 3) float32, world metres
    colors: np.ndarray               # (V, 3) float32 linear RGB
    triangles: np.ndarray            # (F, 3) uint32, counter-clockwise seen from outside
    morphs: dict = field(default_factory=dict)  # ARKit name → (V, 3) displacement


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def gaussian(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-0.5 * ((u - cu) / su) ** 2 - 0.5 * ((v - cv) / sv) ** 2)


def rotate_about(points: np.ndarray, pivot: np.ndarray, axis: np.ndarray, degrees: float) -> np.ndarray:
    """Displacement (N, 3) that rotates `points` about a line through `pivot` along `axis`."""
    r = quaternion_matrices(axis_angle_quaternions(axis, degrees))
    return (points - pivot) @ r.T + pivot - points


def outward_triangles(positions: np.ndarray, triangles: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points toward `center`, so every part faces outward."""
    a, b, c = (positions[triangles[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    inward = np.einsum("ij,ij->i", normal, (a + b + c) / 3 - center) < 0
    out = triangles.copy()
    out[inward] = out[inward][:, [0, 2, 1]]
    return out


def ellipsoid_grid(center, radii, rows: int, columns: int):
    """A closed lat-long ellipsoid: positions (V, 3), unit directions (V, 3), triangles (F, 3).

    Vertex 0 is the top pole, vertex 1 the bottom pole, then rows 1..rows-1 of `columns` each.
    """
    theta = np.pi * np.arange(1, rows) / rows
    phi = 2 * np.pi * np.arange(columns) / columns - np.pi  # column columns/2 is the front (+Z)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    dirs = np.concatenate([[[0, 1, 0], [0, -1, 0]], ring])
    grid = 2 + np.arange((rows - 1) * columns).reshape(rows - 1, columns)
    tris = []
    for i in range(rows - 2):
        for j in range(columns):
            a, b = grid[i, j], grid[i, (j + 1) % columns]
            c, d = grid[i + 1, (j + 1) % columns], grid[i + 1, j]
            tris += [(a, b, c), (a, c, d)]
    for j in range(columns):
        tris.append((0, grid[0, (j + 1) % columns], grid[0, j]))
        tris.append((1, grid[-1, j], grid[-1, (j + 1) % columns]))
    positions = np.asarray(center) + dirs * np.asarray(radii)
    return positions, dirs, np.asarray(tris, np.int64), grid


# --- the skin ----------------------------------------------------------------------

def _skin():
    """Head skin: positions, colours, triangles and the per-vertex fields the morphs use."""
    pos, dirs, tris, grid = ellipsoid_grid(HEAD_CENTER, HEAD_RADII, HEAD_ROWS, HEAD_COLUMNS)
    u = pos[:, 0] - HEAD_CENTER[0]
    v = pos[:, 1] - HEAD_CENTER[1]
    front = smoothstep(0.2, 0.6, dirs[:, 2])
    # Jaw narrower than the skull; the face flatter than a ball.
    pos[:, 0] *= 1 - JAW_TAPER * smoothstep(0.0, HEAD_RADII[1], -v) * smoothstep(-0.3, 0.5, dirs[:, 2])
    bumps = (0.020 * gaussian(u, v, 0, -0.012, 0.009, 0.014)       # nose bridge and body
             + 0.006 * gaussian(u, v, 0, -0.024, 0.007, 0.006)     # nose tip
             + 0.004 * gaussian(u, v, 0, 0.030, 0.040, 0.008)      # brow ridge
             + 0.005 * gaussian(u, v, 0, -0.082, 0.020, 0.012)     # chin
             + 0.004 * gaussian(u, v, 0, -0.047, 0.020, 0.008)     # lips
             - 0.007 * gaussian(np.abs(u), v, EYE_OFFSET[0], EYE_OFFSET[1], 0.014, 0.009))  # sockets
    pos[:, 2] += bumps * front
    u = pos[:, 0] - HEAD_CENTER[0]

    # Cut along the mouth: inner mouth-row vertices get a twin that belongs to the lower lip.
    mouth_row = grid[MOUTH_ROW - 1]
    inner = mouth_row[(np.abs(u[mouth_row]) < MOUTH_HALF_WIDTH) & (dirs[mouth_row, 2] > 0)]
    twin = {int(k): len(pos) + n for n, k in enumerate(inner)}
    below = set(grid[MOUTH_ROW].tolist())
    for t in tris:  # triangles under the mouth line use the twins
        if any(k in below for k in t):
            for c in range(3):
                t[c] = twin.get(int(t[c]), t[c])
    lower_twin = np.zeros(len(pos) + len(inner), bool)
    lower_twin[len(pos):] = True
    pos, dirs, u, v, front = (np.concatenate([a, a[inner]]) for a in (pos, dirs, u, v, front))
    mouth_v = float(v[inner].mean())

    colors = np.tile(SKIN, (len(pos), 1))
    lips = ((u / (MOUTH_HALF_WIDTH + 0.003)) ** 2 + ((v - mouth_v) / np.where(v > mouth_v, 0.008, 0.011)) ** 2 < 1)
    colors[lips & (front > 0.5)] = LIPS
    hairline = np.interp(dirs[:, 2], [-0.2, 0.6], [-0.035, 0.062])
    colors[v > hairline] = HAIR
    fields = dict(u=u, v=v, dirs=dirs, front=front, lower_twin=lower_twin, mouth_v=mouth_v)
    return pos, colors, outward_triangles(pos, tris, HEAD_CENTER), fields


# --- eyes, lids, mouth cavity, tongue -----------------------------------------------

def eye_centers(skin_pos: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left (+X) and right eye centres: behind the skin's front surface at the eye position."""
    centers = []
    for side in (1, -1):
        near = (np.abs(u - side * EYE_OFFSET[0]) < 0.004) & (np.abs(v - EYE_OFFSET[1]) < 0.004)
        z = skin_pos[near, 2].max()
        centers.append(np.array([side * EYE_OFFSET[0], HEAD_CENTER[1] + EYE_OFFSET[1], z - EYE_SINK]))
    return centers[0], centers[1]


def _eyeball(center: np.ndarray):
    """A ball tessellated in rings around its gaze (+Z), with rings on every colour edge."""
    rings = [  # (degrees from the gaze axis, colour)
        (PUPIL_DEG, PUPIL), (PUPIL_DEG + EDGE_DEG, IRIS_INNER),
        (IRIS_DEG - LIMBUS_DEG, IRIS_OUTER), (IRIS_DEG - LIMBUS_DEG + EDGE_DEG, LIMBUS),
        (IRIS_DEG, LIMBUS), (IRIS_DEG + EDGE_DEG, SCLERA),
        *((deg, SCLERA) for deg in SCLERA_RINGS_DEG)]
    theta = np.radians([deg for deg, _ in rings])[:, None]
    phi = 2 * np.pi * np.arange(EYE_SEGMENTS) / EYE_SEGMENTS
    ring = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta) + 0 * phi], -1)
    dirs = np.concatenate([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], ring.reshape(-1, 3)])
    colors = np.concatenate([[PUPIL, SCLERA], np.repeat([c for _, c in rings], EYE_SEGMENTS, axis=0)])
    grid = 2 + np.arange(len(rings) * EYE_SEGMENTS).reshape(len(rings), EYE_SEGMENTS)
    nxt = np.roll(grid, -1, axis=1)
    tris = [np.stack([np.zeros(EYE_SEGMENTS, np.int64), grid[0], nxt[0]], -1),          # front cap
            np.stack([np.ones(EYE_SEGMENTS, np.int64), nxt[-1], grid[-1]], -1)]         # back cap
    for i in range(len(rings) - 1):
        tris += [np.stack([grid[i], grid[i + 1], nxt[i + 1]], -1), np.stack([grid[i], nxt[i + 1], nxt[i]], -1)]
    pos = center + EYE_RADIUS * dirs
    return pos, np.asarray(colors, np.float64), outward_triangles(pos, np.concatenate(tris), center)


def _skin_depth(skin_pos: np.ndarray, front: np.ndarray, xy: np.ndarray, neighbours: int = 4) -> np.ndarray:
    """z of the face's front surface under each (x, y) of `xy` (N, 2): inverse-distance weighted."""
    face = skin_pos[front > 0.3]
    d = np.linalg.norm(face[None, :, :2] - xy[:, None, :], axis=-1)                   # (N, S)
    nearest = np.argsort(d, axis=1)[:, :neighbours]
    w = 1.0 / np.maximum(np.take_along_axis(d, nearest, 1), 1e-6)
    return (face[nearest, 2] * w).sum(1) / w.sum(1)


def _brows(skin_pos: np.ndarray, front: np.ndarray):
    """Both brows as tapered, arched strips lying on the skin: positions, colours, triangles."""
    along = np.linspace(0.0, 1.0, BROW_SEGMENTS + 1)
    thickness = np.interp(along, *zip(*BROW_THICKNESS))
    x = BROW_INNER_U + along * (BROW_OUTER_U - BROW_INNER_U)
    arch = 0.034 + 0.006 * (1 - ((x - 0.03) / 0.02) ** 2) - 0.002 * along ** 2    # highest over the eye
    parts = []
    for side in (1, -1):
        rows = [np.stack([side * x, HEAD_CENTER[1] + arch + k * thickness / 2], -1) for k in (-1, 1)]
        xy = np.concatenate(rows)
        z = _skin_depth(skin_pos, front, xy) + BROW_LIFT
        pos = np.concatenate([xy, z[:, None]], -1)
        n = BROW_SEGMENTS + 1
        i = np.arange(BROW_SEGMENTS)
        tris = np.concatenate([np.stack([i, i + 1, n + i + 1], -1), np.stack([i, n + i + 1, n + i], -1)])
        a, b, c = (pos[tris[:, k]] for k in range(3))
        facing_back = np.cross(b - a, c - a)[:, 2] < 0
        tris[facing_back] = tris[facing_back][:, [0, 2, 1]]
        parts.append((pos, tris))
    pos = np.concatenate([parts[0][0], parts[1][0]])
    tris = np.concatenate([parts[0][1], parts[1][1] + len(parts[0][0])])
    return pos, np.tile(BROWS, (len(pos), 1)), tris


def _shell(center, elevations: np.ndarray, azimuths: np.ndarray, radius: float):
    """A patch of sphere around `center`: (rows, cols) grid of elevation × azimuth."""
    e, a = np.meshgrid(elevations, azimuths, indexing="ij")
    pos = center + radius * np.stack([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)], -1)
    rows, cols = e.shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    tris = [(idx[i, j], idx[i, j + 1], idx[i + 1, j + 1]) for i in range(rows - 1) for j in range(cols - 1)]
    tris += [(idx[i, j], idx[i + 1, j + 1], idx[i + 1, j]) for i in range(rows - 1) for j in range(cols - 1)]
    return pos.reshape(-1, 3), e.reshape(-1), a.reshape(-1), np.asarray(tris, np.int64)


def _lids(center: np.ndarray):
    """Upper and lower lid shells; returns positions, colours, triangles, elevation, azimuth, is_upper."""
    azimuths = np.linspace(-LID_SPAN, LID_SPAN, 25)
    lash = np.radians(LASH_DEG)
    upper_rows = np.concatenate([[UPPER_LID_OPEN, UPPER_LID_OPEN + lash, UPPER_LID_OPEN + lash + np.radians(EDGE_DEG)],
                                 np.linspace(UPPER_LID_OPEN + 3 * lash, LID_REACH, 7)])
    parts = []
    for upper, elevations in ((True, upper_rows), (False, np.linspace(-LID_REACH, LOWER_LID_EDGE, 9))):
        pos, e, a, tris = _shell(center, elevations, azimuths, LID_RADIUS)
        colors = np.tile(np.asarray(SKIN) * 0.93, (len(pos), 1))
        if upper:  # a solid lash band along the edge
            colors[e <= UPPER_LID_OPEN + lash + 1e-6] = LASH
        else:
            colors[np.abs(e - LOWER_LID_EDGE) < 1e-6] = np.asarray(SKIN) * 0.75
        parts.append((pos, colors, outward_triangles(pos, tris, center), e, a, np.full(len(pos), upper)))
    return parts


def _cavity(mouth_y: float, mouth_z: float):
    center = np.array([0.0, mouth_y - 0.004, mouth_z - 0.020])
    pos, dirs, tris, _ = ellipsoid_grid(center, (0.024, 0.014, 0.012), 12, 20)
    colors = np.tile(CAVITY, (len(pos), 1))
    teeth = (np.abs(dirs[:, 1]) > 0.3) & (np.abs(dirs[:, 1]) < 0.6) & (dirs[:, 2] > 0.6)
    colors[teeth] = TEETH
    return pos, colors, outward_triangles(pos, tris, center), dirs


def _tongue(mouth_y: float, mouth_z: float):
    center = np.array([0.0, mouth_y - 0.010, mouth_z - 0.018])
    pos, _, tris, _ = ellipsoid_grid(center, (0.016, 0.005, 0.014), 8, 14)
    return pos, np.tile(TONGUE, (len(pos), 1)), outward_triangles(pos, tris, center)


# --- the head mesh with its morphs -----------------------------------------------------

def build_head() -> MeshPart:
    """The whole head as one primitive with all 52 ARKit morph targets (`labels.BLENDSHAPES`)."""
    skin_pos, skin_col, skin_tri, f = _skin()
    mouth_front = (np.abs(f["u"]) < 0.004) & f["lower_twin"]
    mouth_y, mouth_z = HEAD_CENTER[1] + f["mouth_v"], float(skin_pos[mouth_front, 2].max())
    eye_l, eye_r = eye_centers(skin_pos, f["u"], f["v"])

    pieces, part_ids = [], []

    def add(pos, col, tri, part):
        offset = sum(len(p[0]) for p in pieces)
        pieces.append((pos, col, tri + offset))
        part_ids.append(np.full(len(pos), part))
        return slice(offset, offset + len(pos))

    skin = add(skin_pos, skin_col, skin_tri, PART_SKIN)
    brow_pos, brow_col, brow_tri = _brows(skin_pos, f["front"])
    brows = add(brow_pos, brow_col, brow_tri, PART_SKIN)
    eyes = {side: add(*_eyeball(c), part) for side, c, part in
            (("Left", eye_l, PART_EYE_LEFT), ("Right", eye_r, PART_EYE_RIGHT))}
    lid_fields = {}
    for side, c, part in (("Left", eye_l, PART_LID_LEFT), ("Right", eye_r, PART_LID_RIGHT)):
        for pos, col, tri, e, a, upper in _lids(c):
            lid_fields.setdefault(side, []).append((add(pos, col, tri, part), e, a, upper))
    cav_pos, cav_col, cav_tri, cav_dirs = _cavity(mouth_y, mouth_z)
    cavity = add(cav_pos, cav_col, cav_tri, PART_CAVITY)
    tongue = add(*_tongue(mouth_y, mouth_z), PART_TONGUE)

    positions = np.concatenate([p[0] for p in pieces]).astype(np.float64)
    colors = np.concatenate([p[1] for p in pieces])
    triangles = np.concatenate([p[2] for p in pieces])
    n = len(positions)

    # Per-vertex fields over the whole mesh (zero outside the skin). The brows lie on the
    # skin's front and take the fields of the skin there, so every morph carries them along.
    brow_fields = {"u": brow_pos[:, 0] - HEAD_CENTER[0], "v": brow_pos[:, 1] - HEAD_CENTER[1],
                   "front": np.ones(len(brow_pos)), "lower_twin": np.zeros(len(brow_pos)),
                   "dirs_z": np.ones(len(brow_pos))}

    def on_skin(values, fill=0.0, name=None):
        out = np.full((n,) + np.shape(values)[1:], fill, np.float64)
        out[skin] = values
        if name is not None:
            out[brows] = brow_fields[name]
        return out

    u, v, front = on_skin(f["u"], name="u"), on_skin(f["v"], name="v"), on_skin(f["front"], name="front")
    mouth_v = f["mouth_v"]
    twin = on_skin(f["lower_twin"].astype(float), name="lower_twin") > 0
    is_skin = on_skin(1.0) > 0
    is_skin[brows] = True
    lower = is_skin & (twin | (v < mouth_v - 1e-4))
    upper = is_skin & ~lower & (v >= mouth_v - 1e-4)
    left = smoothstep(-0.006, 0.006, u)
    right = 1 - left

    def region(cu, cv, su, sv):
        return gaussian(u, v, cu, cv, su, sv) * front * is_skin

    def vec(weights, d):
        return weights[:, None] * np.asarray(d, np.float64)

    # The jaw: everything under the mouth line, fully inside the mouth's width, fading
    # out over the cheeks and toward the back and the neck.
    depth = np.maximum(mouth_v - v, 0.0)
    in_mouth = 1 - smoothstep(MOUTH_HALF_WIDTH * 0.8, MOUTH_HALF_WIDTH * 1.8, np.abs(u))
    jaw = np.where(lower, np.maximum(in_mouth, smoothstep(0.0, 0.015, depth)), 0.0)
    jaw *= smoothstep(-0.2, 0.4, on_skin(f["dirs"][:, 2], -1.0, name="dirs_z"))
    cav_jaw = np.zeros(n)
    cav_jaw[cavity] = np.clip((0.1 - cav_dirs[:, 1]) / 0.4, 0.0, 1.0)
    jaw = jaw + cav_jaw
    jaw[tongue] = 1.0

    lip_ring = region(0, mouth_v, 0.020, 0.008)
    lips_upper, lips_lower = lip_ring * upper, lip_ring * lower
    wide_mouth = region(0, mouth_v - 0.004, 0.026, 0.014)

    def corner(side, su=0.009, sv=0.008):
        return region(side * (MOUTH_HALF_WIDTH + 0.001), mouth_v, su, sv)

    jaw_open = jaw[:, None] * rotate_about(positions, JAW_PIVOT, np.array([1.0, 0, 0]),
                                               JAW_OPEN_DEG)
    lip_close = lower * np.exp(-(u / 0.026) ** 4) * (1 - smoothstep(0.004, 0.014, depth)) * front
    m = {}
    m["jawOpen"] = jaw_open
    m["jawForward"] = vec(jaw, (0, 0, 0.006))
    m["jawLeft"] = vec(jaw, (0.007, 0, 0))
    m["jawRight"] = vec(jaw, (-0.007, 0, 0))
    m["mouthClose"] = -lip_close[:, None] * jaw_open
    m["mouthFunnel"] = (vec(lip_ring, (0, 0, 0.007)) + vec(corner(1), (-0.005, 0, 0)) + vec(corner(-1), (0.005, 0, 0))
                        + vec(lips_upper, (0, 0.003, 0)) + vec(lips_lower, (0, -0.004, 0)))
    m["mouthPucker"] = (vec(lip_ring, (0, 0, 0.009)) + vec(corner(1), (-0.008, 0, 0.002))
                        + vec(corner(-1), (0.008, 0, 0.002)))
    m["mouthLeft"] = vec(wide_mouth, (0.008, 0, 0))
    m["mouthRight"] = vec(wide_mouth, (-0.008, 0, 0))
    for side, name, s in ((left, "Left", 1), (right, "Right", -1)):
        m[f"mouthSmile{name}"] = vec(corner(s, 0.012, 0.011), (s * 0.004, 0.007, -0.003))
        m[f"mouthFrown{name}"] = vec(corner(s), (s * 0.001, -0.006, 0))
        m[f"mouthDimple{name}"] = vec(corner(s), (s * 0.003, 0, -0.003))
        m[f"mouthStretch{name}"] = vec(corner(s, 0.011, 0.009), (s * 0.007, -0.002, -0.001))
        m[f"mouthPress{name}"] = (vec(side * lips_upper, (0, -0.0015, -0.001))
                                  + vec(side * lips_lower, (0, 0.0015, -0.001)))
        m[f"mouthLowerDown{name}"] = vec(side * lips_lower, (0, -0.006, 0.001))
        m[f"mouthUpperUp{name}"] = vec(side * lips_upper, (0, 0.005, 0.001))
        m[f"noseSneer{name}"] = vec(region(s * 0.008, -0.02, 0.007, 0.01), (s * 0.001, 0.004, 0))
        m[f"cheekPuff{name}"] = vec(region(s * 0.045, -0.035, 0.015, 0.018), (s * 0.008, 0, 0.006))
        m[f"cheekSquint{name}"] = vec(region(s * 0.035, -0.005, 0.012, 0.010), (0, 0.004, 0.001))
        m[f"browDown{name}"] = vec(region(s * 0.032, 0.036, 0.020, 0.010), (-s * 0.002, -0.006, 0.002))
        m[f"browOuterUp{name}"] = vec(region(s * 0.045, 0.036, 0.012, 0.012), (0, 0.007, 0))
    m["cheekPuff"] = m.pop("cheekPuffLeft") + m.pop("cheekPuffRight")
    m["browInnerUp"] = vec(region(0.016, 0.036, 0.010, 0.012) + region(-0.016, 0.036, 0.010, 0.012), (0, 0.007, 0))
    m["mouthRollLower"] = vec(lips_lower, (0, 0.002, -0.004))
    m["mouthRollUpper"] = vec(lips_upper, (0, -0.002, -0.004))
    m["mouthShrugLower"] = vec(region(0, mouth_v - 0.015, 0.020, 0.012) * lower, (0, 0.004, 0.002))
    m["mouthShrugUpper"] = vec(lips_upper, (0, 0.003, 0.001))
    tongue_w = np.zeros(n)
    tongue_w[tongue] = 1.0
    m["tongueOut"] = vec(tongue_w, (0, 0.002, 0.022))

    for side, center, sign in (("Left", eye_l, 1), ("Right", eye_r, -1)):
        ball = np.zeros(n)
        ball[eyes[side]] = 1.0
        look = {"Up": (np.array([1.0, 0, 0]), -EYE_LOOK_DEG), "Down": (np.array([1.0, 0, 0]), EYE_LOOK_DEG),
                # Out turns the eye away from the nose: toward +X for the left eye, -X for the right.
                "Out": (np.array([0, 1.0, 0]), sign * EYE_LOOK_DEG),
                "In": (np.array([0, 1.0, 0]), -sign * EYE_LOOK_DEG)}
        for direction, (axis, degrees) in look.items():
            m[f"eyeLook{direction}{side}"] = ball[:, None] * rotate_about(positions, center, axis, degrees)
        blink, wide, squint = (np.zeros((n, 3)) for _ in range(3))
        for sl, e, a, is_upper in lid_fields[side]:
            def moved(new_e, sl=sl, a=a):
                return center + LID_RADIUS * np.stack([np.cos(new_e) * np.sin(a), np.sin(new_e),
                                                       np.cos(new_e) * np.cos(a)], -1) - positions[sl]
            if is_upper[0]:
                reach = (LID_REACH - e) / (LID_REACH - UPPER_LID_OPEN)  # 1 at the edge, 0 at the top
                blink[sl] = moved(e - reach * (UPPER_LID_OPEN - UPPER_LID_CLOSED))
                wide[sl] = moved(e + reach * LID_WIDE_RAD)
                squint[sl] = moved(e - reach * LID_SQUINT_RAD * 0.35)
            else:
                reach = (e + LID_REACH) / (LOWER_LID_EDGE + LID_REACH)
                blink[sl] = moved(e + reach * (LOWER_LID_CLOSED - LOWER_LID_EDGE))
                squint[sl] = moved(e + reach * LID_SQUINT_RAD)
        m[f"eyeBlink{side}"], m[f"eyeWide{side}"], m[f"eyeSquint{side}"] = blink, wide, squint

    missing = set(labels.BLENDSHAPES) ^ set(m)
    if missing:
        raise AssertionError(f"reference head morphs out of step with labels: {sorted(missing)}")
    morphs = {name: m[name].astype(np.float32) for name in labels.BLENDSHAPES}
    return MeshPart(positions.astype(np.float32), colors.astype(np.float32), triangles.astype(np.uint32), morphs)


# --- neck and torso ------------------------------------------------------------------

def build_neck() -> MeshPart:
    center = np.array([0.0, 1.43, -0.005])
    pos, dirs, tris, _ = ellipsoid_grid(center, (0.045, 0.085, 0.045), 12, 24)
    return MeshPart(pos.astype(np.float32), np.tile(np.asarray(SKIN) * 0.95, (len(pos), 1)).astype(np.float32),
                    outward_triangles(pos, tris, center).astype(np.uint32))


def build_torso() -> MeshPart:
    """An upper body: chest and shoulders as two blended ellipsoids, in a shirt colour."""
    parts = []
    for center, radii in (((0.0, 1.17, -0.01), (0.16, 0.24, 0.105)), ((0.0, 1.33, -0.01), (0.21, 0.065, 0.10))):
        pos, _, tris, _ = ellipsoid_grid(np.asarray(center), radii, 16, 32)
        parts.append((pos, outward_triangles(pos, tris, np.asarray(center))))
    offset = len(parts[0][0])
    pos = np.concatenate([parts[0][0], parts[1][0]])
    tris = np.concatenate([parts[0][1], parts[1][1] + offset])
    return MeshPart(pos.astype(np.float32), np.tile(SHIRT, (len(pos), 1)).astype(np.float32), tris.astype(np.uint32))
