"""The label spec: the one place that knows channel names, their order and count.

A label row is the 52 ARKit blendshapes (ARKit's camelCase names, weights in
[0, 1]) followed by head pitch, yaw and roll in degrees.

Head angles follow the glTF/VRM frame (Y up, the avatar faces +Z), right-hand
rule, applied yaw then pitch then roll:
  pitch  about X: positive looks down,
  yaw    about Y: positive turns toward the avatar's own left,
  roll   about Z: positive tilts the head toward the avatar's right shoulder.

Everything else (sinks, extraction, training) asks this module for names,
indices and conversions instead of writing names or counts itself.
"""

from __future__ import annotations

import numpy as np

# ARKit blendshapes in MediaPipe's order (its `_neutral` dropped), then tongueOut,
# which ARKit has and MediaPipe lacks.
BLENDSHAPES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
HEAD: tuple[str, ...] = ("pitch", "yaw", "roll")
CHANNELS: tuple[str, ...] = BLENDSHAPES + HEAD

NUM_BLENDSHAPES = len(BLENDSHAPES)
NUM_HEAD = len(HEAD)
NUM_CHANNELS = len(CHANNELS)
BLENDSHAPE_SLICE = slice(0, NUM_BLENDSHAPES)
HEAD_SLICE = slice(NUM_BLENDSHAPES, NUM_CHANNELS)

# Largest head angle the model can output (degrees); talking heads stay well inside.
HEAD_LIMIT_DEG = 45.0

# A stable identifier written into checkpoints and clips: a model trained on one
# spec refuses to load against another.
SPEC_ID = "arkit52+head3/v1"

_INDEX = {name: i for i, name in enumerate(CHANNELS)}

# Channel groups used by metrics, post-processing and masks.
MOUTH = tuple(n for n in BLENDSHAPES if n.startswith(("mouth", "jaw", "cheekPuff", "tongue")))
BROWS = tuple(n for n in BLENDSHAPES if n.startswith("brow"))
EYE_BLINK = ("eyeBlinkLeft", "eyeBlinkRight")
EYE_LOOK = tuple(n for n in BLENDSHAPES if n.startswith("eyeLook"))
EYE_SQUINT = ("eyeSquintLeft", "eyeSquintRight")


def index(name: str) -> int:
    """Column of a channel (ARKit camelCase name or pitch/yaw/roll)."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown channel {name!r}; channels are {', '.join(CHANNELS)}") from None


def indices(names) -> list[int]:
    return [index(n) for n in names]


def to_pascal(name: str) -> str:
    """ARKit camelCase → PascalCase, as VMC perfect sync and Live Link Face name them."""
    return name[0].upper() + name[1:]


def from_pascal(name: str) -> str:
    return name[0].lower() + name[1:]


def from_mediapipe(categories: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe blendshape scores by category name → (weights (52,), valid mask (52,)).

    MediaPipe's `_neutral` is dropped; channels it does not give (tongueOut) are
    zero and masked invalid.
    """
    weights = np.zeros(NUM_BLENDSHAPES, np.float32)
    valid = np.zeros(NUM_BLENDSHAPES, bool)
    for name, score in categories.items():
        if name == "_neutral":
            continue
        i = _INDEX.get(name)
        if i is None or i >= NUM_BLENDSHAPES:
            raise KeyError(f"MediaPipe category {name!r} is not an ARKit blendshape")
        weights[i] = score
        valid[i] = True
    return weights, valid


