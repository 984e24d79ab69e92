"""Lip-sync metrics: pure functions on label arrays, phoneme timings and audio.

Used by `talkmotion eval` and by training (validation reports). Nothing here
knows where labels or predictions came from; every function takes arrays.

Conventions and definitions (the thresholds are fixed here, so reports compare):
- Frame i covers [i/fps, (i+1)/fps). A phone segment's *core frames* are the
  frames whose centre (i + 0.5)/fps lies inside [start, end); a segment shorter
  than a frame gets the one frame holding its midpoint. Segments past the last
  frame are ignored. Phone timings should come from an aligner independent of
  the voice (data/align.py, `corpus align`), never from the engine that spoke.
- Lip aperture = max(jawOpen - mouthClose, 0): ARKit's mouthClose is the
  lips-together shape that cancels an open jaw, so a bilabial may have an open
  jaw and still closed lips.
- Rounding = mouthFunnel + mouthPucker.
- Closure threshold, from the *reference* labels of the evaluated clips:
      closed = CLOSED_QUANTILE quantile of the reference bilabial segments'
               minimum aperture (how far a real closure may stay open),
      open   = median of the reference open-vowel segments' maximum aperture,
      threshold = closed + CLOSURE_FRACTION * (open - closed).
  With no bilabial or open vowel in the reference, DEFAULT_CLOSURE_THRESHOLD.
  By construction the reference itself closes on at least CLOSED_QUANTILE of
  its bilabials; clean rule labels close on all of them.

Frame-level figures (the headline; every source on the same frames):
- bilabial_closure: share of p/b/m segments whose aperture falls to the
  threshold or below on at least one of their core frames.
- frame_open_closed_auc: ROC AUC of aperture on every core frame of open-vowel
  segments (OPEN_VOWELS: aa ae ah ao aw ay; unstressed AH is the schwa "ax"
  and not among them) against every core frame of p/b/m segments. Ties count
  half.
- frame_rounding_auc: ROC AUC of rounding on every core frame of rounded
  vowels (ROUNDED_VOWELS) against every core frame of spread vowels
  (SPREAD_VOWELS).
- openness_corr: Pearson correlation of aperture with the phone-openness
  curve, pooled over every valid frame of all clips (pauses and the clips'
  silent edges included, as in the figures of issue 11). The curve: each
  phone's OPENNESS (a table from phonetics, not from the viseme rules: 0 for
  silence and closures, rising with vowel height from close to open vowels),
  as a step function of time, smoothed by a Gaussian of standard deviation
  OPENNESS_SMOOTHING_S (lips and jaw cannot jump; about the spread of
  coarticulation), sampled at frame centres. Exactly: the curve at t is
  sum over segments of openness * (Phi((end - t)/s) - Phi((start - t)/s)).
- silence_closure: share of silence frames at least SILENCE_MARGIN_S away from
  any speech phone (the lips may move into and out of speech near the edges)
  whose aperture is at most the threshold.
- lag_ms: the lag in whole frames within +-MAX_LAG_FRAMES maximising the
  cross-correlation of mean-removed predicted and reference jawOpen, summed
  over clips. Positive = the prediction is late. energy_lag_ms: the same
  between predicted jawOpen and the audio loudness curve (positive = the jaw
  moves after the sound). None where no lag correlates positively.

Segment-extreme figures (kept for comparison with earlier reports; lenient,
because one good frame per segment is enough):
- open_closed_auc ("seg AUC"): ROC AUC separating open-vowel segments (maximum
  jawOpen over core frames) from bilabial segments (minimum jawOpen over core
  frames). jawOpen, not aperture, so mouthClose spreading into a vowel next
  to a closure is not punished.
- rounding_auc ("seg round"): over pairs (rounded-vowel segment, spread-vowel
  segment) that the reference orders rounded > spread by mean rounding over
  core frames, the share the prediction orders the same way (ties count
  half). Pairs the reference itself reverses are left out.
- auc_gap_interval: the 95 % interval of open_closed_auc(a) - open_closed_auc(b)
  when clips are drawn with replacement (the same draws for both): a paired
  bootstrap over clips.

Other figures:
- jerk: mean squared third difference times fps^3 (units/s^3) over a channel
  group, counted where the reference is valid on all four frames involved;
  jerk_ratio = predicted / reference (1 = as smooth as the reference).
- diversity: per channel, the std over all valid frames of all clips;
  diversity ratio = mean over the group's channels (with reference std above
  DIVERSITY_MIN_STD) of predicted std / reference std.
- l1: mean |pred - ref| per channel over valid (masked) frames; l1_mouth is
  the mean over labels.MOUTH, l1_head_deg over head angles (degrees).
- beats(a, b): per lip metric (LIP_METRICS, the frame-level ones and mouth
  L1), a strictly better than b, or both at the best possible value (an energy
  jaw closes in digital silence as well as any model can). Lag is judged by
  its own target, not here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import labels
from .audio import frame_levels_db
from .data.phonemes import BILABIAL, OPEN_VOWELS, ROUNDED_VOWELS, SILENCE, SPREAD_VOWELS

CLOSED_QUANTILE = 0.9          # reference closures this open still count as closed
CLOSURE_FRACTION = 0.3         # threshold sits this far from closed towards open
DEFAULT_CLOSURE_THRESHOLD = 0.1  # aperture, used only when the reference has no closures or vowels
SILENCE_MARGIN_S = 0.1         # silence frames this close to speech are not judged
MAX_LAG_FRAMES = 10            # lag search range, each way
DIVERSITY_MIN_STD = 1e-3       # channels the reference never moves are left out of ratios
LOUDNESS_RANGE_DB = 40.0       # loudness curve spans this far below the clip's loud level
LOUDNESS_PEAK_QUANTILE = 0.95  # the clip's "loud level": robust to a single click
OPENNESS_SMOOTHING_S = 0.04    # standard deviation of the Gaussian that smooths the openness curve

# How open the mouth is on each phone (0 shut .. 1 wide open), from phonetics rather than
# from the viseme rules: vowels by height (close 0.3, close-mid 0.5, open-mid 0.7, open 0.9;
# diphthongs by their start), consonants by how far the jaw may drop for them.
OPENNESS: dict[str, float] = {
    **{p: 0.0 for p in SILENCE}, "p": 0.0, "b": 0.0, "m": 0.0,
    "f": 0.1, "v": 0.1, "w": 0.15, "s": 0.15, "z": 0.15, "th": 0.2, "dh": 0.2, "sh": 0.2, "zh": 0.2,
    "ch": 0.2, "jh": 0.2, "y": 0.2, "t": 0.25, "d": 0.25, "n": 0.25, "l": 0.3, "r": 0.3,
    "k": 0.3, "g": 0.3, "ng": 0.3, "hh": 0.4,
    "iy": 0.3, "uw": 0.3, "ih": 0.4, "uh": 0.4, "ax": 0.4, "er": 0.4,
    "ey": 0.5, "ow": 0.5, "eh": 0.6, "oy": 0.7, "ao": 0.7, "ah": 0.7,
    "ae": 0.85, "aa": 0.9, "aw": 0.85, "ay": 0.85,
}

_JAW = labels.index("jawOpen")
_CLOSE = labels.index("mouthClose")
_ROUND = labels.indices(("mouthFunnel", "mouthPucker"))
MOUTH_IDX = np.array(labels.indices(labels.MOUTH))
HEAD_IDX = np.arange(labels.NUM_CHANNELS)[labels.HEAD_SLICE]
BLENDSHAPE_IDX = np.arange(labels.NUM_CHANNELS)[labels.BLENDSHAPE_SLICE]

# The lip metrics a model must beat the energy baseline on, with the better direction
# (+1 higher, -1 lower) and the best possible value. Lag has its own target instead:
# two sources in sync both score 0 and neither beats the other.
LIP_METRICS: dict[str, tuple[int, float]] = {
    "bilabial_closure": (+1, 1.0), "frame_open_closed_auc": (+1, 1.0), "frame_rounding_auc": (+1, 1.0),
    "openness_corr": (+1, 1.0), "silence_closure": (+1, 1.0), "l1_mouth": (-1, 0.0),
}


# --- per-frame signals -----------------------------------------------------------

def aperture(values: np.ndarray) -> np.ndarray:
    """Lip aperture, (T, C) → (T,): jawOpen minus mouthClose, floored at 0."""
    return np.maximum(values[:, _JAW] - values[:, _CLOSE], 0.0)


def rounding(values: np.ndarray) -> np.ndarray:
    """Lip rounding, (T, C) → (T,): mouthFunnel + mouthPucker."""
    return values[:, _ROUND].sum(axis=1)


def loudness(audio: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Per-frame loudness in [0, 1], (N,) audio → (T,).

    RMS over each frame's samples in dB, mapped linearly from LOUDNESS_RANGE_DB
    below the clip's loud level (0) up to that level (1).
    """
    if num_frames == 0:
        return np.zeros(0, np.float32)
    if np.size(audio) == 0:
        return np.zeros(num_frames, np.float32)
    db = frame_levels_db(audio, num_frames, fps)
    loud = np.quantile(db, LOUDNESS_PEAK_QUANTILE)
    return np.clip((db - (loud - LOUDNESS_RANGE_DB)) / LOUDNESS_RANGE_DB, 0.0, 1.0).astype(np.float32)


