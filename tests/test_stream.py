"""Streaming: cached == uncached, any chunking gives the same frames, bounded latency and state."""

import numpy as np
import pytest
import torch

from talkmotion import encoders, labels
from talkmotion.audio import AudioError, num_frames
from talkmotion.model import ModelDims
from talkmotion.postprocess import PostOptions
from talkmotion.runtime import make_runtime
from talkmotion.runtime.torch_runtime import TorchRuntime
from talkmotion.stream import Animator

RAW = PostOptions(blinks="off", gaze="off", head_motion=0.0)
MODEL_ONLY = PostOptions(blinks="off", gaze="off", head_motion=0.0, jaw_gate_db=0)   # the model's own frames


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


def offline_features(model, pcm, frames):
    """Audio features of `pcm` padded for `frames` frames, computed as training does."""
    need = model.timing.samples_for_frame(frames - 1)
    padded = np.concatenate([pcm, np.zeros(need - pcm.size, np.float32)])[None]
    return model.features({"pcm": torch.from_numpy(padded), **encoders.batch_inputs(model.dims.encoder, padded)})


def test_the_stream_equals_the_whole_sequence_forward_of_training(tiny_runtime, tiny_model):
    """Streamed in chunks (the runtime's encode and decode steps) = `forward`, which training and
    validation run: one decode path. For a batch, each stream stays its own."""
    pcm = noise(1.5)
    frames = run_chunks(Animator(tiny_runtime, MODEL_ONLY), pcm, 3200)
    t = num_frames(pcm.size)
    with torch.no_grad():
        memory = offline_features(tiny_model, pcm, t)
        batch = tiny_model(torch.cat([memory, memory.flip(1)]), t)       # a second, different stream
    assert frames.shape == (t, tiny_model.dims.n_channels)
    np.testing.assert_allclose(batch[0].numpy(), frames, atol=1e-4)
    assert np.abs(batch[1].numpy() - frames).max() > 1e-3


@pytest.mark.parametrize("k", [1, 4, 7, 40])
def test_the_step_takes_k_frames_per_call(tiny_model, k):
    """k frames per `step`, each hearing only the features its own look-ahead allows, equals
    the whole-sequence forward, whatever k."""
    pcm = noise(1.2, seed=4)
    t = num_frames(pcm.size)
    with torch.no_grad():
        memory = offline_features(tiny_model, pcm, t)
        expected = tiny_model(memory, t)
        kv, q = tiny_model.decoder.encode_features(memory)
        state, start, parts = tiny_model.initial_decode_state(1), 0, []
        for first in range(0, t, k):
            added = tiny_model.timing.features_added(first, min(k, t - first))
            hidden = torch.as_tensor(tiny_model.timing.features_hidden(added))
            end = start + int(added.sum())
            out, *state = tiny_model.step(kv[:, :, :, start:end], q[:, start:end], hidden, *state)
            parts.append(out)
            start = end
    np.testing.assert_allclose(torch.cat(parts, 1).numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)  # degrees too


def test_the_one_frame_step_of_live_pushes_equals_the_step(tiny_model):
    """step_frame (constant shapes, live streaming's fast path) = step with k = 1, frame after
    frame, past the point where both windows are full; the states too."""
    torch.manual_seed(3)
    with torch.no_grad():
        for table in (tiny_model.decoder.self_pos, tiny_model.decoder.cross_pos):
            table.normal_()               # biases that differ by position: a reversed table would show
        t = 60
        added = tiny_model.timing.features_added(0, t)
        assert set(added[1:].tolist()) == {1, 2}
        memory = torch.randn(1, int(added.sum()), tiny_model.dims.d_model)
        kv, q = tiny_model.decoder.encode_features(memory)
        general = one = tiny_model.initial_decode_state(1)
        start = 0
        for first in range(t):
            end = start + int(added[first])
            new = kv[:, :, :, start:end], q[:, start:end]
            out, *general = tiny_model.step(*new, torch.zeros(1, dtype=torch.int64), *general)
            fast, *one = tiny_model.step_frame(*new, *one[:4])
            np.testing.assert_allclose(fast.numpy(), out.numpy(), rtol=1e-5, atol=1e-5)
            for a, b in zip(one, general):
                np.testing.assert_allclose(a.float().numpy(), b.float().numpy(), rtol=1e-5, atol=1e-6)
            start = end


