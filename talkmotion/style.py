"""Emotion and speaking style: a layer on frames, applied after the model and post-processing.

Named emotions, each with an intensity 0..1, move brows, eyes, cheeks, nose and the
mouth corners, and restyle the head (how far it moves, a tilt, nods, extra blinks).
They never touch the shapes that make visemes (LIP_SYNC_SHAPES: jawOpen, mouthClose,
mouthFunnel, mouthPucker, mouthPressLeft/Right), so an emotion cannot open a closure
or close a vowel: lip aperture (jawOpen - mouthClose) and rounding (funnel + pucker)
are the model's, frame for frame.

How a pose meets the model's frame:
- every shape composes as a "screen": out = 1 - (1 - model)(1 - pose), so it never
  drops below what the model said and never passes 1 (a smile the model made for
  "ee" stays, and joy's smile adds to it);
- the corner shapes that widen the mouth (smile, dimple, stretch) yield to the
  model's rounding: their pose weight is scaled by 1 - rounding / ROUNDING_YIELD,
  so "oo" and "w" stay round under a broad smile;
- several emotions blend by summing their poses (clipped to 1) and their head styles
  weighted by intensity.

Changes ramp: an emotion rising to a new intensity takes `attack_s`, falling takes
`release_s`, eased (smoothstep) and starting with the next frame computed, so a live
change shows within one frame plus its attack. Everything is causal and its state
is explicit, so any chunking gives the same frames.

The emotions (EMOTIONS; docs/style.md has the same table, checked by a test):
FACS action units in brackets.
  neutral   no pose, head as the model moves it
  joy       smile [AU12], cheeks and lower lids raised [AU6], dimples; livelier head, small nods
  sadness   inner brows up [AU1] and slightly together [AU4], corners down [AU15], lids
            lowered, gaze down; head lowered, slower and smaller motion
  anger     brows down and together [AU4], lids tightened [AU7], nose wrinkled [AU9],
            corners down; chin down, larger, emphatic motion, more blinks
  surprise  whole brow raised [AU1+AU2], eyes wide [AU5]; head back
  fear      brows raised and drawn together [AU1+AU2+AU4], eyes wide [AU5], lips stretched
            [AU20]; head drawn in, small motion, many more blinks
  disgust   nose wrinkled [AU9], cheeks up, brows down, corners down; head turned
            slightly away and tilted
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import labels
from .errors import TalkmotionError
from .postprocess import BLINK_CLOSE_S, BLINK_OPEN_S

# The viseme shapes: only the model moves them.
LIP_SYNC_SHAPES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthPressLeft", "mouthPressRight")
# What an emotion may move: brows, eyes, cheeks, nose, mouth corners (DESIGN.md).
STYLE_SHAPES = tuple(n for n in labels.BLENDSHAPES if n.startswith((
    "brow", "eyeWide", "eyeSquint", "eyeBlink", "eyeLook", "cheekSquint", "noseSneer",
    "mouthSmile", "mouthFrown", "mouthDimple", "mouthStretch")))
# Corner shapes that widen the mouth, and so yield to the model's lip rounding.
WIDENING_SHAPES = tuple(n for n in STYLE_SHAPES if n.startswith(("mouthSmile", "mouthDimple", "mouthStretch")))
ROUNDING_YIELD = 0.5      # at this much funnel + pucker the widening shapes are gone entirely
ATTACK_S = 0.3            # default time to rise to a new intensity
RELEASE_S = 0.6           # default time to fall back (emotions fade slower than they arrive)
SECONDS_PER_MINUTE = 60.0
BLINK_GAP_SPREAD = 0.5    # an extra blink's gap is its mean gap ×(1 ± this), uniformly
MAX_RAMP_S = 30.0         # longest attack or release accepted


class StyleError(TalkmotionError, ValueError):
    """A style or emotion setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Emotion:
    pose: dict[str, float]                          # ARKit shape → weight at intensity 1 (STYLE_SHAPES only)
    head_offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # pitch, yaw, roll added at intensity 1
    head_amplitude: float = 1.0                     # the model's head motion ×this at intensity 1
    nod_hz: float = 0.0                             # nods per second added on pitch
    nod_deg: float = 0.0                            # ...this deep (degrees, peak)
    blinks_per_minute: float = 0.0                  # extra blinks on top of the model's and procedural ones

    def __post_init__(self):
        wrong = sorted(set(self.pose) - set(STYLE_SHAPES))
        if wrong:
            raise StyleError(f"an emotion may not move {', '.join(wrong)}; it may move {', '.join(STYLE_SHAPES)}")