def openness_curve(phonemes, num_frames: int, fps: float) -> np.ndarray:
    """The smoothed phone-openness curve at frame centres, (T,) (see the module doc)."""
    from scipy.special import ndtr

    times = (np.arange(num_frames) + 0.5) / fps
    phonemes = [p for p in phonemes or () if OPENNESS[p.phone] > 0]
    if not phonemes or num_frames == 0:
        return np.zeros(num_frames, np.float64)
    start = np.array([p.start for p in phonemes])
    end = np.array([p.end for p in phonemes])
    level = np.array([OPENNESS[p.phone] for p in phonemes])
    out = np.zeros(num_frames, np.float64)
    for first in range(0, len(phonemes), 256):          # blocks keep memory bounded on long clips
        part = slice(first, first + 256)
        inside = ndtr((end[part, None] - times) / OPENNESS_SMOOTHING_S) - \
            ndtr((start[part, None] - times) / OPENNESS_SMOOTHING_S)         # (K, T)
        out += level[part] @ inside
    return out


def pearson(x, y) -> float | None:
    """Pearson correlation of two (N,) arrays; None if either is constant or empty."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return None
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else None


# --- phone segments ---------------------------------------------------------------

def core_frames(start: float, end: float, num_frames: int, fps: float) -> np.ndarray:
    """Frame indices whose centre lies in [start, end); the midpoint's frame if none."""
    eps = 1e-9
    first = max(math.ceil(start * fps - 0.5 - eps), 0)
    last = min(math.ceil(end * fps - 0.5 - eps) - 1, num_frames - 1)
    if last >= first:
        return np.arange(first, last + 1)
    mid = int(math.floor((start + end) / 2 * fps))
    return np.array([mid]) if 0 <= mid < num_frames else np.zeros(0, int)


