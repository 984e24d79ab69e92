"""Head motion that lives: phrase poses and a slow sway, driven by when the voice speaks.

What a listener's eye expects from a talking head is only partly in the audio. The
model predicts the part that is (nods and dips with stress and loudness); this layer
adds the part that is not, as people do it (the corpus's label rules draw the same
way, `data.visemes._head`):
  * a new head pose for each phrase: when speech starts after a pause of at least
    PHRASE_PAUSE_S, a pose is drawn (pitch, yaw, roll ~ N(0, POSE_SD_DEG)) and the head
    eases into it over POSE_EASE_S;
  * beat nods: a small dip of the head (pitch, NOD_DEG) on loud syllable onsets, when the
    level rises through NOD_BELOW_PEAK_DB under the running peak, at most one per NOD_GAP_S;
  * a slow sway, two sines per axis (SWAY_HZ, SWAY_DEG), always present but at
    REST_SWAY of its size while the voice is silent;
  * stillness in long pauses: after REST_AFTER_S of silence the phrase pose eases back
    to straight ahead.
The voice's activity comes from each frame's level against a running peak, as the jaw
gate hears it (`postprocess.jaw_gate`), so input gain does not matter.

It is a pure function on frames with explicit state, seeded: any chunking gives the same
frames, and the same seed the same motion. Its poses have mean zero, so the head cannot
drift away: over minutes its mean stays near straight ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import labels

ACTIVE_BELOW_PEAK_DB = 30.0          # a frame this close to the running peak level is speech
PEAK_DECAY_DB_S = 1.0                # the running peak sinks this fast (as the jaw gate's)
FIRST_PEAK_DB = -30.0
PHRASE_PAUSE_S = 0.25                # silence at least this long ends a phrase
REST_AFTER_S = 2.0                   # silence this long: the head eases back to rest
POSE_SD_DEG = (1.8, 2.8, 1.2)        # phrase pose spread: pitch, yaw, roll (degrees)
POSE_MEAN_S = 20.0                   # phrase poses lean away from the head's mean over this long,
POSE_MEAN_PULL = 1.0                 # by this share of it: minutes of poses keep a mean near zero
POSE_EASE_S = 0.35                   # time constant of easing into a pose
SWAY_HZ = (0.1, 0.35)               # sway frequencies are drawn from this range
SWAY_DEG = (1.2, 1.3, 0.5)           # sway amplitude per sine: pitch, yaw, roll (degrees)
NOD_BELOW_PEAK_DB = 10.0             # a syllable onset: the level rises through this far under the peak
NOD_DEG = (0.8, 2.0)                 # nod depth range (degrees of pitch, head down)
NOD_S = 0.4                          # a nod's length (raised cosine)
NOD_GAP_S = 0.45                     # nods at most this often
REST_SWAY = 0.35                     # share of the sway left while silent
ACTIVITY_EASE_S = 0.3                # time constant of the sway's rise and fall with speech


@dataclass
class HeadMotionState:
    """Plain floats, not numpy: a live stream advances it a frame at a time, where numpy's
    per-call cost would be most of the work."""
    rng: np.random.Generator
    sway_hz: list                    # [axis][sine] frequencies, axes pitch, yaw, roll
    sway_phase: list                 # [axis][sine]
    peak_db: float = FIRST_PEAK_DB
    quiet_s: float = math.inf        # how long the voice has been silent (inf: not yet heard)
    activity: float = 0.0            # eased 0..1: how much the voice is speaking
    target: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    pose: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    mean: list = field(default_factory=lambda: [0.0, 0.0, 0.0])   # the pose's running mean
    loud: bool = False               # the last frame was above the nod threshold
    since_nod_s: float = math.inf
    nods: list = field(default_factory=list)   # (seconds into the nod, depth) of nods under way


def initial_state(seed: int) -> HeadMotionState:
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    return HeadMotionState(rng, rng.uniform(*SWAY_HZ, (3, 2)).tolist(), rng.uniform(0, 2 * math.pi, (3, 2)).tolist())


def head_motion(values: np.ndarray, start: int, fps: float, levels_db: np.ndarray | None, scale: float,
                state: HeadMotionState) -> tuple[np.ndarray, HeadMotionState]:
    """Add phrase poses and sway (× `scale`; 0 = off) to the head of frames start..start+T-1,
    (T, C) in place; `levels_db` (T,) is each frame's level. Without levels, sway only."""
    if scale <= 0 or len(values) == 0:
        return values, state
    first, limit = labels.HEAD_SLICE.start, labels.HEAD_LIMIT_DEG
    for t in range(len(values)):
        level = None if levels_db is None else float(levels_db[t])
        gain = _step(state, level, fps)
        added = [pose + gain * sway for pose, sway in zip(state.pose, _sway(state, (start + t) / fps))]
        added[0] += _nod(state, level, fps)
        row = values[t]
        for axis in range(3):    # element by element: a frame or two per call, where numpy would cost more
            row[first + axis] = min(max(float(row[first + axis]) + scale * added[axis], -limit), limit)
    return values, state


def _sway(state: HeadMotionState, seconds: float) -> list[float]:
    """The sway at `seconds` into the stream, per axis: two sines each."""
    return [amplitude * (math.sin(2 * math.pi * hz[0] * seconds + phase[0])
                         + math.sin(2 * math.pi * hz[1] * seconds + phase[1]))
            for amplitude, hz, phase in zip(SWAY_DEG, state.sway_hz, state.sway_phase)]


def _step(state: HeadMotionState, level: float | None, fps: float) -> float:
    """Advance one frame: activity, phrase poses, easing. Returns the sway's gain."""
    if level is not None:
        state.peak_db = max(level, state.peak_db - PEAK_DECAY_DB_S / fps)
        speaking = level >= state.peak_db - ACTIVE_BELOW_PEAK_DB
        if speaking and state.quiet_s >= PHRASE_PAUSE_S:
            state.target = (state.rng.normal(0.0, POSE_SD_DEG) - POSE_MEAN_PULL * np.asarray(state.mean)).tolist()
        state.quiet_s = 0.0 if speaking else state.quiet_s + 1.0 / fps
        if state.quiet_s >= REST_AFTER_S:
            state.target = [0.0, 0.0, 0.0]
    else:
        speaking = True
    state.activity += (float(speaking) - state.activity) * (1.0 - math.exp(-1.0 / (ACTIVITY_EASE_S * fps)))
    ease = 1.0 - math.exp(-1.0 / (POSE_EASE_S * fps))
    state.pose = [pose + (target - pose) * ease for pose, target in zip(state.pose, state.target)]
    state.mean = [mean + (pose - mean) / (POSE_MEAN_S * fps) for mean, pose in zip(state.mean, state.pose)]
    return REST_SWAY + (1.0 - REST_SWAY) * state.activity


def _nod(state: HeadMotionState, level: float | None, fps: float) -> float:
    """Start a nod on a loud onset; return this frame's pitch from the nods under way."""
    state.since_nod_s += 1.0 / fps
    if level is not None:
        loud = level >= state.peak_db - NOD_BELOW_PEAK_DB
        if loud and not state.loud and state.since_nod_s >= NOD_GAP_S:
            state.nods.append([0.0, state.rng.uniform(*NOD_DEG)])
            state.since_nod_s = 0.0
        state.loud = loud
    pitch = sum(depth * 0.5 * (1 - math.cos(2 * math.pi * age / NOD_S)) for age, depth in state.nods)
    for nod in state.nods:
        nod[0] += 1.0 / fps
    state.nods = [n for n in state.nods if n[0] < NOD_S]
    return pitch
