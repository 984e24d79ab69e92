"""The label rules on synthetic phoneme sequences and synthetic audio."""

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.audio import FPS, SAMPLE_RATE, num_frames
from talkmotion.data import visemes
from talkmotion.data.clips import Phoneme

NEUTRAL = visemes.Style()


def speech_like(duration: float, spans=(), f0=120.0, level=0.3, seed=0) -> np.ndarray:
    """Quiet noise, with a harmonic tone (a stand-in vowel) over each (start, end[, f0, level]) span."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * SAMPLE_RATE))
    audio = rng.normal(0, 1e-4, n).astype(np.float32)
    t = np.arange(n) / SAMPLE_RATE
    for span in spans:
        start, end = span[:2]
        f = span[2] if len(span) > 2 else f0
        amp = span[3] if len(span) > 3 else level
        on = (t >= start) & (t < end)
        audio[on] += amp * sum(np.sin(2 * np.pi * k * f * t[on]) / k for k in (1, 2, 3))
    return audio


def seq(*items):
    """('p', 0.1), ('aa', 0.2, 1)... → contiguous phonemes from 0."""
    out, t = [], 0.0
    for phone, length, *stress in items:
        out.append(Phoneme(phone, t, t + length, stress[0] if stress else 0))
        t += length
    return out


def at(lab, name, time):
    return lab[int(time * FPS), labels.index(name)]


def test_closure_on_p_and_open_jaw_on_aa():
    phones = seq(("sil", 0.3), ("p", 0.09), ("aa", 0.2, 1), ("sil", 0.3))
    audio = speech_like(0.89, [(0.39, 0.59)])
    lab, _ = visemes.make_labels(phones, audio, style=NEUTRAL)
    p, aa = phones[1], phones[2]
    t_p, t_aa = (p.start + p.end) / 2, (aa.start + aa.end) / 2
    assert at(lab, "mouthClose", t_p) > 0.3 and at(lab, "mouthPressLeft", t_p) > 0.3
    assert at(lab, "jawOpen", t_p) < 0.08
    assert at(lab, "jawOpen", t_aa) > 0.45
    assert at(lab, "mouthClose", t_aa) < 0.1
    assert at(lab, "jawOpen", 0.05) == pytest.approx(0.0, abs=1e-3)      # silence: mouth shut
    assert at(lab, "jawOpen", 0.85) == pytest.approx(0.0, abs=1e-3)


def test_short_bilabial_still_closes():
    phones = seq(("aa", 0.15, 1), ("b", 0.02), ("aa", 0.15, 1))
    lab, _ = visemes.make_labels(phones, speech_like(0.32, [(0, 0.32)]), style=NEUTRAL)
    assert lab[:, labels.index("mouthPressLeft")].max() > 0.3


def test_rounding_labiodental_and_anticipation():
    round_ = seq(("sil", 0.2), ("s", 0.1), ("uw", 0.2, 1), ("sil", 0.2))
    spread = seq(("sil", 0.2), ("s", 0.1), ("iy", 0.2, 1), ("sil", 0.2))
    fv = seq(("sil", 0.2), ("f", 0.12), ("ah", 0.2, 1), ("sil", 0.2))
    audio = speech_like(0.7, [(0.3, 0.5)])
    lr, _ = visemes.make_labels(round_, audio, style=NEUTRAL)
    ls, _ = visemes.make_labels(spread, audio, style=NEUTRAL)
    lf, _ = visemes.make_labels(fv, speech_like(0.72, [(0.32, 0.52)]), style=NEUTRAL)
    assert at(lr, "mouthPucker", 0.4) > 0.5 and at(lr, "mouthFunnel", 0.4) > 0.2
    assert at(ls, "mouthPucker", 0.4) < 0.05 and at(ls, "mouthStretchLeft", 0.4) > 0.25
    # the /s/ before /uw/ is already rounded; before /iy/ it is not
    assert at(lr, "mouthPucker", 0.27) > at(ls, "mouthPucker", 0.27) + 0.1
    assert at(lf, "mouthRollLower", 0.26) > 0.3 and at(lf, "mouthUpperUpLeft", 0.26) > 0.15


def test_jaw_scales_with_loudness_and_stress():
    phones = seq(("sil", 0.2), ("aa", 0.25, 1), ("sil", 0.2), ("aa", 0.25, 1), ("sil", 0.2))
    loud_then_quiet = speech_like(1.1, [(0.2, 0.45, 120, 0.5), (0.65, 0.9, 120, 0.03)])
    lab, _ = visemes.make_labels(phones, loud_then_quiet, style=NEUTRAL)
    assert at(lab, "jawOpen", 0.33) > at(lab, "jawOpen", 0.78) + 0.1
    unstressed = seq(("sil", 0.2), ("aa", 0.25, 0), ("sil", 0.2))
    stressed = seq(("sil", 0.2), ("aa", 0.25, 1), ("sil", 0.2))
    audio = speech_like(0.65, [(0.2, 0.45)])
    lu, _ = visemes.make_labels(unstressed, audio, style=NEUTRAL)
    lst, _ = visemes.make_labels(stressed, audio, style=NEUTRAL)
    assert at(lst, "jawOpen", 0.33) > at(lu, "jawOpen", 0.33)


@pytest.mark.parametrize("seconds", [0.5, 1.0, 1.01, 2.345, 3.3333])
def test_labels_match_audio_length(seconds):
    n = int(round(seconds * SAMPLE_RATE))
    phones = seq(("sil", 0.1), ("m", n / SAMPLE_RATE - 0.2), ("sil", 0.1))
    lab, mask = visemes.make_labels(phones, speech_like(n / SAMPLE_RATE), seed=3)
    assert lab.shape == (num_frames(n), labels.NUM_CHANNELS) == mask.shape
    # the last frame starts inside the audio and the frame after it would not
    assert (lab.shape[0] - 1) / FPS < n / SAMPLE_RATE <= lab.shape[0] / FPS + 1e-9


def test_mask_marks_unmodelled_channels_invalid():
    phones = seq(("sil", 0.2), ("aa", 0.3, 1), ("sil", 0.2))
    lab, mask = visemes.make_labels(phones, speech_like(0.7, [(0.2, 0.5)]))
    for name in ("tongueOut", "eyeLookUpLeft", "eyeLookInRight", "cheekPuff", "noseSneerLeft", "jawLeft"):
        assert not mask[:, labels.index(name)].any(), name
    for name in ("jawOpen", "mouthClose", "mouthPucker", "eyeBlinkLeft", "browInnerUp", "pitch", "yaw", "roll"):
        assert mask[:, labels.index(name)].all(), name
    assert np.all(lab[~mask] == 0)
    assert np.all((lab[:, labels.BLENDSHAPE_SLICE] >= 0) & (lab[:, labels.BLENDSHAPE_SLICE] <= 1))


def test_blinks_have_human_rate_and_duration():
    minute = 60.0
    phones, t, rng = [], 0.0, np.random.default_rng(1)
    while t < minute - 3:                       # 2-3 s phrases separated by pauses
        talk, pause = rng.uniform(2, 3), rng.uniform(0.2, 0.6)
        phones += [Phoneme("aa", t, t + talk, 1), Phoneme("sil", t + talk, t + talk + pause)]
        t += talk + pause
    phones.append(Phoneme("sil", t, minute))
    lab, _ = visemes.make_labels(phones, speech_like(minute), seed=5, style=NEUTRAL)
    closed = lab[:, labels.index("eyeBlinkLeft")] > 0.5
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    ends = np.flatnonzero(closed[:-1] & ~closed[1:]) + 1
    assert 6 <= onsets.size <= 40                              # blinks per minute
    assert np.diff(onsets).min() / FPS >= 0.8
    lengths = (ends[: onsets.size] - onsets[: ends.size]) / FPS
    assert lengths.min() > 0 and lengths.max() <= 0.4


def test_brows_rise_on_pitch_accent_only():
    phones = seq(("sil", 0.2), ("ah", 0.2, 1), ("t", 0.05), ("aa", 0.25, 1), ("t", 0.05), ("ah", 0.2, 1),
                 ("sil", 0.8))
    flat = speech_like(1.75, [(0.2, 0.4), (0.45, 0.7), (0.75, 0.95)], f0=120)
    accented = speech_like(1.75, [(0.2, 0.4), (0.45, 0.7, 170), (0.75, 0.95)], f0=120)
    lf, _ = visemes.make_labels(phones, flat, seed=2, style=NEUTRAL)
    la, _ = visemes.make_labels(phones, accented, seed=2, style=NEUTRAL)
    brow = labels.index("browInnerUp")
    assert lf[:, brow].max() < 0.01
    assert la[int(0.575 * FPS), brow] > 0.15
    assert la[int(1.65 * FPS), brow] < la[int(0.575 * FPS), brow]       # released afterwards


def test_head_moves_within_limits_and_same_seed_same_labels():
    phones = seq(("sil", 0.3), ("aa", 0.5, 1), ("sil", 0.4), ("iy", 0.5, 1), ("sil", 0.3))
    audio = speech_like(2.0, [(0.3, 0.8), (1.2, 1.7)])
    a, _ = visemes.make_labels(phones, audio, seed=7)
    b, _ = visemes.make_labels(phones, audio, seed=7)
    c, _ = visemes.make_labels(phones, audio, seed=8)
    head = a[:, labels.HEAD_SLICE]
    assert np.ptp(head, axis=0).max() > 0.3 and np.abs(head).max() < 15
    assert np.abs(np.diff(head, axis=0)).max() < 2.0            # degrees per frame: smooth
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_phone_is_refused():
    with pytest.raises(ValueError, match="unknown phone 'qq'"):
        visemes.make_labels([Phoneme("qq", 0, 0.5)], speech_like(0.5))