def segments_of(phonemes, phones: frozenset, num_frames: int, fps: float, valid: np.ndarray) -> list[np.ndarray]:
    """Valid core frames of every segment whose phone is in `phones` (empty ones dropped)."""
    out = []
    for p in phonemes or ():
        if p.phone in phones:
            idx = core_frames(p.start, p.end, num_frames, fps)
            idx = idx[valid[idx]]
            if idx.size:
                out.append(idx)
    return out


def silence_core(phonemes, num_frames: int, fps: float, valid: np.ndarray) -> np.ndarray:
    """(T,) bool: valid silence frames at least SILENCE_MARGIN_S from any speech phone.

    The clip's own start and end are not speech, so a leading or trailing
    silence keeps its outer edge.
    """
    phonemes = list(phonemes or ())
    silent = np.zeros(num_frames, bool)
    for k, p in enumerate(phonemes):
        if p.phone not in SILENCE:
            continue
        speech_before = k > 0 and phonemes[k - 1].phone not in SILENCE
        speech_after = k + 1 < len(phonemes) and phonemes[k + 1].phone not in SILENCE
        start = p.start + (SILENCE_MARGIN_S if speech_before else 0.0)
        end = p.end - (SILENCE_MARGIN_S if speech_after else 0.0)
        if end > start:
            silent[core_frames(start, end, num_frames, fps)] = True
    return silent & valid


