"""Post-processing: pure functions on frame values, with explicit state for streaming.

Each effect is `effect(values, start, fps, options, state) -> (values, state)` where
values is (T, C) for frames start..start+T-1. Effects never look ahead, and their
state carries everything between chunks, so any chunking gives the same frames.

Procedural blinks and gaze saccades fill in what an audio model cannot know;
they are on by default only where the model does not predict those channels.
Procedural head motion (head_motion.py: phrase poses, beat nods, a sway, all
driven by the voice's level) is added to the model's head, which predicts only
the part of head motion the audio decides.

The jaw gate is the one effect that hears the audio: it takes each frame's
level (dBFS) and closes the jaw on frames far below the voice's recent peak
level, so the mouth rests in pauses and holds closures that the model, unsure
of a voice it never heard, leaves half open. It is relative to a running peak,
so the input gain does not matter, and it only ever lowers jawOpen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import head_motion, labels
from .errors import TalkmotionError

BLINK_CLOSE_S = 0.06      # lids closing
BLINK_OPEN_S = 0.12       # lids reopening (slower than closing, as in people)
BLINK_GAP_S = (2.0, 6.0)  # seconds between blinks: people blink ~10–20 times a minute when talking
FIRST_BLINK_S = 1.0
SACCADE_GAP_S = (0.6, 2.5)
SACCADE_RANGE = 0.25      # largest procedural eyeLook* weight
GATE_PEAK_DECAY_DB_S = 1.0   # the running peak level sinks this fast, so the gate follows a quieter voice
GATE_FIRST_PEAK_DB = -30.0   # the peak level assumed before the voice is heard (dBFS)
# A live stream post-processes a frame or two per call: loops over so few frames cost less than
# numpy's set-up, so the recurrences below run as loops up to this many frames, as whole arrays beyond.
FEW_FRAMES = 4


@dataclass(frozen=True)
class PostOptions:
    mouth_gain: float = 1.0        # exaggerate (>1) or calm (<1) mouth and jaw around their rest
    brow_gain: float = 1.0         # the same for brows
    head_scale: float = 1.0        # scale head rotation
    eye_contact: float = 0.0       # 0..1: pull gaze toward the camera
    squint_limit: float = 1.0      # cap on eyeSquint (MediaPipe-trained models over-squint)
    blink_symmetry: float = 0.0    # 0..1: pull left/right blinks toward their mean
    smoothing_ms: float = 0.0      # one-pole low-pass time constant; 0 = off (adds lag when on)
    jaw_gate_db: float = 30.0      # jaw shut on frames this many dB below the voice's recent peak; 0 = off
    jaw_gate_width_db: float = 15.0  # ...and fully free this many dB above that
    blinks: str = "auto"           # procedural blinks: "auto" (if the model lacks them), "on", "off"
    gaze: str = "auto"             # procedural gaze saccades: "auto", "on", "off"
    head_motion: float = 1.0       # procedural head motion (phrase poses, beat nods, a sway, driven by
                                   # the voice's level; head_motion.py) × this, added to the model's; 0 = off
    seed: int = 0                  # procedural blinks/gaze/head motion are reproducible for a seed

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, flag = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if f.name in OPTION_CHOICES:
                if value not in OPTION_CHOICES[f.name]:
                    raise PostOptionsError(f"post-processing option {flag} must be one of "
                                           f"{', '.join(OPTION_CHOICES[f.name])}, not {value!r}")
                continue
            lo, hi = OPTION_RANGES[f.name]
            wanted = (int, float) if isinstance(f.default, float) else (int,)
            if isinstance(value, bool) or not isinstance(value, wanted):
                kind = "number" if isinstance(f.default, float) else "whole number"
                raise PostOptionsError(f"post-processing option {flag} must be a {kind}, not {value!r}")
            if not (_finite(value) and lo <= value <= hi):
                raise PostOptionsError(f"post-processing option {flag} must be a finite number within "
                                       f"{_number(lo)}..{_number(hi)}, got {_number(value)}")


def _number(value: int | float) -> str:
    text = str(value) if isinstance(value, int) else f"{value:g}"
    return text if len(text) <= 24 else text[:24] + "…"


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)   # ints of any size are finite


# Accepted range of each numeric option. Beyond these an option does nothing more that is
# visible (weights are clipped to 0..1), or it overflows: --mouth-gain 1e308 made NaN frames.
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "mouth_gain": (0.0, 10.0),          # 10× already opens any moving mouth fully
    "brow_gain": (0.0, 10.0),
    "head_scale": (0.0, 10.0),          # negative would mirror the head's motion
    "head_motion": (0.0, 10.0),         # × the procedural head motion; 10× already swings the head wildly
    "eye_contact": (0.0, 1.0),          # fractions
    "squint_limit": (0.0, 1.0),
    "blink_symmetry": (0.0, 1.0),
    "smoothing_ms": (0.0, 2000.0),      # 2 s of lag is already no lip sync
    "jaw_gate_db": (0.0, 120.0),        # 0 = off; 120 dB spans 16-bit audio's whole range and more
    "jaw_gate_width_db": (0.1, 120.0),  # a zero width would divide by zero
    "seed": (0, 2**32 - 1),             # what the blink/gaze generators take
}
OPTION_CHOICES: dict[str, tuple[str, ...]] = {"blinks": ("auto", "on", "off"), "gaze": ("auto", "on", "off")}


class PostOptionsError(TalkmotionError, ValueError):
    """A post-processing setting that cannot be used; the message names it."""


MOUTH = labels.indices(labels.MOUTH)
BROWS = labels.indices(labels.BROWS)
EYE_LOOK = labels.indices(labels.EYE_LOOK)
EYE_SQUINT = labels.indices(labels.EYE_SQUINT)
EYE_BLINK = labels.indices(labels.EYE_BLINK)
JAW = labels.index("jawOpen")
# Procedural gaze (x > 0: toward the avatar's left; y > 0: up) → eyeLook* weights.
_GAZE = {"eyeLookOutLeft": (1, 0), "eyeLookInRight": (1, 0), "eyeLookInLeft": (-1, 0), "eyeLookOutRight": (-1, 0),
         "eyeLookUpLeft": (0, 1), "eyeLookUpRight": (0, 1), "eyeLookDownLeft": (0, -1), "eyeLookDownRight": (0, -1)}
_GAZE_ORDER = sorted(_GAZE, key=labels.index)                          # the eyeLook* channels are adjacent:
GAZE_CHANNELS = slice(labels.index(_GAZE_ORDER[0]), labels.index(_GAZE_ORDER[-1]) + 1)   # a view, not a copy
GAZE_WEIGHTS = np.array([_GAZE[name] for name in _GAZE_ORDER], np.float32).T   # (2, 8): (x, y) → channels


def _gain(values, idx, gain):
    if gain != 1.0:
        values[:, idx] = np.clip(values[:, idx] * gain, 0.0, 1.0)
    return values


def shape_gains(values, start, fps, opt: PostOptions, state):
    values = _gain(values, MOUTH, opt.mouth_gain)
    values = _gain(values, BROWS, opt.brow_gain)
    if opt.head_scale != 1.0:
        values[:, labels.HEAD_SLICE] *= opt.head_scale
    if opt.eye_contact:
        values[:, EYE_LOOK] *= 1.0 - np.clip(opt.eye_contact, 0, 1)
    if opt.squint_limit < 1.0:
        values[:, EYE_SQUINT] = np.minimum(values[:, EYE_SQUINT], opt.squint_limit)
    if opt.blink_symmetry:
        mean = values[:, EYE_BLINK].mean(axis=1, keepdims=True)
        values[:, EYE_BLINK] += (mean - values[:, EYE_BLINK]) * np.clip(opt.blink_symmetry, 0, 1)
    return values, state


def smooth(values, start, fps, opt: PostOptions, state):
    """Causal one-pole low-pass y[t] = a y[t-1] + (1 - a) x[t]; state = the last output row."""
    if opt.smoothing_ms <= 0 or len(values) == 0:
        return values, state
    a = float(np.exp(-1000.0 / (opt.smoothing_ms * fps)))
    last = state if state is not None else values[0]
    if len(values) > FEW_FRAMES:
        from scipy.signal import lfilter

        out = lfilter([1 - a], [1, -a], values, axis=0, zi=a * np.asarray(last, np.float64)[None])[0]
        out = out.astype(np.float32)
        return out, out[-1]
    out = np.empty_like(values)
    for t in range(len(values)):
        last = a * last + (1 - a) * values[t]
        out[t] = last
    return out, last


def jaw_gate(values, levels_db, fps, opt: PostOptions, state):
    """Scale jawOpen by how far each frame's level is below the running peak; state = the peak (dB).

    The peak sinks by `sink` dB a frame and jumps up to any louder frame:
    peak[t] = max(level[t], peak[t-1] - sink). Unrolled, that is a running maximum:
    peak[t] = max(peak[-1] - sink, max over k <= t of (level[k] + sink k)) - sink t.
    """
    peak = GATE_FIRST_PEAK_DB if state is None else state
    if opt.jaw_gate_db <= 0 or levels_db is None or len(levels_db) == 0:
        return values, peak
    sink = GATE_PEAK_DECAY_DB_S / fps
    width = max(opt.jaw_gate_width_db, 1e-6)
    if len(levels_db) <= FEW_FRAMES:
        for t, level in enumerate(levels_db):
            peak = max(float(level), peak - sink)
            values[t, JAW] *= min(max((level - (peak - opt.jaw_gate_db)) / width, 0.0), 1.0)
        return values, peak
    drop = sink * np.arange(len(levels_db))
    levels = np.asarray(levels_db, np.float64)
    peaks = np.maximum(peak - sink, np.maximum.accumulate(levels + drop)) - drop
    free = (levels - (peaks - opt.jaw_gate_db)) / width
    values[:, JAW] *= np.clip(free, 0.0, 1.0)
    return values, float(peaks[-1])


def _events(start, count, fps, rng_state, next_frame, gap_s, make):
    """Walk a random schedule of events over frames [start, start+count)."""
    if next_frame >= start + count:       # nothing due: most streaming chunks
        return [], rng_state, next_frame
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    events = []
    while next_frame < start + count:
        events.append((next_frame, make(rng)))
        next_frame += max(1, int(rng.uniform(*gap_s) * fps))
    return events, rng.bit_generator.state, next_frame


def blinks(values, start, fps, opt: PostOptions, state):
    """Add procedural blinks (both eyes, human-like timing) to eyeBlinkLeft/Right."""
    rng_state, next_frame, recent = state
    if next_frame is None:                    # first blink about a second into the stream
        next_frame = start + int(FIRST_BLINK_S * fps)
    events, rng_state, next_frame = _events(start, len(values), fps, rng_state, next_frame, BLINK_GAP_S,
                                            lambda rng: rng.uniform(0.85, 1.0))
    recent = [e for e in recent + events if e[0] + (BLINK_CLOSE_S + BLINK_OPEN_S) * fps >= start]
    if not recent:
        return values, (rng_state, next_frame, recent)
    t = np.arange(start, start + len(values))[:, None] / fps
    lid = np.zeros(len(values), np.float32)
    for onset, depth in recent:
        dt = t[:, 0] - onset / fps
        closing = np.clip(dt / BLINK_CLOSE_S, 0, 1)
        opening = np.clip(1 - (dt - BLINK_CLOSE_S) / BLINK_OPEN_S, 0, 1)
        shape = np.where(dt < BLINK_CLOSE_S, closing, opening) * (dt >= 0)
        lid = np.maximum(lid, depth * shape)
    values[:, EYE_BLINK] = np.maximum(values[:, EYE_BLINK], lid[:, None])
    return values, (rng_state, next_frame, recent)


def gaze(values, start, fps, opt: PostOptions, state):
    """Procedural gaze: small saccades held for a while, both eyes together."""
    rng_state, next_frame, current, held = state       # held: the channels `current` looks with
    events, rng_state, next_frame = _events(start, len(values), fps, rng_state, next_frame, SACCADE_GAP_S,
                                            lambda rng: rng.uniform(-SACCADE_RANGE, SACCADE_RANGE, 2))
    if events:
        # Frame t looks where the latest event at or before it says (the previous chunk's, before any).
        targets = np.array([current] + [e[1] for e in events], np.float32)                  # (1 + E, 2)
        latest = np.searchsorted([e[0] for e in events], np.arange(start, start + len(values)), side="right")
        current = events[-1][1]
        looks = np.clip(targets[latest] @ GAZE_WEIGHTS, 0, 1)           # (T, 8)
        held = looks[-1]                                                # the last frame looks at `current`
    else:                                                               # most chunks: the gaze holds
        looks = held
    np.maximum(values[:, GAZE_CHANNELS], looks, out=values[:, GAZE_CHANNELS])
    return values, (rng_state, next_frame, current, held)


class PostProcessor:
    """Applies the effects in order and keeps their state between chunks."""

    def __init__(self, options: PostOptions | None = None, predicted: set[str] | None = None):
        self.options = options or PostOptions()
        predicted = set(labels.CHANNELS) if predicted is None else set(predicted)
        self.effects = [shape_gains]
        if _wanted(self.options.blinks, not set(labels.EYE_BLINK) <= predicted):
            self.effects.append(blinks)
        if _wanted(self.options.gaze, not set(labels.EYE_LOOK) & predicted):
            self.effects.append(gaze)
        self.effects.append(smooth)
        self.reset()

    def reset(self):
        seeds = np.random.SeedSequence(self.options.seed).spawn(2)
        first = lambda s: np.random.default_rng(s)  # noqa: E731
        self.head = head_motion.initial_state(self.options.seed)
        self.state = {
            shape_gains: None, smooth: None, jaw_gate: None,
            blinks: (first(seeds[0]).bit_generator.state, None, []),
            gaze: (first(seeds[1]).bit_generator.state, 0, np.zeros(2, np.float32),
                   np.clip(np.zeros(2, np.float32) @ GAZE_WEIGHTS, 0, 1)),
        }

    def __call__(self, values: np.ndarray, start: int, fps: float, levels_db: np.ndarray | None = None) -> np.ndarray:
        """(T, C) frames start..start+T-1 → post-processed copy; `levels_db` (T,) feeds the jaw gate
        and the head motion."""
        if len(values) == 0:
            return values
        values = np.array(values, np.float32, copy=True)
        values, self.state[jaw_gate] = jaw_gate(values, levels_db, fps, self.options, self.state[jaw_gate])
        values, self.head = head_motion.head_motion(values, start, fps, levels_db, self.options.head_motion, self.head)
        for effect in self.effects:
            values, self.state[effect] = effect(values, start, fps, self.options, self.state[effect])
        return values


def _wanted(setting: str, model_lacks_it: bool) -> bool:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"procedural setting must be auto, on or off, not {setting!r}")
    return setting == "on" or (setting == "auto" and model_lacks_it)


def options_from_args(args, defaults: PostOptions | None = None) -> PostOptions:
    """PostOptions from argparse fields of the same names; the others keep `defaults` (the
    model's, or PostOptions())."""
    return dataclasses.replace(defaults or PostOptions(), **given_options(args))


def given_options(args) -> dict:
    """{PostOptions field: value} of the post-processing flags given on the command line."""
    fields = {f.name for f in dataclasses.fields(PostOptions)}
    return {k: v for k, v in vars(args).items() if k in fields and v is not None}


def add_arguments(parser) -> None:
    """--mouth-gain, --head-scale, ... one flag per PostOptions field, its comment as help."""
    from .config import field_comments

    group = parser.add_argument_group("post-processing")
    comments = field_comments(PostOptions)
    for f in dataclasses.fields(PostOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name in OPTION_CHOICES:
            group.add_argument(flag, dest=f.name, choices=OPTION_CHOICES[f.name], default=None,
                               help=f"{comments[f.name]} (default {f.default})")
        else:
            lo, hi = OPTION_RANGES[f.name]
            group.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                               help=f"{comments[f.name]} ({_number(lo)}..{_number(hi)}, default {f.default})")
