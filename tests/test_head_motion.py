"""Procedural head motion: moves while the voice speaks, rests in long pauses, never drifts,
and is the same for any chunking."""

import numpy as np

from talkmotion import head_motion, labels

FPS = 30


def speech_levels(seconds: float, seed: int = 0, pause_every_s: float = 6.0, pause_s: float = 0.6) -> np.ndarray:
    """Per-frame levels (dBFS) of speech-like audio: syllables of ~0.2 s, phrase pauses, a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FPS)) / FPS
    syllable = -14 + 8 * np.sin(2 * np.pi * t / rng.uniform(0.18, 0.25)) + rng.normal(0, 1.5, t.size)
    in_pause = (t % pause_every_s) > pause_every_s - pause_s
    return np.where(in_pause, -70.0 + rng.normal(0, 1, t.size), syllable)


def run(levels, chunk: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    values = np.zeros((levels.size, labels.NUM_CHANNELS), np.float32)
    state = head_motion.initial_state(seed)
    out = []
    for a in range(0, levels.size, chunk):
        part, state = head_motion.head_motion(values[a:a + chunk].copy(), a, FPS, levels[a:a + chunk], scale, state)
        out.append(part)
    return np.concatenate(out)[:, labels.HEAD_SLICE]


def test_any_chunking_gives_the_same_motion():
    levels = speech_levels(20)
    whole = run(levels, levels.size)
    assert np.allclose(run(levels, 1), whole, atol=1e-5) and np.allclose(run(levels, 7), whole, atol=1e-5)
    assert not np.allclose(run(levels, 7, seed=1), whole, atol=0.1)


def test_five_minutes_move_in_most_windows_and_do_not_drift():
    levels = speech_levels(300, seed=3)
    head = run(levels, 10)
    windows = head[: head.shape[0] // 150 * 150].reshape(-1, 150, 3).std(axis=1)    # 5 s windows
    moving = (windows >= 0.8).mean(axis=0)
    assert moving[0] >= 0.8 and moving[1] >= 0.8                                    # pitch, yaw
    assert np.all(np.abs(head.mean(axis=0)) < 1.0)
    assert np.all(np.abs(head[-60 * FPS:].mean(axis=0) - head[:60 * FPS].mean(axis=0)) < 1.0)


def test_a_long_pause_brings_the_head_to_rest_and_speech_wakes_it():
    levels = np.concatenate([speech_levels(8), np.full(10 * FPS, -75.0), speech_levels(8, seed=2)])
    head = run(levels, 5)
    talking, resting = head[4 * FPS:8 * FPS], head[14 * FPS:18 * FPS]
    assert np.abs(resting).max() < 1.5                         # the phrase pose eased back to straight ahead
    assert resting.std(axis=0).sum() < 0.6 * talking.std(axis=0).sum()
    assert head[20 * FPS:26 * FPS].std(axis=0)[0] > resting.std(axis=0)[0]


def test_scale_zero_leaves_the_model_alone():
    levels = speech_levels(5)
    assert np.array_equal(run(levels, 10, scale=0.0), np.zeros((levels.size, 3)))
    assert np.allclose(run(levels, 10, scale=2.0), 2 * run(levels, 10), atol=1e-4)
