"""The reference VRM and our .vrma as three-vrm (the viewer's library) loads and plays them, in Node."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.preview.avatar import reference_avatar_paths
from talkmotion.frames import Frames
from talkmotion.rotation import head_quaternions, quaternion_multiply
from talkmotion.sinks.vrma import build_vrma

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "talkmotion" / "web" / "node_modules"
needs_viewer_packages = pytest.mark.skipif(
    shutil.which("node") is None or not (MODULES / "@pixiv" / "three-vrm-animation").is_dir(),
    reason="node or the viewer's npm packages are not installed (scripts/setup.sh installs them)")


def play(vrm: Path, vrma: Path) -> dict:
    """What three-vrm shows at the end of the animation (tests/threevrm_check.mjs)."""
    out = subprocess.run(["node", str(ROOT / "tests" / "threevrm_check.mjs"), str(MODULES), str(vrm), str(vrma)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_viewer_packages
def test_three_vrm_plays_our_vrma_on_the_reference_vrm(tmp_path):
    steps = 30
    values = np.zeros((steps, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = np.linspace(0, 0.8, steps)
    values[:, labels.index("eyeBlinkLeft")] = 0.5
    values[:, labels.index("mouthSmileRight")] = 0.3
    values[:, labels.index("yaw")] = np.linspace(0, 20, steps)
    values[:, labels.index("pitch")] = 5
    frames = Frames(values, fps=30)
    vrma = tmp_path / "talk.vrma"
    vrma.write_bytes(build_vrma(frames).to_glb())
    _, vrm = reference_avatar_paths(tmp_path / "avatar")
    shown = play(vrm, vrma)
    assert shown["metaVersion"] == "1"
    assert {"aa", "blink", "jawOpen", "tongueOut"} <= set(shown["expressions"])
    assert shown["duration"] == pytest.approx((steps - 1) / 30, abs=1e-4)
    assert "Normalized_head.quaternion" in shown["tracks"] and "VRMExpression_jawOpen.weight" in shown["tracks"]
    # Perfect sync: each morph shows its ARKit weight once, though the presets play too.
    last = values[-1]
    for name in ("jawOpen", "eyeBlinkLeft", "mouthSmileRight", "mouthPucker"):
        assert shown["morphs"][name] == pytest.approx(last[labels.index(name)], abs=0.02), name
    whole = quaternion_multiply(np.asarray(shown["neck"]), np.asarray(shown["head"]))
    expected = head_quaternions(last[labels.HEAD_SLICE])
    assert min(np.abs(whole - expected).max(), np.abs(whole + expected).max()) < 0.01


@needs_viewer_packages
def test_three_vrm_animation_reads_our_gaze_as_lookat(tmp_path):
    """Presets only (an avatar without perfect sync): the eyes move through lookAt, not look presets."""
    steps = 10
    values = np.zeros((steps, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("eyeLookOutLeft")] = values[:, labels.index("eyeLookInRight")] = 0.4   # left
    values[:, labels.index("eyeLookDownLeft")] = values[:, labels.index("eyeLookDownRight")] = 0.2  # down
    vrma = tmp_path / "gaze.vrma"
    vrma.write_bytes(build_vrma(Frames(values, fps=30), expressions="preset").to_glb())
    _, vrm = reference_avatar_paths(tmp_path / "avatar")
    shown = play(vrm, vrma)
    assert shown["lookAt"]["yaw"] == pytest.approx(0.4 * labels.EYE_LOOK_FULL_YAW_DEG, abs=0.05)
    assert shown["lookAt"]["pitch"] == pytest.approx(0.2 * labels.EYE_LOOK_FULL_PITCH_DEG, abs=0.05)
    # the reference avatar's lookAt range maps give the ARKit weights back, on its eye morphs
    for name, weight in (("eyeLookOutLeft", 0.4), ("eyeLookInRight", 0.4), ("eyeLookDownLeft", 0.2),
                         ("eyeLookInLeft", 0.0)):
        assert shown["morphs"][name] == pytest.approx(weight, abs=0.01), name
