"""Training-time augmentation: labels follow the audio in time, levels and lengths hold."""

import numpy as np
import pytest
from scipy.signal import welch

from talkmotion.audio import FPS, SAMPLE_RATE, num_frames
from talkmotion.data import augment as aug


def tone_burst(seconds=2.0, at=1.0):
    """Quiet noise with a loud 50 ms burst at `at` seconds, and labels that peak on the same frame."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.01).astype(np.float32)
    start = int(at * SAMPLE_RATE)
    audio[start:start + 800] += np.sin(np.arange(800) * 0.3).astype(np.float32)
    labels = np.zeros((num_frames(audio.size), 55), np.float32)
    labels[int(at * FPS), 0] = 1.0
    return audio, labels, np.ones_like(labels, bool)


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_retimes_labels_with_the_audio(factor):
    audio, labels, mask = tone_burst()
    out, new_labels, new_mask = aug.speed(audio, labels, mask, factor)
    assert new_labels.shape[0] == num_frames(out.size) == new_mask.shape[0]
    burst_s = np.argmax(np.abs(out)) / SAMPLE_RATE
    label_s = np.argmax(new_labels[:, 0]) / FPS
    assert burst_s == pytest.approx(1.0 / factor, abs=0.03)
    assert label_s == pytest.approx(burst_s, abs=1.5 / FPS)


def test_timbre_eq_recolours_the_spectrum_at_the_same_loudness():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    out = aug.timbre_eq(audio, np.random.default_rng(2), db=8.0)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(audio ** 2)), rel=1e-3)
    f, before = welch(audio, SAMPLE_RATE, nperseg=1024)
    _, after = welch(out, SAMPLE_RATE, nperseg=1024)
    band = (f > 150) & (f < 7500)
    change_db = 10 * np.log10(after[band] / before[band])
    assert change_db.max() - change_db.min() > 6        # peaks and dips, not a flat gain
    assert np.abs(change_db).max() < 8 + 6              # within the asked range (plus level match)


def test_augment_is_reproducible_per_seed_and_keeps_labels_aligned():
    audio, labels, mask = tone_burst()
    cfg = aug.AugmentConfig(timbre_prob=0.5)
    runs = [aug.augment(audio, labels, mask, np.random.default_rng(7), cfg) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for out, lab, msk in runs[:1] + [aug.augment(audio, labels, mask, np.random.default_rng(s), cfg)
                                     for s in range(8)]:
        assert lab.shape[0] == num_frames(out.size) == msk.shape[0]
        assert np.abs(out).max() <= 1.0 + 1e-6 and np.isfinite(out).all()

