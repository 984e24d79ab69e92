"""Label rules: timed phonemes (+ the audio's loudness and pitch) → ARKit face and head labels.

This module is the whole rule set for the TTS corpus. It writes (T, C) labels
at `fps` (T = audio.num_frames(len(audio))) and a validity mask.

Mouth (JALI-style: jaw and lips are separate controls)
  * Each phone maps to one viseme, diphthongs to two in sequence (ay = aa→iy).
    A viseme is a jaw opening plus a lip shape over the lip channels.
  * Coarticulation by dominance blending (Cohen–Massaro): every viseme pulls
    each frame toward its target with a weight that is flat over its own
    interval and decays exponentially outside it, slower before (anticipation
    of the next viseme) than after (carry-over). Lips and jaw blend separately
    with their own weights, so /s/ in "soon" is already rounded (its lips are
    weak, the /uw/ anticipated) while its jaw stays nearly shut. The
    exponential tails give smooth onsets and offsets.
  * p/b/m: lips closed (mouthClose + mouthPress, chin up with mouthShrugLower),
    jaw nearly shut, with the strongest lip weight so the closure always wins;
    their interval is widened to at least one frame so it cannot fall between
    frame centres. f/v: lower lip tucked (mouthRollLower) and upper lip raised
    (mouthUpperUp). w/uw/uh/ow/oy: rounding (mouthPucker, mouthFunnel). Open
    vowels open the jaw; every vowel's jaw opening is scaled by its stress and
    by its loudness relative to the clip's speech level. Silence: jaw shut and
    lips at rest.
  * Per clip a speaking style (jaw and lip gains, as in JALI's two axes) is
    drawn, so corpora are not one caricature; closures are exempt.

Upper face and head (what a viewer expects; the audio only partly predicts it)
  * Blinks at the start of pauses (phrase ends) and, between them, at human
    intervals (gamma-distributed, about 4 s apart, never closer than 1 s);
    each 120–300 ms, closing faster than opening. They stay valid labels: most
    fall at pauses, which the audio shows.
  * Brow raises (browInnerUp, browOuterUp) on pitch accents: stressed vowels
    whose pitch is well above the clip's median; head nods on most of them.
  * Head: a new yaw/roll/pitch pose at each phrase, eased in; a little motion
    with speech energy; slow idle drift (sums of slow sines).

Masked (not modelled; the model must not learn zeros there): tongueOut, eye
gaze (eyeLook*), eyeSquint, eyeWide, cheekPuff, cheekSquint, noseSneer,
mouthDimple, mouthFrown, mouthLeft/Right, jawLeft/Right/Forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import labels
from ..audio import FPS, SAMPLE_RATE, num_frames
from . import prosody
from .clips import Phoneme
from .phonemes import BILABIAL, SILENCE, VOWELS, check_phone

# --- what is modelled -----------------------------------------------------------

LIP_CHANNELS = ("mouthClose", "mouthPressLeft", "mouthPressRight", "mouthFunnel", "mouthPucker",
                "mouthRollLower", "mouthRollUpper", "mouthUpperUpLeft", "mouthUpperUpRight",
                "mouthLowerDownLeft", "mouthLowerDownRight", "mouthStretchLeft", "mouthStretchRight",
                "mouthSmileLeft", "mouthSmileRight", "mouthShrugLower", "mouthShrugUpper")
CLOSURE_CHANNELS = ("mouthClose", "mouthPressLeft", "mouthPressRight")
BROW_CHANNELS = ("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight")
MODELLED = frozenset(("jawOpen",) + LIP_CHANNELS + BROW_CHANNELS + labels.EYE_BLINK + labels.HEAD)
MASKED = tuple(c for c in labels.CHANNELS if c not in MODELLED)

# --- visemes --------------------------------------------------------------------


@dataclass(frozen=True)
class Viseme:
    jaw: float                   # jawOpen target
    lips: dict                   # lip channel (a "Left/Right" pair may be named once) → target
    lip_weight: float = 1.0      # dominance of the lip shape against its neighbours
    jaw_weight: float = 1.0      # dominance of the jaw opening
    anticipation_s: float = 0.06  # fall-off time of the dominance before the viseme
    carryover_s: float = 0.04    # fall-off time after it


def _lips(**targets) -> dict:
    """Expand paired channels: mouthPress=0.4 → mouthPressLeft=mouthPressRight=0.4."""
    out = {}
    for name, value in targets.items():
        if name in LIP_CHANNELS:
            out[name] = value
        else:
            out[name + "Left"] = out[name + "Right"] = value
    return out


CLOSED = Viseme(0.02, _lips(mouthClose=0.45, mouthPress=0.45, mouthShrugLower=0.25, mouthRollUpper=0.1),
                lip_weight=4.0, jaw_weight=4.0, anticipation_s=0.025, carryover_s=0.02)
LABIODENTAL = Viseme(0.07, _lips(mouthRollLower=0.55, mouthUpperUp=0.3, mouthShrugUpper=0.15),
                     lip_weight=4.0, jaw_weight=2.0, anticipation_s=0.04, carryover_s=0.03)
REST = Viseme(0.0, {}, lip_weight=1.5, jaw_weight=2.0, anticipation_s=0.05, carryover_s=0.06)

VISEMES: dict[str, Viseme] = {
    "sil": REST,
    # vowels: jaw by openness, lips spread / neutral / rounded
    "aa": Viseme(0.62, _lips(mouthLowerDown=0.3, mouthUpperUp=0.1), jaw_weight=2.0),
    "ae": Viseme(0.52, _lips(mouthLowerDown=0.3, mouthStretch=0.25, mouthUpperUp=0.15), jaw_weight=2.0),
    "ah": Viseme(0.45, _lips(mouthLowerDown=0.2), jaw_weight=2.0),
    "ao": Viseme(0.48, _lips(mouthFunnel=0.4, mouthPucker=0.15, mouthLowerDown=0.1), jaw_weight=2.0),
    "ax": Viseme(0.28, _lips(mouthLowerDown=0.1), lip_weight=0.6, jaw_weight=1.2),
    "eh": Viseme(0.36, _lips(mouthStretch=0.25, mouthLowerDown=0.15, mouthSmile=0.08), jaw_weight=1.8),
    "er": Viseme(0.24, _lips(mouthFunnel=0.3, mouthPucker=0.2), lip_weight=1.5, jaw_weight=1.5),
    "ih": Viseme(0.22, _lips(mouthStretch=0.3, mouthSmile=0.12), jaw_weight=1.5),
    "iy": Viseme(0.14, _lips(mouthStretch=0.4, mouthSmile=0.22), lip_weight=1.6, jaw_weight=1.5),
    "uh": Viseme(0.22, _lips(mouthPucker=0.35, mouthFunnel=0.25), lip_weight=2.0, jaw_weight=1.5,
                 anticipation_s=0.08),
    "uw": Viseme(0.14, _lips(mouthPucker=0.75, mouthFunnel=0.35), lip_weight=3.0, jaw_weight=1.5,
                 anticipation_s=0.09),
    "ow": Viseme(0.34, _lips(mouthFunnel=0.55, mouthPucker=0.35), lip_weight=2.5, jaw_weight=1.8,
                 anticipation_s=0.08),
    # consonants
    "p": CLOSED, "b": CLOSED, "m": CLOSED,
    "f": LABIODENTAL, "v": LABIODENTAL,
    "w": Viseme(0.08, _lips(mouthPucker=0.8, mouthFunnel=0.25), lip_weight=4.0, anticipation_s=0.09),
    "r": Viseme(0.14, _lips(mouthFunnel=0.3, mouthPucker=0.25), lip_weight=1.5),
    "sh": Viseme(0.1, _lips(mouthFunnel=0.45, mouthPucker=0.25, mouthUpperUp=0.12), lip_weight=2.0),
    "s": Viseme(0.05, _lips(mouthStretch=0.2, mouthSmile=0.05), lip_weight=0.8, jaw_weight=2.0),
    "th": Viseme(0.12, _lips(mouthUpperUp=0.05), lip_weight=0.5, jaw_weight=1.5),
    "t": Viseme(0.12, {}, lip_weight=0.3, jaw_weight=1.0),
    "l": Viseme(0.18, {}, lip_weight=0.3, jaw_weight=1.0),
    "k": Viseme(0.18, {}, lip_weight=0.3, jaw_weight=0.8),
    "y": Viseme(0.1, _lips(mouthStretch=0.3, mouthSmile=0.15), lip_weight=1.0),
    "hh": Viseme(0.2, {}, lip_weight=0.2, jaw_weight=0.4),
}
PHONE_VISEMES: dict[str, tuple[str, ...]] = {
    **{p: (p,) for p in VISEMES},
    "pau": ("sil",), "sp": ("sil",),
    "ay": ("aa", "iy"), "aw": ("aa", "uw"), "ey": ("eh", "iy"), "oy": ("ao", "iy"),
    "z": ("s",), "zh": ("sh",), "ch": ("sh",), "jh": ("sh",), "dh": ("th",),
    "d": ("t",), "n": ("t",), "g": ("k",), "ng": ("k",),
}
JAW_CLOSURE_COUPLING = 0.8    # jaw opening lost at full lip closure (fraction)
DIPHTHONG_SPLIT = 0.55         # first target holds this fraction of a diphthong

# Vowel jaw opening × stress × loudness.
STRESS_GAIN = {0: 0.8, 1: 1.12, 2: 0.95}
LOUDNESS_RANGE_DB = 24.0       # a vowel this far below the clip's speech level counts as silent
LOUDNESS_REFERENCE_PCT = 95    # the clip's speech level: this percentile of its frame levels
MIN_LOUDNESS_GAIN = 0.55       # jaw opening at the quiet end of the range (1.0 at the loud end)
EPS = 1e-6

# --- upper face and head constants ----------------------------------------------

BLINK_DURATION_S = (0.12, 0.30)     # human blinks last 100–400 ms
BLINK_CLOSING_FRACTION = 0.35       # closing is faster than opening
BLINK_MEAN_INTERVAL_S = 4.0         # ~15 per minute while talking
BLINK_INTERVAL_SHAPE = 3.0          # gamma shape: regular-ish, rarely very short
BLINK_MIN_INTERVAL_S = 1.0
BLINK_AT_PAUSE_PROB = 0.7
PHRASE_PAUSE_S = 0.15               # a pause at least this long ends a phrase
ACCENT_MIN_SEMITONES = 1.0          # pitch above the clip median that makes an accent
ACCENT_MIN_SPACING_S = 0.5
BROW_ATTACK_S, BROW_RELEASE_S = 0.15, 0.35
NOD_PROB = 0.6
NOD_WIDTH_S = 0.35
HEAD_EASE_S = 0.3                   # time constant of the move to a new phrase pose


@dataclass(frozen=True)
class Style:
    """A speaker's manner, drawn per clip (recorded in clip metadata)."""
    jaw_gain: float = 1.0       # JALI jaw axis
    lip_gain: float = 1.0       # JALI lip axis
    smile: float = 0.0          # resting smile
    brow_gain: float = 1.0
    head_gain: float = 1.0      # scale of head turns, nods and drift (degrees)
    asymmetry: float = 0.0      # right side = left side × (1 + asymmetry)