# --- statistics -------------------------------------------------------------------

def roc_auc(positive, negative) -> float | None:
    """P(a positive scores above a negative), ties half (Mann-Whitney). None if a side is empty."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def segment_extremes(pred: np.ndarray, clip) -> tuple[np.ndarray, np.ndarray]:
    """(T, C) prediction of one clip → (peak jawOpen of each open-vowel segment,
    least jawOpen of each bilabial segment): what open_closed_auc ranks."""
    valid, t = _valid(clip, pred), len(pred)
    return _jaw_extremes(np.asarray(pred)[:, _JAW], segments_of(clip.phonemes, OPEN_VOWELS, t, clip.fps, valid),
                         segments_of(clip.phonemes, BILABIAL, t, clip.fps, valid))


def _jaw_extremes(jaw: np.ndarray, opens, closures) -> tuple[np.ndarray, np.ndarray]:
    return np.array([jaw[i].max() for i in opens]), np.array([jaw[i].min() for i in closures])


def auc_gap_interval(a_parts, b_parts, rounds: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float] | None:
    """Paired-bootstrap interval of AUC(a) - AUC(b) over clips; a_parts and b_parts hold one
    segment_extremes() pair per clip, in the same clip order. None if a draw lacks a class."""
    rng = np.random.default_rng(seed)
    n, gaps = len(a_parts), []
    for _ in range(rounds):
        pick = rng.integers(n, size=n)
        aucs = [roc_auc(np.concatenate([parts[k][0] for k in pick]), np.concatenate([parts[k][1] for k in pick]))
                for parts in (a_parts, b_parts)]
        if None in aucs:
            return None
        gaps.append(aucs[0] - aucs[1])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(gaps, [tail, 100 - tail])
    return float(low), float(high)


def paired_auc(positive, negative, positive_ref, negative_ref, block: int = 1024) -> float | None:
    """Share of (positive i, negative j) pairs with positive_ref[i] > negative_ref[j] that the
    predictions order the same way, ties half; (P,), (N,), (P,), (N,) → float. None without such pairs.
    """
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    pos_ref, neg_ref = np.asarray(positive_ref, np.float64), np.asarray(negative_ref, np.float64)
    agree, pairs = 0.0, 0
    for a in range(0, pos.size, block):  # blocks keep memory bounded on large test sets
        kept = pos_ref[a:a + block, None] > neg_ref[None, :]
        order = np.sign(pos[a:a + block, None] - neg[None, :])
        agree += float(((order + 1) / 2)[kept].sum())
        pairs += int(kept.sum())
    return agree / pairs if pairs else None


def cross_correlation(pred: np.ndarray, ref: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> np.ndarray:
    """(2*max_lag+1,) sums of pred[t + k] * ref[t] for k = -max_lag..max_lag, on mean-removed (T,) signals."""
    pred = np.asarray(pred, np.float64) - np.mean(pred) if len(pred) else np.zeros(0)
    ref = np.asarray(ref, np.float64) - np.mean(ref) if len(ref) else np.zeros(0)
    n = len(pred)
    out = np.zeros(2 * max_lag + 1)
    for j, k in enumerate(range(-max_lag, max_lag + 1)):
        if abs(k) < n:
            out[j] = np.dot(pred[k:], ref[:n - k]) if k >= 0 else np.dot(pred[:n + k], ref[-k:])
    return out


def best_lag(xcorr: np.ndarray) -> int | None:
    """Lag (frames) of the largest positive correlation, the smallest |lag| on ties; None if none is positive."""
    max_lag = (len(xcorr) - 1) // 2
    lags = np.arange(-max_lag, max_lag + 1)
    top = xcorr.max() if len(xcorr) else 0.0
    if top <= 0:
        return None
    tied = lags[xcorr >= top - 1e-9 * abs(top)]
    return int(tied[np.argmin(np.abs(tied))])


@dataclass(frozen=True)
class Thresholds:
    closure: float        # lip aperture at or below which lips count as closed
    closed_level: float   # CLOSED_QUANTILE of reference bilabial minimum apertures
    open_level: float     # median reference open-vowel maximum aperture
    source: str           # "reference" or "default"

    def to_json(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def thresholds_from_reference(refs: list[np.ndarray], clips) -> Thresholds:
    """Closure threshold from reference labels `refs` [(T, C)] and the clips' phonemes (see module doc)."""
    closed, opened = [], []
    for ref, clip in zip(refs, clips):
        valid = _valid(clip, ref)
        ap = aperture(ref)
        closed += [ap[i].min() for i in segments_of(clip.phonemes, BILABIAL, len(ref), clip.fps, valid)]
        opened += [ap[i].max() for i in segments_of(clip.phonemes, OPEN_VOWELS, len(ref), clip.fps, valid)]
    if not closed or not opened:
        return Thresholds(DEFAULT_CLOSURE_THRESHOLD, 0.0, 0.0, "default")
    closed_level = float(np.quantile(closed, CLOSED_QUANTILE))
    open_level = float(np.median(opened))
    threshold = closed_level + CLOSURE_FRACTION * max(open_level - closed_level, 0.0)
    return Thresholds(float(threshold), closed_level, open_level, "reference")


