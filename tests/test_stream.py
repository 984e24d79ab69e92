"""Streaming: cached == uncached, any chunking gives the same frames, bounded latency and state."""

import numpy as np
import pytest
import torch

from talkmotion import labels
from talkmotion.audio import AudioError, log_mel, num_frames
from talkmotion.model import ModelDims, shift_previous
from talkmotion.postprocess import PostOptions
from talkmotion.stream import Animator

RAW = PostOptions(blinks="off", gaze="off", head_motion=0.0)


def noise(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def bursts(seconds, seed=0):
    """Noise in 0.3 s bursts with 0.3 s of silence between: the jaw gate has work to do."""
    pcm = noise(seconds, seed)
    pcm[(np.arange(pcm.size) // 4800) % 2 == 1] = 0.0
    return pcm


def run_chunks(animator, pcm, size):
    parts = [animator.push(pcm[i:i + size]).values for i in range(0, pcm.size, size)]
    return np.concatenate(parts + [animator.flush().values])


def test_cached_stream_equals_uncached_forward(tiny_model):
    pcm = noise(1.5)
    frames = run_chunks(Animator(tiny_model, RAW), pcm, 3200)
    d = tiny_model.dims
    t = num_frames(pcm.size)
    padded = np.concatenate([pcm, np.zeros(d.frame_need(t - 1) - pcm.size, np.float32)])
    with torch.no_grad():
        memory = tiny_model.audio_features(torch.from_numpy(padded)[None], torch.from_numpy(log_mel(padded))[None])
        full = tiny_model(shift_previous(torch.from_numpy(frames)[None]), memory)[0].numpy()
    assert frames.shape == (t, d.n_channels)
    np.testing.assert_allclose(full, frames, atol=1e-4)


@pytest.mark.parametrize("size", [1, 7, 320, 16000])
def test_chunking_invariance(tiny_model, size):
    pcm = bursts(0.7 if size == 1 else 2.0)
    reference = run_chunks(Animator(tiny_model, RAW), pcm, pcm.size)
    np.testing.assert_allclose(run_chunks(Animator(tiny_model, RAW), pcm, size), reference, atol=1e-4)


def test_the_jaw_gate_follows_the_frames_own_audio(tiny_model):
    pcm = bursts(2.4)
    jaw = labels.index("jawOpen")
    gated = run_chunks(Animator(tiny_model, RAW), pcm, 320)[:, jaw]
    free = run_chunks(Animator(tiny_model, PostOptions(blinks="off", gaze="off", jaw_gate_db=0)), pcm, 320)[:, jaw]
    own = [pcm[round(i * 16000 / 30):round((i + 1) * 16000 / 30)] for i in range(len(gated))]
    silent = np.array([np.abs(x).max() == 0 for x in own])
    voiced = np.array([x.size > 0 and np.all(x != 0) for x in own])   # frames wholly inside a burst
    assert silent.sum() > 20 and free[silent].max() > 0                  # the raw model opens in the pauses
    assert np.all(gated[silent] == 0)                                    # the gate shuts it there
    np.testing.assert_allclose(gated[voiced], free[voiced], atol=1e-6)   # and leaves the voice alone


def test_frames_arrive_within_stated_latency(tiny_model):
    animator = Animator(tiny_model, RAW)
    d = tiny_model.dims
    pcm, pushed, arrival = noise(1.0), 0, {}
    for k in range(0, pcm.size, 160):
        frames = animator.push(pcm[k:k + 160])
        pushed += 160
        for i in range(frames.start, frames.start + len(frames)):
            arrival[i] = pushed
    for i, samples in arrival.items():
        frame_end = round((i + 1) * 16000 / d.fps)
        assert samples - frame_end <= d.lookahead_samples + 160      # one push of slack
    assert animator.latency_ms == pytest.approx(d.lookahead_ms + 1000 / d.fps)


def test_default_dims_latency_under_100ms():
    assert ModelDims().latency_ms <= 100


def test_state_stays_bounded_on_long_streams(tiny_model):
    animator = Animator(tiny_model, RAW)
    block = noise(1.0)
    sizes = []
    for _ in range(20):
        animator.push(block)
        sizes.append((tuple(tuple(s.shape) for s in animator.state), animator.audio.pending.shape[0]))
    assert len({s for s, _ in sizes}) == 1          # runtime state has a fixed shape
    assert max(p for _, p in sizes) <= 2 * 3        # mel backlog: at most one frame's features


def test_reset_restarts_identically(tiny_model):
    animator = Animator(tiny_model, RAW)
    first = run_chunks(animator, noise(1.0), 4000)
    animator.push(noise(0.5, seed=3))
    animator.reset()
    np.testing.assert_array_equal(run_chunks(animator, noise(1.0), 4000), first)


def test_nan_samples_are_rejected(tiny_model):
    pcm = noise(0.2)
    pcm[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        Animator(tiny_model).push(pcm)


def test_empty_stream_flushes_nothing(tiny_model):
    assert len(Animator(tiny_model).flush()) == 0


def test_blendshapes_in_range_and_head_bounded(tiny_model):
    frames = Animator(tiny_model, RAW)
    out = run_chunks(frames, noise(1.0) * 5, 800)
    assert out[:, :52].min() >= 0 and out[:, :52].max() <= 1
    assert np.abs(out[:, 52:]).max() <= 45


def test_traced_runtime_equals_eager(tiny_model):
    from talkmotion.stream import TorchRuntime

    pcm = noise(1.5, seed=5)
    traced = run_chunks(Animator(tiny_model, RAW, runtime=TorchRuntime(tiny_model)), pcm, 1111)
    eager = run_chunks(Animator(tiny_model, RAW, runtime=TorchRuntime(tiny_model, traced=False)), pcm, 1111)
    np.testing.assert_allclose(traced, eager, atol=1e-5)