def _both(prefix: str, weight: float) -> dict[str, float]:
    return {f"{prefix}Left": weight, f"{prefix}Right": weight}


EMOTIONS: dict[str, Emotion] = {
    "neutral": Emotion(pose={}),
    "joy": Emotion(
        pose={**_both("mouthSmile", 0.65), **_both("cheekSquint", 0.45), **_both("eyeSquint", 0.25),
              **_both("mouthDimple", 0.2), **_both("browOuterUp", 0.1)},
        head_offset_deg=(-2.0, 0.0, 4.0), head_amplitude=1.25, nod_hz=0.8, nod_deg=1.5, blinks_per_minute=3.0),
    "sadness": Emotion(
        pose={"browInnerUp": 0.6, **_both("browDown", 0.15), **_both("mouthFrown", 0.5),
              **_both("eyeBlink", 0.2), **_both("eyeLookDown", 0.2)},
        head_offset_deg=(7.0, 0.0, -2.0), head_amplitude=0.6),
    "anger": Emotion(
        pose={**_both("browDown", 0.75), **_both("eyeSquint", 0.35), **_both("noseSneer", 0.3),
              **_both("mouthFrown", 0.25)},
        head_offset_deg=(4.0, 0.0, 0.0), head_amplitude=1.3, nod_hz=1.2, nod_deg=1.2, blinks_per_minute=4.0),
    "surprise": Emotion(
        pose={"browInnerUp": 0.75, **_both("browOuterUp", 0.75), **_both("eyeWide", 0.65)},
        head_offset_deg=(-5.0, 0.0, 0.0), head_amplitude=1.1),
    "fear": Emotion(
        pose={"browInnerUp": 0.75, **_both("browOuterUp", 0.3), **_both("browDown", 0.3),
              **_both("eyeWide", 0.7), **_both("mouthStretch", 0.4)},
        head_offset_deg=(3.0, 0.0, 0.0), head_amplitude=0.7, blinks_per_minute=12.0),
    "disgust": Emotion(
        pose={**_both("noseSneer", 0.6), **_both("cheekSquint", 0.3), **_both("browDown", 0.35),
              **_both("mouthFrown", 0.3), **_both("eyeSquint", 0.2)},
        head_offset_deg=(-2.0, -6.0, -3.0), head_amplitude=0.9, blinks_per_minute=2.0),
}
NAMES = tuple(EMOTIONS)

_POSES = np.zeros((len(NAMES), labels.NUM_BLENDSHAPES), np.float32)       # (E, 52)
for _k, _name in enumerate(NAMES):
    for _shape, _weight in EMOTIONS[_name].pose.items():
        _POSES[_k, labels.index(_shape)] = _weight
_HEAD_OFFSETS = np.array([[EMOTIONS[n].head_offset_deg[labels.HEAD.index(a)] for a in labels.HEAD]
                          for n in NAMES], np.float32)                     # (E, 3) in labels.HEAD order
_AMPLITUDE = np.array([EMOTIONS[n].head_amplitude for n in NAMES], np.float32)
_NOD_HZ = np.array([EMOTIONS[n].nod_hz for n in NAMES], np.float32)
_NOD_DEG = np.array([EMOTIONS[n].nod_deg for n in NAMES], np.float32)
_BLINK_RATE = np.array([EMOTIONS[n].blinks_per_minute for n in NAMES], np.float32)
_STYLE = np.array(labels.indices(STYLE_SHAPES))
_WIDENING = np.array(labels.indices(WIDENING_SHAPES))
_ROUNDING = np.array(labels.indices(("mouthFunnel", "mouthPucker")))
_BLINKS = np.array(labels.indices(labels.EYE_BLINK))


# --- settings: parsing and checking ------------------------------------------------