def test_a_frame_never_hears_audio_past_its_look_ahead(tiny_model):
    """Changing audio after frame i's look-ahead changes nothing up to frame i."""
    pcm = noise(1.5, seed=5)
    t = num_frames(pcm.size)
    cut = tiny_model.timing.frame_need(20)
    later = pcm.copy()
    later[cut:] = noise(1.5, seed=6)[cut:]
    with torch.no_grad():
        a = tiny_model(offline_features(tiny_model, pcm, t), t)
        b = tiny_model(offline_features(tiny_model, later, t), t)
    np.testing.assert_allclose(a[0, :21].numpy(), b[0, :21].numpy(), atol=1e-6)
    assert (a[0, 21:] - b[0, 21:]).abs().max() > 1e-4


@pytest.mark.parametrize("size", [1, 7, 320, 16000])
def test_chunking_invariance(tiny_runtime, size):
    pcm = bursts(0.7 if size == 1 else 2.0)
    reference = run_chunks(Animator(tiny_runtime, RAW), pcm, pcm.size)
    np.testing.assert_allclose(run_chunks(Animator(tiny_runtime, RAW), pcm, size), reference, atol=1e-4)


def test_the_jaw_gate_follows_the_frames_own_audio(tiny_runtime):
    pcm = bursts(2.4)
    jaw = labels.index("jawOpen")
    gated = run_chunks(Animator(tiny_runtime, RAW), pcm, 320)[:, jaw]
    free = run_chunks(Animator(tiny_runtime, MODEL_ONLY), pcm, 320)[:, jaw]
    own = [pcm[round(i * 16000 / 30):round((i + 1) * 16000 / 30)] for i in range(len(gated))]
    silent = np.array([np.abs(x).max() == 0 for x in own])
    voiced = np.array([x.size > 0 and np.all(x != 0) for x in own])   # frames wholly inside a burst
    assert silent.sum() > 20 and free[silent].max() > 0                  # the raw model opens in the pauses
    assert np.all(gated[silent] == 0)                                    # the gate shuts it there
    np.testing.assert_allclose(gated[voiced], free[voiced], atol=1e-6)   # and leaves the voice alone


def test_frames_arrive_within_stated_latency(tiny_runtime, tiny_model):
    animator = Animator(tiny_runtime, RAW)
    d = tiny_model.dims
    pcm, pushed, arrival = noise(1.0), 0, {}
    for k in range(0, pcm.size, 160):
        frames = animator.push(pcm[k:k + 160])
        pushed += 160
        for i in range(frames.start, frames.start + len(frames)):
            arrival[i] = pushed
    for i, samples in arrival.items():
        frame_end = round((i + 1) * 16000 / d.fps)
        assert samples - frame_end <= tiny_model.timing.lookahead_samples + 160      # one push of slack
    assert animator.latency_ms == pytest.approx(d.lookahead_ms + 1000 / d.fps)


def test_default_dims_latency_under_100ms():
    from talkmotion.model import stream_timing

    assert stream_timing(ModelDims()).latency_ms <= 100


def test_state_stays_bounded_on_long_streams(tiny_runtime):
    animator = Animator(tiny_runtime, RAW)
    block = noise(1.0)
    sizes = []
    for _ in range(20):
        animator.push(block)
        sizes.append((tuple(tuple(s.shape) for s in animator.state), animator.source.pending.shape[0]))
    assert len({s for s, _ in sizes}) == 1          # runtime state has a fixed shape
    assert max(p for _, p in sizes) <= 2 * 3        # mel backlog: at most one frame's features