# --- VRM expression presets for avatars without perfect sync -------------------
# Each preset is a weighted sum of ARKit channels, clipped to [0, 1]. The vowels
# come from jaw opening and lip shape: `aa` open jaw, `oh` open and rounded, `ou`
# rounded and nearly closed, `ee` spread lips, `ih` spread with a small opening.
VRM_PRESETS: dict[str, dict[str, float]] = {
    "aa": {"jawOpen": 1.4, "mouthFunnel": -0.6, "mouthPucker": -0.6, "mouthStretchLeft": -0.3,
           "mouthStretchRight": -0.3},
    "oh": {"mouthFunnel": 1.2, "jawOpen": 0.5, "mouthPucker": -0.3},
    "ou": {"mouthPucker": 1.3, "mouthFunnel": 0.3, "jawOpen": -0.3},
    "ee": {"mouthStretchLeft": 0.8, "mouthStretchRight": 0.8, "mouthSmileLeft": 0.5,
           "mouthSmileRight": 0.5, "mouthPucker": -0.5},
    "ih": {"mouthStretchLeft": 0.4, "mouthStretchRight": 0.4, "jawOpen": 0.5, "mouthFunnel": -0.4,
           "mouthPucker": -0.4},
    "blink": {"eyeBlinkLeft": 0.5, "eyeBlinkRight": 0.5},
    "blinkLeft": {"eyeBlinkLeft": 1.0},
    "blinkRight": {"eyeBlinkRight": 1.0},
    "lookUp": {"eyeLookUpLeft": 0.5, "eyeLookUpRight": 0.5},
    "lookDown": {"eyeLookDownLeft": 0.5, "eyeLookDownRight": 0.5},
    # The avatar's left eye looks left by looking out; its right eye by looking in.
    "lookLeft": {"eyeLookOutLeft": 0.5, "eyeLookInRight": 0.5},
    "lookRight": {"eyeLookInLeft": 0.5, "eyeLookOutRight": 0.5},
    "happy": {"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5},
    "surprised": {"browInnerUp": 0.5, "eyeWideLeft": 0.25, "eyeWideRight": 0.25},
    "sad": {"mouthFrownLeft": 0.5, "mouthFrownRight": 0.5},
    "angry": {"browDownLeft": 0.5, "browDownRight": 0.5},
}


VRM_VOWELS = ("aa", "ih", "ou", "ee", "oh")
VRM_LOOK_PRESETS = ("lookUp", "lookDown", "lookLeft", "lookRight")

# Gaze angle of a full eyeLook* weight (degrees): the reference avatar's lookAt
# range maps (preview/avatar/reference.py) turn these angles back into the same weights.
EYE_LOOK_FULL_YAW_DEG = 30.0
EYE_LOOK_FULL_PITCH_DEG = 25.0


def gaze_angles(blendshapes: np.ndarray) -> np.ndarray:
    """ARKit weights (..., 52) → (..., 2) gaze yaw, pitch in degrees, both eyes averaged.

    Signs as the head's (and VRM lookAt's): yaw > 0 looks to the avatar's own left,
    pitch > 0 looks down.
    """
    presets = to_vrm_presets(blendshapes)
    yaw = (presets["lookLeft"] - presets["lookRight"]) * EYE_LOOK_FULL_YAW_DEG
    pitch = (presets["lookDown"] - presets["lookUp"]) * EYE_LOOK_FULL_PITCH_DEG
    return np.stack([yaw, pitch], -1).astype(np.float32)


def to_vrm_presets(blendshapes: np.ndarray) -> dict[str, np.ndarray]:
    """ARKit weights (..., 52) → VRM preset weights, each (...,) in [0, 1].

    When both eyes blink together the shared part goes to `blink` and only the
    difference to `blinkLeft`/`blinkRight`, so an avatar never closes an eye twice.
    The five vowels are scaled down together when they sum past 1: each is a whole
    mouth shape on a VRM avatar, and stacked past 1 they tear the mouth apart.
    """
    blendshapes = np.asarray(blendshapes, np.float32)
    if blendshapes.shape[-1] != NUM_BLENDSHAPES:
        raise ValueError(f"expected {NUM_BLENDSHAPES} blendshape weights, got {blendshapes.shape[-1]}")
    out = {}
    for preset, terms in VRM_PRESETS.items():
        total = sum(w * blendshapes[..., index(n)] for n, w in terms.items())
        out[preset] = np.clip(total, 0.0, 1.0).astype(np.float32)
    vowel_sum = sum(out[v] for v in VRM_VOWELS)
    vowel_scale = 1.0 / np.maximum(vowel_sum, 1.0)
    for v in VRM_VOWELS:
        out[v] = (out[v] * vowel_scale).astype(np.float32)
    left = blendshapes[..., index("eyeBlinkLeft")]
    right = blendshapes[..., index("eyeBlinkRight")]
    both = np.minimum(left, right)
    out["blink"] = both
    out["blinkLeft"] = left - both
    out["blinkRight"] = right - both
    return out