# --- scoring ------------------------------------------------------------------------

def _valid(clip, ref: np.ndarray) -> np.ndarray:
    """(T,) frames where the reference jaw is valid (the lip metrics' channel)."""
    mask = getattr(clip, "mask", None)
    return np.ones(len(ref), bool) if mask is None else np.asarray(mask, bool)[:, _JAW]


def check_prediction(pred: np.ndarray, ref: np.ndarray, where: str) -> np.ndarray:
    pred = np.asarray(pred, np.float32)
    if pred.shape != ref.shape:
        raise ValueError(f"{where}: prediction shape {pred.shape} differs from reference {ref.shape}")
    if not np.isfinite(pred).all():
        raise ValueError(f"{where}: prediction has NaN or infinite values")
    return pred


def _jerk(values: np.ndarray, fps: float) -> np.ndarray:
    return np.diff(values, n=3, axis=0) * fps ** 3  # (T-3, C)


@dataclass(frozen=True)
class ClipLips:
    """One clip's part of the frame-level lip metrics (see the module doc): what they pool
    over clips, kept per clip so a resampling of clips can pool them again (lip_summary)."""
    closed: np.ndarray           # (S,) bool: each p/b/m segment reached the closure threshold
    open_frames: np.ndarray      # aperture on open-vowel core frames
    closure_frames: np.ndarray   # aperture on p/b/m core frames
    rounded_frames: np.ndarray   # rounding on rounded-vowel core frames
    spread_frames: np.ndarray    # rounding on spread-vowel core frames
    aperture: np.ndarray         # aperture on the clip's valid frames
    openness: np.ndarray         # the openness curve on the same frames
    silence_closed: int          # silence core frames at or below the threshold
    silence_frames: int          # silence core frames