def check_emotions(emotions, where: str = "emotion") -> dict[str, float]:
    """{name: intensity} with known names and finite intensities in 0..1; unlisted ones are 0."""
    if not isinstance(emotions, dict):
        raise StyleError(f"{where}: expected {{emotion: intensity}}, got {type(emotions).__name__}")
    out = {}
    for name, value in emotions.items():
        if name not in EMOTIONS:
            raise StyleError(f"{where}: unknown emotion {name!r}; emotions are {', '.join(NAMES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise StyleError(f"{where}: {name} intensity must be a number from 0 to 1, got {value!r}")
        out[name] = float(value)
    return out


def parse_emotions(text: str, where: str = "--emotion") -> dict[str, float]:
    """'joy:0.6,surprise:0.3' (or 'joy', meaning 1.0; spaces also separate) → {name: intensity}."""
    out = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        name, _, value = item.partition(":")
        try:
            out[name] = float(value) if value else 1.0
        except ValueError:
            raise StyleError(f"{where}: {item!r} is not EMOTION or EMOTION:INTENSITY") from None
    return check_emotions(out, where)


def check_ramp(seconds, where: str) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.0 <= seconds <= MAX_RAMP_S:
        raise StyleError(f"{where} must be a number of seconds from 0 to {MAX_RAMP_S:g}, got {seconds!r}")
    return float(seconds)


@dataclass(frozen=True)
class StyleKey:
    time_s: float                                   # when these targets start
    emotions: dict[str, float] = field(default_factory=dict)  # the whole target set; unlisted emotions go to 0


SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})")


def _srt_seconds(text: str, where: str) -> float:
    match = SRT_TIME.fullmatch(text.strip())
    if not match:
        raise StyleError(f"{where}: {text.strip()!r} is not a time HH:MM:SS,mmm")
    h, m, s, ms = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _parse_srt(text: str, path: Path) -> list[StyleKey]:
    """Cues 'START --> END' then an emotion line; between cues the style is neutral."""
    keys: list[StyleKey] = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if "-->" not in line:
            continue
        where = f"{path}:{n}"
        start_text, end_text = line.split("-->", 1)
        start, end = _srt_seconds(start_text, where), _srt_seconds(end_text, where)
        if end <= start:
            raise StyleError(f"{where}: the cue ends before it starts")
        body = lines[n] if n < len(lines) else ""
        keys += [StyleKey(start, parse_emotions(body, f"{path}:{n + 1}")), StyleKey(end, {})]
    if not keys:
        raise StyleError(f"{path}: no cues ('00:00:01,000 --> 00:00:03,000' then an emotion line)")
    return keys


def _parse_json(obj, path: Path) -> list[StyleKey]:
    """[{"time": s, "emotions": {name: intensity}}, ...]"""
    if not isinstance(obj, list) or not obj:
        raise StyleError(f"{path}: expected a list of {{\"time\": seconds, \"emotions\": {{...}}}}")
    keys = []
    for i, item in enumerate(obj):
        where = f"{path}: key {i}"
        if not isinstance(item, dict) or set(item) - {"time", "emotions"} or "time" not in item:
            raise StyleError(f"{where}: expected {{\"time\": seconds, \"emotions\": {{...}}}}")
        time_s = item["time"]
        if isinstance(time_s, bool) or not isinstance(time_s, (int, float)) or not 0 <= time_s < math.inf:
            raise StyleError(f"{where}: time must be a number of seconds from 0, got {time_s!r}")
        keys.append(StyleKey(float(time_s), check_emotions(item.get("emotions", {}), where)))
    return keys


