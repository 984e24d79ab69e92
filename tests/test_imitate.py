"""`talkmotion imitate`: a video's tracked face through the same file sinks as `animate`."""

from __future__ import annotations

import numpy as np
import pytest

from face_videos import faceless_video, roll_angle, rotating_face_video
from talkmotion import labels
from talkmotion.cli import main
from talkmotion.frames import read_frames
from talkmotion.imitate import ImitateError, fill_gaps, imitate
from talkmotion.assets import LANDMARKER

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    return rotating_face_video(tmp_path_factory.mktemp("v") / "face.mp4")


def test_imitate_writes_the_tracked_face_as_frames(face_video, tmp_path):
    json_out, csv_out = tmp_path / "tracked.json", tmp_path / "tracked.csv"
    assert main(["imitate", str(face_video), "-o", str(json_out), "-o", str(csv_out)]) == 0
    frames = read_frames(json_out)
    assert len(frames) == 60 and frames.fps == 30
    known = np.array([roll_angle(i / 30) for i in range(60)])
    slope = np.polyfit(known, frames.channel("roll"), 1)[0]
    assert 0.85 < slope < 1.15                            # positive: the same roll convention as extract
    assert frames.channel("tongueOut").max() == 0.0
    header = csv_out.read_text().splitlines()[0].split(",")
    assert "jawOpen" in header and len(csv_out.read_text().splitlines()) == 61


def test_gaps_are_interpolated_and_ends_held():
    values = np.zeros((6, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = [0.0, 0.2, 0.0, 0.0, 0.8, 0.0]
    found = np.array([False, True, False, False, True, False])
    filled = fill_gaps(values, found)[:, labels.index("jawOpen")]
    np.testing.assert_allclose(filled, [0.2, 0.2, 0.4, 0.6, 0.8, 0.8], atol=1e-6)


def test_no_face_and_unknown_format_fail_clearly(tmp_path):
    empty = faceless_video(tmp_path / "empty.mp4", seconds=0.5)
    with pytest.raises(ImitateError, match="empty.mp4: no single face found"):
        imitate(empty, [str(tmp_path / "x.json")], LANDMARKER)
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ImitateError, match="unknown output format 'txt'"):
        imitate(empty, [str(tmp_path / "x.txt")], LANDMARKER)
    assert main(["imitate", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "y.json")]) == 2