def clip_lips(pred: np.ndarray, clip, threshold: float) -> ClipLips:
    """A prediction (T, C) of one clip → its ClipLips, on the frames the clip's mask leaves valid."""
    fps, t, ph, valid = clip.fps, len(pred), clip.phonemes, _valid(clip, pred)
    ap, rnd = aperture(pred), rounding(pred)

    def frames(values, phones):
        return _joined([values[i] for i in segments_of(ph, phones, t, fps, valid)])

    silent = silence_core(ph, t, fps, valid)
    return ClipLips(
        closed=np.array([ap[i].min() <= threshold for i in segments_of(ph, BILABIAL, t, fps, valid)], bool),
        open_frames=frames(ap, OPEN_VOWELS), closure_frames=frames(ap, BILABIAL),
        rounded_frames=frames(rnd, ROUNDED_VOWELS), spread_frames=frames(rnd, SPREAD_VOWELS),
        aperture=ap[valid], openness=openness_curve(ph, t, fps)[valid],
        silence_closed=int((ap[silent] <= threshold).sum()), silence_frames=int(silent.sum()))


def lip_summary(parts: list[ClipLips]) -> dict:
    """The frame-level lip metrics pooled over clips' ClipLips (None where undefined), with their counts."""
    def pooled(name):
        return _joined([getattr(p, name) for p in parts])

    closed, open_frames, closure_frames = pooled("closed"), pooled("open_frames"), pooled("closure_frames")
    rounded_frames, spread_frames, ap = pooled("rounded_frames"), pooled("spread_frames"), pooled("aperture")
    silence_frames = sum(p.silence_frames for p in parts)
    return {
        "bilabial_closure": _share(int(closed.sum()), closed.size),
        "bilabial_segments": int(closed.size),
        "frame_open_closed_auc": roc_auc(open_frames, closure_frames),
        "open_frames": int(open_frames.size),
        "closure_frames": int(closure_frames.size),
        "frame_rounding_auc": roc_auc(rounded_frames, spread_frames),
        "rounded_frames": int(rounded_frames.size),
        "spread_frames": int(spread_frames.size),
        "openness_corr": pearson(ap, pooled("openness")),
        "openness_frames": int(ap.size),
        "silence_closure": _share(sum(p.silence_closed for p in parts), silence_frames),
        "silence_frames": silence_frames,
    }


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0)