def read_timeline(path: str | Path) -> list[StyleKey]:
    """A timeline file → keys sorted by time. JSON (.json) or SRT-like cues (anything else)."""
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StyleError(f"{path}: cannot read the emotion timeline ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise StyleError(f"{path}: not JSON ({err})") from None
        keys = _parse_json(obj, path)
    else:
        keys = _parse_srt(text, path)
    return sorted(keys, key=lambda k: k.time_s)


# --- the layer ------------------------------------------------------------------------

def _smoothstep(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, 1.0)
    return p * p * (3.0 - 2.0 * p)


class StyleLayer:
    """Applies emotions to frames, with ramps, nods and extra blinks; one per stream.

    fps:       the frames' rate
    emotions:  the starting targets {name: intensity}; they hold from frame 0 without a ramp
    timeline:  StyleKey list; each key replaces the targets at its time (offline, or a scripted stream)
    attack_s, release_s: default ramp times; seed: the extra blinks' schedule
    """

    def __init__(self, fps: float, emotions: dict[str, float] | None = None, timeline=(),
                 attack_s: float = ATTACK_S, release_s: float = RELEASE_S, seed: int = 0):
        self.fps = fps
        self.attack_s, self.release_s = check_ramp(attack_s, "attack"), check_ramp(release_s, "release")
        self.target = self._vector(check_emotions(dict(emotions or {})))
        self.timeline = sorted(timeline, key=lambda k: k.time_s)
        self.seed = seed
        self.pending: tuple[np.ndarray, float, float] | None = None
        self.reset()

    @staticmethod
    def _vector(emotions: dict[str, float]) -> np.ndarray:
        out = np.zeros(len(NAMES), np.float32)
        for name, value in emotions.items():
            out[NAMES.index(name)] = value
        return out

    @property
    def active(self) -> bool:
        """Whether the layer can change a frame (anything non-neutral set, scheduled or fading)."""
        return bool(self.timeline) or self.pending is not None or self.ramping

    def _set_ramp_ends(self, start_value: np.ndarray, target: np.ndarray) -> None:
        """The current ramp's ends, and whether either is non-neutral (asked on every push, so
        worked out here, where they change)."""
        self.start_value, self.target = start_value, target
        self.ramping = bool(np.any(target[1:] > 0) or np.any(start_value[1:] > 0))

    def reset(self) -> None:
        """Back to frame 0: the timeline from its start, the current targets held without a ramp
        (a live setting outlasts the utterance it was made in)."""
        self._set_ramp_ends(self.target.copy(), self.target)   # start_value: at the ramp's first frame
        self.ramp_start = np.zeros(len(NAMES), np.int64)
        self.ramp_frames = np.ones(len(NAMES), np.int64)
        self.next_key = 0
        self.nod_phase = 0.0
        self.rng = np.random.default_rng(self.seed)
        self.next_blink: float | None = None           # frame of the next extra blink
        self.blink_onsets: list[float] = []

    def set(self, emotions: dict[str, float], attack_s: float | None = None, release_s: float | None = None) -> None:
        """New targets (unlisted emotions go to 0), ramping from the next frame computed."""
        attack = self.attack_s if attack_s is None else check_ramp(attack_s, "attack")
        release = self.release_s if release_s is None else check_ramp(release_s, "release")
        self.pending = (self._vector(check_emotions(dict(emotions))), attack, release)

    def intensities(self, frame: int) -> np.ndarray:
        """(E,) intensities at `frame` under the current ramps (NAMES order)."""
        progress = (frame - self.ramp_start + 1) / self.ramp_frames
        return self.start_value + (self.target - self.start_value) * _smoothstep(progress)

    def _retarget(self, target: np.ndarray, frame: int, attack_s: float, release_s: float) -> None:
        """Ramp to `target` from `frame` on; before the first frame there is nothing to ramp from."""
        now = self.intensities(frame - 1) if frame > 0 else target
        seconds = np.where(target >= now, attack_s, release_s)
        self._set_ramp_ends(now.astype(np.float32), target.astype(np.float32))
        self.ramp_start[:] = frame
        self.ramp_frames = np.maximum(1, np.round(seconds * self.fps)).astype(np.int64)

    def _due_keys(self, frame: int) -> None:
        """Apply the live setting and timeline keys whose time has come by `frame`."""
        if self.pending is not None:
            target, attack, release = self.pending
            self.pending = None
            self._retarget(target, frame, attack, release)
        while self.next_key < len(self.timeline) and self.timeline[self.next_key].time_s * self.fps <= frame + 1e-6:
            key = self.timeline[self.next_key]
            self._retarget(self._vector(key.emotions), frame, self.attack_s, self.release_s)
            self.next_key += 1

    def __call__(self, values: np.ndarray, start: int) -> np.ndarray:
        """(T, C) frames start..start+T-1 → styled copy."""
        if len(values) == 0 or not self.active:
            return values
        out = np.array(values, np.float32, copy=True)
        for t in range(len(out)):
            frame = start + t
            self._due_keys(frame)
            weights = self.intensities(frame)
            self._face(out[t], weights)
            self._head(out[t], weights)
            self._blink(out[t], frame, weights)
        return out

    def _face(self, row: np.ndarray, weights: np.ndarray) -> None:
        pose = np.minimum(weights @ _POSES, 1.0)                                   # (52,)
        pose[_WIDENING] *= max(0.0, 1.0 - row[_ROUNDING].sum() / ROUNDING_YIELD)
        model = np.clip(row[_STYLE], 0.0, 1.0)
        row[_STYLE] = 1.0 - (1.0 - model) * (1.0 - pose[_STYLE])

    def _head(self, row: np.ndarray, weights: np.ndarray) -> None:
        amplitude = max(0.0, 1.0 + float(weights @ (_AMPLITUDE - 1.0)))
        depth = float(weights @ _NOD_DEG)
        rate = float(weights @ (_NOD_DEG * _NOD_HZ)) / depth if depth > 0 else 0.0
        self.nod_phase = (self.nod_phase + 2 * math.pi * rate / self.fps) % (2 * math.pi)
        head = row[labels.HEAD_SLICE] * amplitude + weights @ _HEAD_OFFSETS
        head[labels.HEAD.index("pitch")] += depth * math.sin(self.nod_phase)
        row[labels.HEAD_SLICE] = np.clip(head, -labels.HEAD_LIMIT_DEG, labels.HEAD_LIMIT_DEG)

    def _blink(self, row: np.ndarray, frame: int, weights: np.ndarray) -> None:
        rate = float(weights @ _BLINK_RATE)
        if rate > 0 and self.next_blink is None:
            self.next_blink = frame + self._gap_frames(rate)
        if self.next_blink is not None and frame >= self.next_blink:
            self.blink_onsets.append(self.next_blink)
            self.next_blink = frame + self._gap_frames(rate) if rate > 0 else None
        seconds = [(frame - onset) / self.fps for onset in self.blink_onsets]
        self.blink_onsets = [o for o, s in zip(self.blink_onsets, seconds) if s < BLINK_CLOSE_S + BLINK_OPEN_S]
        lid = max((_lid(s) for s in seconds), default=0.0)
        row[_BLINKS] = np.maximum(row[_BLINKS], lid)

    def _gap_frames(self, rate_per_minute: float) -> float:
        mean = SECONDS_PER_MINUTE / rate_per_minute * self.fps
        return mean * self.rng.uniform(1 - BLINK_GAP_SPREAD, 1 + BLINK_GAP_SPREAD)


def _lid(seconds: float) -> float:
    """A blink's lid closure `seconds` after its onset (the post-processor's blink shape)."""
    if seconds < 0:
        return 0.0
    if seconds < BLINK_CLOSE_S:
        return seconds / BLINK_CLOSE_S
    return max(0.0, 1.0 - (seconds - BLINK_CLOSE_S) / BLINK_OPEN_S)


def apply_style(values: np.ndarray, fps: float, **layer_args) -> np.ndarray:
    """A whole (T, C) clip styled from frame 0: StyleLayer(fps, **layer_args)(values, 0)."""
    return StyleLayer(fps, **layer_args)(values, 0)


# --- interfaces: messages and command-line flags ----------------------------------------

STYLE_MESSAGE_KEYS = {"type", "emotions", "attack_s", "release_s"}


def parse_style_message(obj, where: str = "style message") -> tuple[dict[str, float], float | None, float | None]:
    """{"type": "style", "emotions": {name: intensity}, "attack_s"?: s, "release_s"?: s}
    → (emotions, attack_s, release_s), checked; the WebSocket message of serve and stream."""
    if not isinstance(obj, dict) or obj.get("type") != "style":
        raise StyleError(f"{where}: expected {{\"type\": \"style\", \"emotions\": {{...}}}}")
    unknown = sorted(set(obj) - STYLE_MESSAGE_KEYS)
    if unknown:
        raise StyleError(f"{where}: unknown field {unknown[0]!r}; fields are {', '.join(sorted(STYLE_MESSAGE_KEYS))}")
    emotions = check_emotions(obj.get("emotions", {}), where)
    attack = obj.get("attack_s")
    release = obj.get("release_s")
    return (emotions, None if attack is None else check_ramp(attack, f"{where}: attack_s"),
            None if release is None else check_ramp(release, f"{where}: release_s"))


def add_arguments(parser) -> None:
    """--emotion, --emotion-timeline, --emotion-attack, --emotion-release."""
    group = parser.add_argument_group("emotion (style.py)")
    group.add_argument("--emotion", default=None, metavar="NAME[:INTENSITY],...",
                       help=f"emotions for the whole input, e.g. joy:0.6 or joy:0.5,surprise:0.3; "
                            f"names: {', '.join(NAMES)}")
    group.add_argument("--emotion-timeline", default=None, metavar="FILE",
                       help="emotions over time: JSON [{\"time\": s, \"emotions\": {...}}, ...] or SRT-like cues")
    group.add_argument("--emotion-attack", type=float, default=ATTACK_S, metavar="S",
                       help=f"seconds to rise to a new emotion (default {ATTACK_S})")
    group.add_argument("--emotion-release", type=float, default=RELEASE_S, metavar="S",
                       help=f"seconds to fall back (default {RELEASE_S})")


def layer_from_args(args, fps: float) -> StyleLayer:
    """A fresh StyleLayer from the flags of add_arguments (one per stream)."""
    emotions = parse_emotions(args.emotion) if args.emotion else {}
    timeline = read_timeline(args.emotion_timeline) if args.emotion_timeline else ()
    return StyleLayer(fps, emotions, timeline, check_ramp(args.emotion_attack, "--emotion-attack"),
                      check_ramp(args.emotion_release, "--emotion-release"))
