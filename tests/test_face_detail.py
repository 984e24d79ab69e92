"""The reference head's eyes, irises, brows and lids read clearly at the preview's default size.

The face is rendered by the MP4 preview's renderer at its default panel size and
measured in pixels: each iris a round disc with a dark pupil at its centre, each brow
one smooth arched band; and on the mesh, a half-closed lid stays in front of the eye.
"""

from __future__ import annotations

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.frames import Frames
from talkmotion.preview.avatar import face as face_module
from talkmotion.preview.render import PANEL_PX, FaceRenderer

EYE_WINDOW_PX = 22       # half-size of the window searched around each pupil
BROW_ROWS_PX = (45, 8)   # the brow is looked for this far above the pupil (from, to)
BROW_COLUMNS_PX = (32, 29)  # ... and this far toward the nose and toward the temple (the hair beyond)


@pytest.fixture(scope="module")
def renderer():
    return FaceRenderer(None, size=PANEL_PX)


def draw(renderer, **weights) -> np.ndarray:
    values = np.zeros((1, labels.NUM_CHANNELS), np.float32)
    for name, w in weights.items():
        values[0, labels.index(name)] = w
    frames = Frames(values, fps=30)
    return renderer.draw(renderer.weights(frames)[0], frames.head[0]).astype(np.int32)


def pupil_pixels(renderer) -> list[np.ndarray]:
    """Image (x, y) of each eye's gaze axis (the pupil-coloured pole vertex), left eye first."""
    pupil = np.all(np.abs(renderer.mesh.colors - np.asarray(face_module.PUPIL)) < 1e-6, axis=1)
    points = renderer.mesh.base[pupil]
    centres = [points[points[:, 0] > 0].mean(0), points[points[:, 0] < 0].mean(0)]
    return [renderer.camera.project(c[None])[0, :2] for c in centres]


def test_each_iris_is_a_round_disc_with_a_centred_pupil(renderer):
    image = draw(renderer)
    for x0, y0 in pupil_pixels(renderer):
        cx, cy = int(round(x0)), int(round(y0))
        win = image[cy - EYE_WINDOW_PX:cy + EYE_WINDOW_PX + 1, cx - EYE_WINDOW_PX:cx + EYE_WINDOW_PX + 1]
        r, b = win[..., 0], win[..., 2]
        dark = win.max(-1) < 70
        near = np.hypot(*(np.indices(dark.shape) - EYE_WINDOW_PX)) < 9
        iris = (b > r + 15) | (dark & near)                           # blue iris and limbus, dark pupil
        ys, xs = np.nonzero(iris)
        width, height = np.ptp(xs) + 1, np.ptp(ys) + 1
        assert width >= 12, f"iris only {width} px wide"              # reads at this size
        assert height >= 0.8 * width and abs(width - height) <= 3     # round, not squashed
        assert iris.sum() / (width * height) > 0.7                    # a disc (0.785), not a diamond (0.5) or an X
        py, px = np.nonzero(dark & (np.hypot(*(np.indices(dark.shape) - EYE_WINDOW_PX)) < 5))
        assert len(px) >= 6                                           # a pupil you can see
        assert abs(px.mean() - xs.mean()) < 1.5 and abs(py.mean() - ys.mean()) < 2.0


def _lowest_run(column: np.ndarray):
    """(top, bottom) of the lowest run of True in a pixel column; None if none, or if it reaches
    the window's top edge (that is the hair at the temple, not the brow under it)."""
    rows = np.nonzero(column)[0]
    if rows.size == 0:
        return None
    bottom = rows[-1] + 1
    top = bottom
    while top > 0 and column[top - 1]:
        top -= 1
    return None if top == 0 else (top, bottom)


@pytest.mark.parametrize("weights", [{}, {"browInnerUp": 0.8, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8},
                                     {"browDownLeft": 0.8, "browDownRight": 0.8}])
def test_each_brow_is_one_smooth_arched_band(renderer, weights):
    image = draw(renderer, **weights)
    for (x0, y0), outward in zip(pupil_pixels(renderer), (1, -1)):
        cx, cy = int(round(x0)), int(round(y0))
        inner, outer = cx - outward * BROW_COLUMNS_PX[0], cx + outward * BROW_COLUMNS_PX[1]
        win = image[cy - BROW_ROWS_PX[0]:cy - BROW_ROWS_PX[1], min(inner, outer):max(inner, outer) + 1]
        if outward < 0:
            win = win[:, ::-1]                                           # inner end first, as for the left brow
        brown = (win[..., 0] > win[..., 2] + 20) & (win.max(-1) < 170)   # dark brown on light skin
        runs = [_lowest_run(brown[:, c]) for c in range(brown.shape[1])]
        columns = np.array([c for c, run in enumerate(runs) if run is not None])
        assert columns.size >= 35, f"brow only {columns.size} px long"
        assert np.all(np.diff(columns) == 1)                             # one piece, no gaps
        top = np.array([runs[c][0] for c in columns])
        thickness = np.array([runs[c][1] - runs[c][0] for c in columns])
        assert np.abs(np.diff(top)).max() <= 1                           # no stair steps
        assert 3 <= thickness.max() <= 12 and thickness[len(columns) // 3] >= thickness[-1]  # tapers outward


def test_a_half_closed_lid_stays_in_front_of_the_eye():
    """Morphs move vertices along straight lines: mid-blink the lid must not sink into the eyeball."""
    head = face_module.build_head()
    for side in ("Left", "Right"):
        ball = np.abs(head.morphs[f"eyeLookOut{side}"]).max(1) > 1e-6
        centre = (head.positions[ball].min(0) + head.positions[ball].max(0)) / 2
        for name in (f"eyeBlink{side}", f"eyeSquint{side}", f"eyeWide{side}"):
            delta = head.morphs[name]
            lid = np.abs(delta).max(1) > 1e-6
            for w in np.linspace(0.05, 1.0, 20):
                distance = np.linalg.norm(head.positions[lid] + w * delta[lid] - centre, axis=1)
                assert distance.min() > face_module.EYE_RADIUS + 2e-4, (name, w)