class _Totals:
    """Running sums over clips, so metrics pool segments and frames rather than average clip scores."""

    def __init__(self):
        c = labels.NUM_CHANNELS
        self.lips: list[ClipLips] = []                # per clip, the frame-level lip metrics' parts
        self.extremes: list[tuple[np.ndarray, np.ndarray]] = []   # per clip, see segment_extremes
        self.rounded: list[float] = []
        self.spread: list[float] = []
        self.rounded_ref: list[float] = []
        self.spread_ref: list[float] = []
        self.xcorr_ref = np.zeros(2 * MAX_LAG_FRAMES + 1)
        self.xcorr_energy = np.zeros(2 * MAX_LAG_FRAMES + 1)
        self.abs_err = np.zeros(c)
        self.count = np.zeros(c)
        self.sums = {k: np.zeros(c) for k in ("pred", "pred2", "ref", "ref2")}
        self.jerk = {k: np.zeros(c) for k in ("pred", "ref", "n")}

    def add(self, pred: np.ndarray, ref: np.ndarray, clip, threshold: float) -> None:
        fps, t = clip.fps, len(ref)
        mask = np.asarray(getattr(clip, "mask", np.ones_like(ref, bool)), bool)
        valid = mask[:, _JAW]
        ph = clip.phonemes
        jaw, rnd = pred[:, _JAW], rounding(pred)
        self.lips.append(clip_lips(pred, clip, threshold))
        self.extremes.append(_jaw_extremes(jaw, segments_of(ph, OPEN_VOWELS, t, fps, valid),
                                           segments_of(ph, BILABIAL, t, fps, valid)))
        ref_rnd = rounding(ref)
        for phones, preds, refs in ((ROUNDED_VOWELS, self.rounded, self.rounded_ref),
                                    (SPREAD_VOWELS, self.spread, self.spread_ref)):
            for i in segments_of(ph, phones, t, fps, valid):
                preds.append(rnd[i].mean())
                refs.append(ref_rnd[i].mean())
        self._add_lags(jaw, ref[:, _JAW], clip, valid)
        self._add_channels(pred, ref, mask, fps)

    def _add_lags(self, jaw, ref_jaw, clip, valid) -> None:
        # Invalid frames become the signal's mean, so they add nothing to the correlation.
        def centred(x):
            x = np.asarray(x, np.float64)
            mean = x[valid].mean() if valid.any() else 0.0
            return np.where(valid, x - mean, 0.0)

        self.xcorr_ref += cross_correlation(centred(jaw), centred(ref_jaw))
        audio = getattr(clip, "audio", None)
        if audio is not None and np.size(audio):
            self.xcorr_energy += cross_correlation(centred(jaw), centred(loudness(audio, len(jaw), clip.fps)))

    def _add_channels(self, pred, ref, mask, fps) -> None:
        m = mask.astype(np.float64)
        self.abs_err += (np.abs(pred - ref) * m).sum(0)
        self.count += m.sum(0)
        self.sums["pred"] += (pred * m).sum(0)
        self.sums["pred2"] += (pred.astype(np.float64) ** 2 * m).sum(0)
        self.sums["ref"] += (ref * m).sum(0)
        self.sums["ref2"] += (ref.astype(np.float64) ** 2 * m).sum(0)
        if len(ref) >= 4:
            both = (mask[:-3] & mask[1:-2] & mask[2:-1] & mask[3:]).astype(np.float64)
            self.jerk["pred"] += (_jerk(pred.astype(np.float64), fps) ** 2 * both).sum(0)
            self.jerk["ref"] += (_jerk(ref.astype(np.float64), fps) ** 2 * both).sum(0)
            self.jerk["n"] += both.sum(0)

    def summary(self, fps: float) -> dict:
        ms = 1000.0 / fps
        lag, energy_lag = best_lag(self.xcorr_ref), best_lag(self.xcorr_energy)
        n = np.maximum(self.count, 1)
        std = {k: np.sqrt(np.maximum(self.sums[k + "2"] / n - (self.sums[k] / n) ** 2, 0.0)) for k in ("pred", "ref")}
        l1 = self.abs_err / n
        jn = np.maximum(self.jerk["n"], 1)
        open_jaw = np.concatenate([np.zeros(0)] + [o for o, _ in self.extremes])
        closure_jaw = np.concatenate([np.zeros(0)] + [c for _, c in self.extremes])
        out = {
            **lip_summary(self.lips),
            "open_closed_auc": roc_auc(open_jaw, closure_jaw),
            "open_segments": len(open_jaw),
            "rounding_auc": paired_auc(self.rounded, self.spread, self.rounded_ref, self.spread_ref),
            "rounded_segments": len(self.rounded),
            "spread_segments": len(self.spread),
            "lag_ms": None if lag is None else lag * ms,
            "abs_lag_ms": None if lag is None else abs(lag) * ms,
            "energy_lag_ms": None if energy_lag is None else energy_lag * ms,
            "l1_mouth": float(l1[MOUTH_IDX].mean()),
            "l1_blendshapes": float(l1[BLENDSHAPE_IDX].mean()),
            "l1_head_deg": float(l1[HEAD_IDX].mean()),
        }
        for group, idx in (("mouth", MOUTH_IDX), ("head", HEAD_IDX)):
            ref_jerk = self.jerk["ref"][idx].sum() / jn[idx].sum()
            out[f"jerk_{group}"] = float(self.jerk["pred"][idx].sum() / jn[idx].sum())
            out[f"jerk_ratio_{group}"] = _ratio(out[f"jerk_{group}"], ref_jerk)
            moving = idx[std["ref"][idx] > DIVERSITY_MIN_STD]
            out[f"diversity_{group}"] = \
                float(np.mean(std["pred"][moving] / std["ref"][moving])) if moving.size else None
        per_channel = {
            "l1": _by_channel(l1), "std": _by_channel(std["pred"]), "reference_std": _by_channel(std["ref"]),
        }
        return {"summary": {k: _rounded(v) for k, v in out.items()}, "per_channel": per_channel,
                "segment_extremes": self.extremes}


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def _rounded(v):
    return round(float(v), 5) if isinstance(v, (float, np.floating)) else v


