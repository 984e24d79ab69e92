"""Per-frame work outside the model, computed a block at a time: the same numbers as frame-by-frame loops.

The references are the loops the code used to run (kept here as plain
definitions of what each step means); the fast versions must match them within
float rounding, for any chunking, across chunk boundaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from talkmotion import labels, postprocess
from talkmotion.audio import SILENT_POWER, MelStream, frame_levels_db, frame_to_sample, load_audio, log_mel
from talkmotion.postprocess import PostOptions, PostProcessor

JAW = labels.index("jawOpen")
SAMPLE = "talkmotion/assets/samples/speech.wav"


def reference_levels(audio, count, fps, first):
    origin = frame_to_sample(first, fps)
    out = np.empty(count)
    for k in range(count):
        own = np.asarray(audio[frame_to_sample(first + k, fps) - origin:frame_to_sample(first + k + 1, fps) - origin],
                         np.float64)
        power = float(np.dot(own, own)) / own.size if own.size else 0.0
        out[k] = 10 * math.log10(power + SILENT_POWER)
    return out


def reference_jaw_gate(values, levels_db, fps, opt, peak):
    sink = postprocess.GATE_PEAK_DECAY_DB_S / fps
    for t, level in enumerate(levels_db):
        peak = max(float(level), peak - sink)
        free = (level - (peak - opt.jaw_gate_db)) / max(opt.jaw_gate_width_db, 1e-6)
        values[t, JAW] *= min(max(free, 0.0), 1.0)
    return values, peak


def reference_smooth(values, fps, opt, last):
    a = float(np.exp(-1000.0 / (opt.smoothing_ms * fps)))
    last = values[0] if last is None else last
    out = np.empty_like(values)
    for t in range(len(values)):
        last = a * last + (1 - a) * values[t]
        out[t] = last
    return out, last


def chunks(total: int, seed: int):
    """Chunk sizes 1..40 covering `total`, drawn at random."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < total:
        size = int(rng.integers(1, 41))
        yield start, min(size, total - start)
        start += size


def test_frame_levels_match_a_frame_by_frame_loop_for_any_chunking():
    pcm = load_audio(SAMPLE)[:3 * 16000]
    for fps in (24, 25, 30, 60):
        total = len(pcm) * fps // 16000 + 2                # the last frames lie past the audio: silence
        whole = frame_levels_db(pcm, total, fps, 0)
        np.testing.assert_allclose(whole, reference_levels(pcm, total, fps, 0), rtol=0, atol=1e-9)
        for first, count in chunks(total, fps):
            part = pcm[frame_to_sample(first, fps):]
            np.testing.assert_allclose(frame_levels_db(part, count, fps, first), whole[first:first + count],
                                       rtol=0, atol=1e-9)
    assert frame_levels_db(pcm, 0, 30, 5).shape == (0,)


@pytest.mark.parametrize("gate_db, width_db", [(30.0, 15.0), (12.0, 0.5), (60.0, 30.0)])
def test_jaw_gate_matches_the_frame_loop_across_chunks(gate_db, width_db):
    rng = np.random.default_rng(int(gate_db))
    levels_db = np.concatenate([rng.uniform(-90, -10, 300), np.full(60, -100.0), rng.uniform(-40, -5, 200)])
    values = rng.uniform(0, 1, (len(levels_db), labels.NUM_CHANNELS)).astype(np.float32)
    opt = PostOptions(jaw_gate_db=gate_db, jaw_gate_width_db=width_db)
    want, peak = reference_jaw_gate(values.copy(), levels_db, 30, opt, postprocess.GATE_FIRST_PEAK_DB)
    got, state = values.copy(), None
    for start, count in chunks(len(values), 7):
        got[start:start + count], state = postprocess.jaw_gate(got[start:start + count], levels_db[start:start + count],
                                                               30, opt, state)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert state == pytest.approx(peak, abs=1e-9)
    assert (got[:, JAW] < values[:, JAW]).any() and (got[:, JAW] == 0).any()    # it does gate


def test_smoothing_matches_the_frame_loop_across_chunks():
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, (400, labels.NUM_CHANNELS)).astype(np.float32)
    opt = PostOptions(smoothing_ms=80.0)
    want, _ = reference_smooth(values, 30, opt, None)
    got, state = [], None
    for start, count in chunks(len(values), 11):
        out, state = postprocess.smooth(values[start:start + count].copy(), start, 30, opt, state)
        got.append(out)
    np.testing.assert_allclose(np.concatenate(got), want, rtol=0, atol=1e-5)


def test_every_effect_gives_the_same_frames_whatever_the_chunking():
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 1, (900, labels.NUM_CHANNELS)).astype(np.float32)
    levels_db = rng.uniform(-80, -10, len(values))
    opt = PostOptions(blinks="on", gaze="on", smoothing_ms=40.0, seed=9)
    whole = PostProcessor(opt, set())(values, 0, 30, levels_db)
    processor = PostProcessor(opt, set())
    parts = [processor(values[s:s + n], s, 30, levels_db[s:s + n]) for s, n in chunks(len(values), 13)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-5)
    gaze = whole[:, postprocess.GAZE_CHANNELS]
    assert len({tuple(row) for row in np.round(gaze, 4)}) > 3                # saccades move the eyes


def test_a_held_gaze_moves_the_eye_channels_that_look_that_way_and_no_others():
    values = np.zeros((4, labels.NUM_CHANNELS), np.float32)
    left_and_up = np.array([0.4, 0.2], np.float32)     # x > 0: toward the avatar's left; y > 0: up
    held = np.clip(left_and_up @ postprocess.GAZE_WEIGHTS, 0, 1)
    state = (np.random.default_rng(0).bit_generator.state, 10 ** 6, left_and_up, held)   # no saccade due
    out, _ = postprocess.gaze(values, 0, 30, PostOptions(gaze="on"), state)
    moved = {labels.CHANNELS[c]: round(float(out[0, c]), 4) for c in np.flatnonzero(out[0])}
    assert moved == {"eyeLookOutLeft": 0.4, "eyeLookInRight": 0.4, "eyeLookUpLeft": 0.2, "eyeLookUpRight": 0.2}
    assert (out == out[0]).all()


def test_mel_is_the_same_for_any_push_size():
    # Within float rounding: BLAS multiplies one row (a push that completes one mel frame)
    # with another kernel than many, so the last bit may differ, as it always did.
    pcm = load_audio(SAMPLE)[:2 * 16000]
    whole = log_mel(pcm)
    for size in (1, 159, 160, 320, 401, 16000):
        stream = MelStream()
        parts = [stream.push(pcm[i:i + size]) for i in range(0, pcm.size, size)]
        np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-5)
    assert whole.dtype == np.float32 and whole.shape == ((pcm.size - 400) // 160 + 1, 80)


def test_mel_matches_a_direct_power_spectrum():
    # The windows are a strided view of the buffer; this is the plain definition, frame by frame.
    pcm = load_audio(SAMPLE)[16000:17000]
    stream = MelStream()
    spec = stream.spec
    frames = np.stack([pcm[j * spec.hop:j * spec.hop + spec.n_fft] for j in range((pcm.size - 400) // 160 + 1)])
    power = np.abs(np.fft.rfft(frames.astype(np.float64) * stream.window, axis=1)) ** 2
    want = np.log(np.maximum(power @ stream.bank.astype(np.float64), spec.floor))
    np.testing.assert_allclose(stream.push(pcm), want, rtol=0, atol=2e-4)