def draw_style(rng: np.random.Generator) -> Style:
    return Style(jaw_gain=float(rng.uniform(0.8, 1.2)), lip_gain=float(rng.uniform(0.8, 1.25)),
                 smile=float(rng.uniform(0.0, 0.12)), brow_gain=float(rng.uniform(0.6, 1.3)),
                 head_gain=float(rng.uniform(0.6, 1.4)), asymmetry=float(rng.uniform(-0.08, 0.08)))


def style_dict(style: Style) -> dict:
    return {k: round(v, 4) for k, v in asdict(style).items()}


# --- public entry ---------------------------------------------------------------

def make_labels(phonemes: list[Phoneme], audio: np.ndarray, fps: int = FPS, seed: int = 0,
                style: Style | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Timed phonemes + 16 kHz audio (N,) → labels (T, C) float32 and mask (T, C) bool.

    T = num_frames(N, fps); frame i is evaluated at its centre (i + 0.5) / fps.
    `seed` drives the parts the audio does not decide (blinks, head pose, style).
    """
    for p in phonemes:
        check_phone(p.phone)
    rng = np.random.default_rng(seed)
    style = style or draw_style(rng)
    count = num_frames(np.asarray(audio).size, fps, SAMPLE_RATE)
    times = (np.arange(count) + 0.5) / fps
    loudness = prosody.loudness_db(audio, fps)
    pitch = prosody.pitch_hz(audio, fps)
    out = np.zeros((count, labels.NUM_CHANNELS), np.float32)
    _mouth(out, phonemes, times, loudness, style, fps)
    accents = find_accents(phonemes, pitch, loudness, fps)
    _brows(out, accents, times, style)
    _blinks(out, phonemes, times, rng)
    _head(out, phonemes, accents, times, loudness, style, rng)
    _mirror(out, style)
    out[:, labels.BLENDSHAPE_SLICE] = np.clip(out[:, labels.BLENDSHAPE_SLICE], 0.0, 1.0)
    mask = np.zeros_like(out, dtype=bool)
    mask[:, labels.indices(sorted(MODELLED))] = True
    out[~mask] = 0.0
    return out, mask


# --- mouth ----------------------------------------------------------------------

def keyframes(phonemes: list[Phoneme], fps: int = FPS) -> list[tuple[float, float, Viseme, Phoneme]]:
    """(start, end, viseme, phoneme) per viseme target; diphthongs split in two.

    Bilabials are widened to at least one frame so a frame centre lands inside.
    """
    out = []
    for p in phonemes:
        names = PHONE_VISEMES["sil" if p.phone in SILENCE else p.phone]
        if len(names) == 1:
            start, end = p.start, p.end
            if p.phone in BILABIAL and end - start < 1.0 / fps:
                mid = 0.5 * (start + end)
                start, end = mid - 0.5 / fps, mid + 0.5 / fps
            out.append((start, end, VISEMES[names[0]], p))
        else:
            split = p.start + DIPHTHONG_SPLIT * (p.end - p.start)
            out.append((p.start, split, VISEMES[names[0]], p))
            out.append((split, p.end, VISEMES[names[1]], p))
    return out


def dominance(times: np.ndarray, start: float, end: float, weight: float, before_s: float,
              after_s: float) -> np.ndarray:
    """Weight flat over [start, end], falling off as a Gaussian outside it, (T,).

    Gaussian rather than exponential tails: a neighbour's pull fades quickly
    once it is a phone away, so a short vowel between two /p/ still opens.
    """
    before = np.clip(start - times, 0.0, None) / before_s
    after = np.clip(times - end, 0.0, None) / after_s
    return weight * np.exp(-(before ** 2 + after ** 2))


def _mouth(out, phonemes, times, loudness, style: Style, fps) -> None:
    frames = keyframes(phonemes, fps)
    if not frames:
        return
    reference = np.percentile(loudness, LOUDNESS_REFERENCE_PCT)
    lip_idx = labels.indices(LIP_CHANNELS)
    lip_targets = np.array([[v.lips.get(c, 0.0) for c in LIP_CHANNELS] for _, _, v, _ in frames], np.float32)
    jaw_targets = np.array([_jaw_target(v, p, loudness, reference, fps) for _, _, v, p in frames], np.float32)
    lip_w = np.stack([dominance(times, s, e, v.lip_weight, v.anticipation_s, v.carryover_s)
                      for s, e, v, _ in frames])                                   # (K, T)
    jaw_w = np.stack([dominance(times, s, e, v.jaw_weight, v.anticipation_s, v.carryover_s)
                      for s, e, v, _ in frames])
    lips = (lip_w.T @ lip_targets) / (lip_w.sum(axis=0)[:, None] + EPS)         # (T, L)
    jaw = (jaw_w.T @ jaw_targets) / (jaw_w.sum(axis=0) + EPS)                   # (T,)
    closure = np.isin(LIP_CHANNELS, CLOSURE_CHANNELS)
    lips[:, ~closure] *= style.lip_gain
    smile = labels.indices(("mouthSmileLeft", "mouthSmileRight"))
    out[:, lip_idx] = lips
    out[:, smile] += style.smile
    # Lips pressed together hold the jaw nearly shut, whatever the neighbours pull.
    closure = np.clip(lips[:, LIP_CHANNELS.index("mouthPressLeft")] / CLOSED.lips["mouthPressLeft"], 0.0, 1.0)
    out[:, labels.index("jawOpen")] = jaw * style.jaw_gain * (1.0 - JAW_CLOSURE_COUPLING * closure)


def _jaw_target(v: Viseme, p: Phoneme, loudness, reference, fps) -> float:
    """A vowel's jaw opening grows with stress and with loudness relative to the clip."""
    if p.phone not in VOWELS:
        return v.jaw
    lo, hi = int(p.start * fps), max(int(p.start * fps) + 1, int(np.ceil(p.end * fps)))
    level = float(np.mean(loudness[lo:hi])) if lo < loudness.size else reference
    loud = np.clip(1.0 + (level - reference) / LOUDNESS_RANGE_DB, 0.0, 1.0)
    gain = MIN_LOUDNESS_GAIN + (1.0 - MIN_LOUDNESS_GAIN) * loud
    return float(np.clip(v.jaw * STRESS_GAIN.get(p.stress, 1.0) * gain, 0.0, 1.0))


# --- prosody-driven upper face ----------------------------------------------------

def find_accents(phonemes: list[Phoneme], pitch: np.ndarray, loudness: np.ndarray,
                 fps: int = FPS) -> list[tuple[Phoneme, float]]:
    """Pitch accents: (vowel, prominence in semitones above the clip's median pitch)."""
    voiced = pitch[pitch > 0]
    if voiced.size < 3:
        return []
    median = np.median(voiced)
    vowels = [p for p in phonemes if p.phone in VOWELS]
    if any(p.stress for p in vowels):
        vowels = [p for p in vowels if p.stress == 1]
    scored = []
    for p in vowels:
        lo, hi = int(p.start * fps), max(int(p.start * fps) + 1, int(np.ceil(p.end * fps)))
        f0 = pitch[lo:hi]
        f0 = f0[f0 > 0]
        if f0.size:
            semitones = 12.0 * np.log2(np.max(f0) / median)
            if semitones >= ACCENT_MIN_SEMITONES:
                scored.append((p, float(semitones)))
    chosen: list[tuple[Phoneme, float]] = []
    for p, s in sorted(scored, key=lambda x: -x[1]):
        if all(abs(p.start - q.start) >= ACCENT_MIN_SPACING_S for q, _ in chosen):
            chosen.append((p, s))
    return sorted(chosen, key=lambda x: x[0].start)


def _envelope(times, start, end, attack_s, release_s) -> np.ndarray:
    """0→1 raised-cosine rise over attack_s before `start`, hold to `end`, fall over release_s."""
    rise = np.clip((times - (start - attack_s)) / attack_s, 0.0, 1.0)
    fall = np.clip(1.0 - (times - end) / release_s, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


def _brows(out, accents, times, style: Style) -> None:
    raise_ = np.zeros_like(times)
    for p, semitones in accents:
        amplitude = np.clip(0.1 + 0.05 * semitones, 0.1, 0.5) * style.brow_gain
        raise_ = np.maximum(raise_, amplitude * _envelope(times, p.start, p.end, BROW_ATTACK_S, BROW_RELEASE_S))
    out[:, labels.index("browInnerUp")] = raise_
    out[:, labels.indices(("browOuterUpLeft", "browOuterUpRight"))] = 0.8 * raise_[:, None]


def pauses(phonemes: list[Phoneme], min_s: float = PHRASE_PAUSE_S) -> list[Phoneme]:
    return [p for p in phonemes if p.phone in SILENCE and p.end - p.start >= min_s]


def blink_times(phonemes: list[Phoneme], duration: float, rng: np.random.Generator) -> list[float]:
    """Blink onsets: most pause starts, then fill long gaps at gamma-distributed intervals."""
    anchors = [p.start for p in pauses(phonemes) if 0 < p.start < duration - 0.2
               and rng.random() < BLINK_AT_PAUSE_PROB]
    scale = BLINK_MEAN_INTERVAL_S / BLINK_INTERVAL_SHAPE
    onsets: list[float] = []
    t = -float(rng.uniform(0, BLINK_MEAN_INTERVAL_S))          # the clip starts mid-way in a cycle
    for anchor in anchors + [duration + BLINK_MEAN_INTERVAL_S]:
        while True:
            step = max(BLINK_MIN_INTERVAL_S, rng.gamma(BLINK_INTERVAL_SHAPE, scale))
            if t + step > anchor - BLINK_MIN_INTERVAL_S:
                break
            t += step
            if t >= 0:
                onsets.append(t)
        if anchor <= duration and anchor - t >= BLINK_MIN_INTERVAL_S:
            onsets.append(anchor)
            t = anchor
    return [o for o in onsets if o < duration]


def _blinks(out, phonemes, times, rng) -> None:
    duration = times[-1] + 0.5 * (times[1] - times[0]) if times.size > 1 else float(times.size)
    closed = np.zeros_like(times)
    for onset in blink_times(phonemes, duration, rng):
        length = rng.uniform(*BLINK_DURATION_S)
        peak = onset + BLINK_CLOSING_FRACTION * length
        closing = np.clip((times - onset) / (peak - onset), 0.0, 1.0)
        opening = np.clip((onset + length - times) / (onset + length - peak), 0.0, 1.0)
        shape = np.where(times < peak, closing, opening)
        closed = np.maximum(closed, rng.uniform(0.85, 1.0) * (0.5 - 0.5 * np.cos(np.pi * shape)))
    out[:, labels.indices(labels.EYE_BLINK)] = closed[:, None]


def _head(out, phonemes, accents, times, loudness, style: Style, rng) -> None:
    """Phrase poses eased in, nods on accents, a little motion with speech energy, idle drift."""
    fps = 1.0 / (times[1] - times[0]) if times.size > 1 else FPS
    pose = np.zeros((times.size, 3))                         # pitch, yaw, roll in degrees
    starts = [0.0] + [p.end for p in pauses(phonemes)]
    for start in starts:
        target = rng.normal(0.0, [1.5, 3.0, 1.2]) * style.head_gain
        pose[times >= start] = target
    pose = _ease(_ease(pose, HEAD_EASE_S * fps), HEAD_EASE_S * fps)
    for p, semitones in accents:
        if rng.random() < NOD_PROB:
            centre = 0.5 * (p.start + p.end)
            bump = np.clip(1.0 - np.abs(times - centre) / (0.5 * NOD_WIDTH_S), 0.0, 1.0)
            pose[:, 0] += style.head_gain * min(1.0 + 0.4 * semitones, 3.5) * (0.5 - 0.5 * np.cos(np.pi * bump))
    energy = np.clip(1.0 + (loudness - np.percentile(loudness, LOUDNESS_REFERENCE_PCT)) / LOUDNESS_RANGE_DB, 0, 1)
    pose[:, 0] -= 0.8 * style.head_gain * _ease(energy[:, None], 0.15 * fps)[:, 0]
    for axis, amplitude in enumerate((0.5, 0.8, 0.4)):
        for _ in range(2):
            freq, phase = rng.uniform(0.05, 0.25), rng.uniform(0, 2 * np.pi)
            pose[:, axis] += amplitude * style.head_gain * np.sin(2 * np.pi * freq * times + phase)
    out[:, labels.HEAD_SLICE] = np.clip(pose, -labels.HEAD_LIMIT_DEG, labels.HEAD_LIMIT_DEG)


def _ease(x: np.ndarray, time_constant_frames: float) -> np.ndarray:
    """One-pole low-pass along time (axis 0), starting from the first value."""
    from scipy.signal import lfilter

    a = np.exp(-1.0 / max(time_constant_frames, EPS))
    return lfilter([1 - a], [1, -a], x, axis=0, zi=(a * x[:1]))[0]


def _mirror(out, style: Style) -> None:
    """Right-side channels = left × (1 + asymmetry): faces are not perfectly symmetric."""
    for name in labels.BLENDSHAPES:
        if name.endswith("Left"):
            right = name[:-4] + "Right"
            out[:, labels.index(right)] = out[:, labels.index(name)] * (1.0 + style.asymmetry)