def test_reset_restarts_identically(tiny_runtime):
    animator = Animator(tiny_runtime, RAW)
    first = run_chunks(animator, noise(1.0), 4000)
    animator.push(noise(0.5, seed=3))
    animator.reset()
    np.testing.assert_array_equal(run_chunks(animator, noise(1.0), 4000), first)


def test_nan_samples_are_rejected(tiny_runtime):
    pcm = noise(0.2)
    pcm[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        Animator(tiny_runtime).push(pcm)


def test_empty_stream_flushes_nothing(tiny_runtime):
    assert len(Animator(tiny_runtime).flush()) == 0


def test_blendshapes_in_range_and_head_bounded(tiny_runtime):
    frames = Animator(tiny_runtime, RAW)
    out = run_chunks(frames, noise(1.0) * 5, 800)
    assert out[:, :52].min() >= 0 and out[:, :52].max() <= 1
    assert np.abs(out[:, 52:]).max() <= 45


def test_live_pushes_run_the_one_frame_step(tiny_model):
    """20 ms pushes make steps of one frame, which the runtime runs as its FrameStep; a push of
    a second runs the two steps. Both give the frames of the whole-file run."""
    runtime = TorchRuntime(tiny_model)
    pcm = bursts(1.5, seed=2)
    whole = run_chunks(Animator(runtime, RAW), pcm, pcm.size)
    assert not isinstance(runtime.frame, torch.jit.ScriptModule)      # traced only when a stream needs it
    runtime.frame_step()
    assert isinstance(runtime.frame, torch.jit.ScriptModule)
    calls = {"frame": 0, "decode": 0}

    def counting(name, step):
        def run(*args):
            calls[name] += 1
            return step(*args)
        return run
    runtime.frame, runtime.decode = counting("frame", runtime.frame), counting("decode", runtime.decode)
    live = run_chunks(Animator(runtime, RAW), pcm, 320)
    assert calls["frame"] >= len(live) - 2 and calls["decode"] <= 2   # the first frame and the flush
    calls.update(frame=0, decode=0)
    assert np.array_equal(run_chunks(Animator(runtime, RAW), pcm, pcm.size), whole)
    assert calls["frame"] == 0 and calls["decode"] == 2
    np.testing.assert_allclose(live, whole, atol=1e-4)


def test_traced_runtime_equals_eager(tiny_model):
    pcm = noise(1.5, seed=5)
    traced = run_chunks(Animator(TorchRuntime(tiny_model), RAW), pcm, 1111)
    eager = run_chunks(Animator(TorchRuntime(tiny_model, traced=False), RAW), pcm, 1111)
    np.testing.assert_allclose(traced, eager, atol=1e-5)


@pytest.mark.parametrize("fps", [24, 60])
def test_other_frame_rates_stream_as_they_run_offline(fps):
    """At 60 fps some frames bring no new audio feature; at 24 fps some bring three."""
    from talkmotion.config import from_dict

    from conftest import TINY

    torch.manual_seed(1)
    from talkmotion.model import TalkModel

    model = TalkModel(from_dict(ModelDims, {**TINY, "fps": fps})).eval()
    pcm = noise(1.0, seed=6)
    whole = run_chunks(Animator(make_runtime(model), MODEL_ONLY), pcm, pcm.size)
    assert len(whole) == num_frames(pcm.size, fps)
    # A bookkeeping slip would move frames by tenths; chunking itself moves the mel's last bits (BLAS
    # kernels differ by row count), which this random model's fed-back head grows to ~5e-4 in a second.
    np.testing.assert_allclose(run_chunks(Animator(make_runtime(model), MODEL_ONLY), pcm, 333), whole,
                               rtol=2e-3, atol=2e-3)
