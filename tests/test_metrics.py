"""Lip-sync metrics on hand-made arrays: each definition checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_clips import FPS, make_clip, make_clips
from talkmotion import labels, metrics
from talkmotion.data.clips import Clip, Phoneme

JAW = labels.index("jawOpen")
CLOSE = labels.index("mouthClose")


def _clip(phones: list[tuple[str, float, float]], values: np.ndarray, audio=None) -> Clip:
    frames = len(values)
    samples = int(round(frames * 16000 / FPS))
    audio = np.zeros(samples, np.float32) if audio is None else audio
    return Clip("hand", audio, values, np.ones_like(values, bool), FPS,
                [Phoneme(p, s, e) for p, s, e in phones])


# --- segments ------------------------------------------------------------------------

def test_core_frames_are_the_frames_whose_centre_lies_in_the_segment():
    # Centres (i + 0.5)/30: frame 3 at 0.1167 s … frame 5 at 0.1833 s lie in [0.1, 0.2); frame 6 does not.
    assert metrics.core_frames(0.1, 0.2, 100, FPS).tolist() == [3, 4, 5]
    # Shorter than a frame, between two centres: the frame holding its midpoint (0.11 s → frame 3).
    assert metrics.core_frames(0.105, 0.115, 100, FPS).tolist() == [3]
    # Past the last frame: nothing.
    assert metrics.core_frames(5.0, 5.1, 100, FPS).size == 0
    # Cut at the last frame.
    assert metrics.core_frames(3.2, 4.0, 100, FPS).tolist() == [96, 97, 98, 99]


def test_silence_core_keeps_a_margin_from_speech_but_not_from_the_clip_edges():
    phones = [Phoneme("sil", 0.0, 0.5), Phoneme("aa", 0.5, 0.7), Phoneme("pau", 0.7, 1.2),
              Phoneme("aa", 1.2, 1.3), Phoneme("sil", 1.3, 1.35)]
    core = metrics.silence_core(phones, 42, FPS, np.ones(42, bool))
    frames = np.flatnonzero(core).tolist()
    # Leading silence: centres from 0 to 0.4 s (0.5 - margin) → frames 0..11.
    # Pause: centres in [0.8, 1.1) → frames 24..32. Trailing 50 ms silence: shorter than its margin.
    assert frames == list(range(0, 12)) + list(range(24, 33))


# --- statistics ----------------------------------------------------------------------

@pytest.mark.parametrize("pos, neg, want", [
    ([3, 4], [1, 2], 1.0), ([1, 2], [3, 4], 0.0), ([1], [1], 0.5), ([1, 3], [2], 0.5),
    ([2, 3], [1, 2.5], 0.75),
])
def test_roc_auc_counts_ordered_pairs_with_ties_as_half(pos, neg, want):
    assert metrics.roc_auc(pos, neg) == pytest.approx(want)


def test_roc_auc_is_undefined_without_both_classes():
    assert metrics.roc_auc([], [1.0]) is None


def test_paired_auc_counts_only_pairs_the_reference_orders():
    # Reference orders (pos0 > neg0), (pos0 > neg1), (pos1 > neg1); it reverses (pos1, neg0): left out.
    pos_ref, neg_ref = [0.8, 0.5], [0.6, 0.1]
    assert metrics.paired_auc([0.8, 0.5], [0.6, 0.1], pos_ref, neg_ref) == 1.0
    # A prediction agreeing on two of the three kept pairs and tying the third.
    assert metrics.paired_auc([0.7, 0.2], [0.1, 0.2], pos_ref, neg_ref) == pytest.approx(2.5 / 3)
    assert metrics.paired_auc([0.7, 0.2], [0.1, 0.2], pos_ref, neg_ref, block=1) == pytest.approx(2.5 / 3)
    # When the reference separates the classes it is the ROC AUC.
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    assert metrics.paired_auc(pos, neg, np.ones(50), np.zeros(40)) == pytest.approx(metrics.roc_auc(pos, neg))
    assert metrics.paired_auc([0.1], [0.5], [0.1], [0.5]) is None


def test_best_lag_finds_a_known_shift_and_its_sign():
    rng = np.random.default_rng(1)
    ref = np.convolve(rng.normal(size=300), np.ones(5) / 5, mode="same")
    late = np.roll(ref, 3)     # prediction[t] = ref[t - 3]: three frames late
    early = np.roll(ref, -2)
    assert metrics.best_lag(metrics.cross_correlation(late, ref)) == 3
    assert metrics.best_lag(metrics.cross_correlation(early, ref)) == -2
    assert metrics.best_lag(metrics.cross_correlation(np.full(300, 0.3), ref)) is None


def test_loudness_maps_the_level_range_onto_zero_to_one():
    t = np.arange(16000) / 16000
    audio = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    audio[12000:] = 0.005 * np.sin(2 * np.pi * 200 * t[12000:])  # 40 dB below the loud part
    loud = metrics.loudness(audio, 30, FPS)
    assert loud.shape == (30,)
    assert loud[:14] == pytest.approx(1.0, abs=0.01)  # 200 Hz is not whole periods per frame
    assert loud[15:22].max() == 0.0          # digital silence
    assert loud[23:].max() < 0.05            # 40 dB down is the bottom of the range


# --- thresholds and lip metrics -------------------------------------------------------

def _two_syllables(b_jaw: float = 0.0, m_jaw: float = 0.0) -> Clip:
    """sil 0–0.4 | b 0.4–0.5 | aa 0.5–0.7 | m 0.7–0.8 | iy 0.8–1.0 | sil 1.0–1.4 (42 frames)."""
    phones = [("sil", 0.0, 0.4), ("b", 0.4, 0.5), ("aa", 0.5, 0.7), ("m", 0.7, 0.8), ("iy", 0.8, 1.0),
              ("sil", 1.0, 1.4)]
    values = np.zeros((42, labels.NUM_CHANNELS), np.float32)
    centres = (np.arange(42) + 0.5) / FPS
    for phone, s, e in phones:
        jaw = {"b": b_jaw, "aa": 0.6, "m": m_jaw, "iy": 0.2}.get(phone, 0.0)
        values[(centres >= s) & (centres < e), JAW] = jaw
    return _clip(phones, values)


def test_threshold_is_placed_between_reference_closures_and_open_vowels():
    clip = _two_syllables(b_jaw=0.05, m_jaw=0.1)
    th = metrics.thresholds_from_reference([clip.labels], [clip])
    closed = np.quantile([0.05, 0.1], metrics.CLOSED_QUANTILE)
    assert th.source == "reference"
    assert th.closed_level == pytest.approx(closed)
    assert th.open_level == pytest.approx(0.6)
    assert th.closure == pytest.approx(closed + metrics.CLOSURE_FRACTION * (0.6 - closed))


def test_mouth_close_cancels_an_open_jaw():
    values = np.zeros((2, labels.NUM_CHANNELS), np.float32)
    values[:, JAW] = [0.3, 0.3]
    values[:, CLOSE] = [0.3, 0.1]
    assert metrics.aperture(values).tolist() == pytest.approx([0.0, 0.2])


def test_reference_scores_perfectly_on_itself():
    clip = _two_syllables()
    got = metrics.lip_metrics(clip.labels, clip.labels, clip)
    assert got["bilabial_closure"] == 1.0 and got["bilabial_segments"] == 2
    assert got["open_closed_auc"] == 1.0
    assert got["silence_closure"] == 1.0
    assert got["lag_ms"] == 0.0
    assert got["l1_mouth"] == 0.0
    assert got["jerk_ratio_mouth"] == pytest.approx(1.0)


def test_an_open_bilabial_counts_against_closure_and_separation():
    clip = _two_syllables()
    pred = clip.labels.copy()
    m_frames = metrics.core_frames(0.7, 0.8, 42, FPS)
    pred[m_frames, JAW] = 0.5                        # the m stays open, below the aa's 0.6
    got = metrics.lip_metrics(pred, clip.labels, clip)
    assert got["bilabial_closure"] == 0.5
    assert got["open_closed_auc"] == 1.0             # 0.6 still above both closures
    pred[m_frames, JAW] = 0.7                        # now above the aa: one of two pairs inverted
    got = metrics.lip_metrics(pred, clip.labels, clip)
    assert got["open_closed_auc"] == 0.5


def test_frame_auc_counts_every_core_frame_where_the_segment_auc_takes_extremes():
    clip = _two_syllables()
    pred = clip.labels.copy()
    m_frames = metrics.core_frames(0.7, 0.8, 42, FPS)    # 3 frames
    pred[m_frames[-1], JAW] = 0.7                         # one frame of the m opens past the aa (6 frames)
    got = metrics.lip_metrics(pred, clip.labels, clip)
    assert got["open_closed_auc"] == 1.0                  # the m still reaches 0
    closure_frames = 3 + 3                                # b 0.4–0.5 and m 0.7–0.8
    assert got["frame_open_closed_auc"] == pytest.approx(1 - 1 / closure_frames, abs=1e-4)


def test_open_silence_lowers_silence_closure():
    clip = _two_syllables()
    pred = clip.labels.copy()
    pred[:6, JAW] = 0.4                              # first 6 of the 9 judged leading-silence frames
    got = metrics.lip_metrics(pred, clip.labels, clip)
    judged = got["silence_frames"]
    assert judged == 9 + 9                           # centres in 0–0.3 s (frames 0–8) and 1.1–1.4 s (33–41)
    assert got["silence_closure"] == pytest.approx((judged - 6) / judged, abs=1e-4)


def test_rounding_auc_separates_rounded_from_spread_vowels():
    phones = [("uw", 0.0, 0.2), ("iy", 0.2, 0.4), ("ow", 0.4, 0.6), ("eh", 0.6, 0.8)]
    values = np.zeros((24, labels.NUM_CHANNELS), np.float32)
    values[:6, labels.index("mouthPucker")] = 0.6
    values[12:18, labels.index("mouthFunnel")] = 0.5
    clip = _clip(phones, values)
    assert metrics.lip_metrics(values, values, clip)["rounding_auc"] == 1.0
    flat = np.zeros_like(values)
    assert metrics.lip_metrics(flat, values, clip)["rounding_auc"] == 0.5


def test_lag_of_a_late_prediction_is_reported_in_ms():
    clip = make_clip("c", seed=3)
    late = np.concatenate([np.repeat(clip.labels[:1], 2, 0), clip.labels[:-2]])
    got = metrics.lip_metrics(late, clip.labels, clip)
    assert got["lag_ms"] == pytest.approx(2 * 1000 / FPS, abs=1e-3)


# --- smoothness, diversity, L1 --------------------------------------------------------

def test_jerk_ratio_is_below_one_for_smoother_and_above_for_noisier_predictions():
    clip = make_clip("c", seed=4)
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(col, kernel, mode="same") for col in clip.labels.T], 1)
    noisy = clip.labels + np.random.default_rng(0).normal(0, 0.05, clip.labels.shape).astype(np.float32)
    assert metrics.lip_metrics(smooth, clip.labels, clip)["jerk_ratio_mouth"] < 0.5
    assert metrics.lip_metrics(noisy, clip.labels, clip)["jerk_ratio_mouth"] > 1.5


def test_diversity_is_the_ratio_of_standard_deviations_pooled_over_clips():
    clips = make_clips(3)
    half = [c.labels * 0.5 for c in clips]
    result = metrics.score(half, clips)
    assert result["summary"]["diversity_mouth"] == pytest.approx(0.5, abs=1e-4)
    assert result["summary"]["diversity_head"] == pytest.approx(0.5, abs=1e-4)
    ref_std = np.concatenate([c.labels for c in clips])[:, JAW].std()
    assert result["per_channel"]["reference_std"]["jawOpen"] == pytest.approx(ref_std, abs=1e-4)
    assert result["per_channel"]["std"]["jawOpen"] == pytest.approx(ref_std / 2, abs=1e-4)


def test_l1_ignores_frames_the_reference_marks_invalid():
    clip = _two_syllables()
    clip.mask[:10, JAW] = False
    pred = clip.labels.copy()
    pred[:10, JAW] += 1.0                            # wrong only where the reference is invalid
    pred[10:20, CLOSE] += 0.3
    per_channel = metrics.score([pred], [clip])["per_channel"]["l1"]
    assert per_channel["jawOpen"] == 0.0
    assert per_channel["mouthClose"] == pytest.approx(0.3 * 10 / 42, abs=1e-5)


def test_a_prediction_of_the_wrong_shape_is_refused_with_the_clip_named():
    clip = _two_syllables()
    with pytest.raises(ValueError, match="clip hand: prediction shape"):
        metrics.score([clip.labels[:-1]], [clip])


def test_beats_needs_strictly_better_unless_both_are_perfect():
    a = {"bilabial_closure": 0.9, "frame_open_closed_auc": 0.99, "frame_rounding_auc": 0.8,
         "openness_corr": 0.7, "silence_closure": 1.0, "l1_mouth": 0.01}
    b = {"bilabial_closure": 0.5, "frame_open_closed_auc": 0.99, "frame_rounding_auc": 0.5,
         "openness_corr": 0.8, "silence_closure": 1.0, "l1_mouth": 0.02}
    assert metrics.beats(a, b) == {"bilabial_closure": True, "frame_open_closed_auc": False,
                                   "frame_rounding_auc": True, "openness_corr": False,
                                   "silence_closure": True, "l1_mouth": True}


def test_summary_metrics_for_training_logs_are_flat_numbers():
    clips = make_clips(2)
    preds = [np.zeros_like(c.labels) for c in clips]     # a model that never moves
    got = metrics.summary_metrics(clips, preds)
    assert all(isinstance(v, (int, float)) for v in got.values())
    assert got["bilabial_closure"] == 1.0                 # shut lips close every bilabial...
    assert got["open_closed_auc"] == 0.5                  # ...but cannot tell open from closed
    assert got["silence_closure"] == 1.0
    assert "lag_ms" not in got                            # no motion, no lag


def test_auc_gap_interval_brackets_a_real_gap_and_a_tie():
    clips = make_clips(12)
    jaw = labels.index("jawOpen")
    rng = np.random.default_rng(3)
    blurred = []
    for clip in clips:                                  # a source whose jaw is shuffled in time
        pred = clip.labels.copy()
        pred[:, jaw] = rng.permutation(pred[:, jaw])
        blurred.append(pred)
    exact = [metrics.segment_extremes(c.labels, c) for c in clips]
    noisy = [metrics.segment_extremes(p, c) for p, c in zip(blurred, clips)]
    assert sum(len(o) for o, _ in exact) > 10 and sum(len(b) for _, b in exact) > 10
    low, high = metrics.auc_gap_interval(exact, noisy, rounds=300)
    assert 0 < low <= high                               # the reference is surely better
    assert metrics.auc_gap_interval(noisy, exact, rounds=300)[1] < 0
    assert metrics.auc_gap_interval(noisy, noisy, rounds=300) == (0.0, 0.0)