def _by_channel(values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 5) for name, v in zip(labels.CHANNELS, values)}


def score(preds: list[np.ndarray], clips, refs: list[np.ndarray] | None = None,
          thresholds: Thresholds | None = None) -> dict:
    """Every metric of one prediction source, pooled over clips.

    preds:  [(T_k, C)] predictions, one per clip, same shape as the reference.
    clips:  objects with .fps, .phonemes ([Phoneme] or None), .mask (T_k, C) bool,
            .audio (N_k,) 16 kHz and, unless `refs` is given, .labels (T_k, C).
    refs:   reference labels to judge against (default: each clip's labels).
    thresholds: closure threshold (default: from the references).
    Returns {"summary": {metric: value or None}, "per_channel": {"l1"|"std"|"reference_std": {name: v}},
             "segment_extremes": [segment_extremes() of each clip]}.
    """
    clips = list(clips)
    refs = [np.asarray(r, np.float32) for r in (refs if refs is not None else [c.labels for c in clips])]
    if not (len(preds) == len(clips) == len(refs)):
        raise ValueError(f"{len(preds)} predictions, {len(refs)} references and {len(clips)} clips")
    if not clips:
        raise ValueError("no clips to score")
    thresholds = thresholds or thresholds_from_reference(refs, clips)
    totals = _Totals()
    for pred, ref, clip in zip(preds, refs, clips):
        pred = check_prediction(pred, ref, f"clip {getattr(clip, 'id', '?')}")
        totals.add(pred, ref, clip, thresholds.closure)
    return totals.summary(clips[0].fps)


def lip_metrics(pred: np.ndarray, ref: np.ndarray, clip, thresholds: Thresholds | None = None) -> dict:
    """Summary metrics of one clip: pred and ref (T, C); clip gives phonemes, mask, audio and fps."""
    return score([pred], [clip], [ref], thresholds)["summary"]


def summary_metrics(clips, preds: list[np.ndarray]) -> dict:
    """Flat {metric: number} for training logs: `score` summary of preds [(T_k, C)] on clips,
    metrics that are undefined on these clips (None) left out.
    """
    summary = score(list(preds), list(clips))["summary"]
    return {k: v for k, v in summary.items() if v is not None}


def beats(summary: dict, baseline: dict) -> dict[str, bool | None]:
    """Per lip metric: is `summary` better than `baseline`? None where either is missing.

    Strictly better, or both at the best possible value (nothing beats perfect:
    an energy jaw closes in digital silence as well as any model can).
    """
    out = {}
    for name, (sign, best) in LIP_METRICS.items():
        a, b = summary.get(name), baseline.get(name)
        if a is None or b is None:
            out[name] = None
        else:
            out[name] = bool(sign * (a - b) > 0 or (abs(a - best) < 1e-9 and abs(b - best) < 1e-9))
    return out
