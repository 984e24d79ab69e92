"""Timing: what the encoder kinds declare is what their networks do, and the stream's arithmetic
agrees with counting frame by frame."""

import numpy as np
import pytest
import torch

from talkmotion import encoders
from talkmotion.model import ModelDims, stream_timing
from talkmotion.timing import SUPPORTED_FPS, FeatureTiming, StreamTiming, frame_to_sample


@pytest.mark.parametrize("samples", [559, 560, 879, 880, 16000, 16001, 48321])
def test_the_mel_kind_makes_the_features_its_timing_declares(tiny_model, samples):
    """Feature j exists exactly when need(j) samples have arrived: count(N) equals what the
    network makes from N samples, offline and streaming."""
    timing = tiny_model.timing.features
    audio = np.zeros(samples, np.float32)[None]
    with torch.no_grad():
        offline = tiny_model.features({"pcm": torch.from_numpy(audio), **encoders.batch_inputs(tiny_model.dims.encoder, audio)})
    source = tiny_model.encoder.make_source()
    source.push(audio[0])
    assert offline.shape[1] == timing.count(samples) == source.available()


@pytest.mark.parametrize("click", [4000, 4321, 4500, 7777])
def test_the_first_feature_to_hear_a_click_is_the_one_timing_says(tiny_model, click):
    """need(j) is when feature j's audio is complete: a click at sample c first moves the
    first feature whose need lies beyond c, and the span it reads covers the click."""
    timing = tiny_model.timing.features
    audio = np.zeros((2, 12000), np.float32)
    audio[1, click] = 0.5
    with torch.no_grad():
        feats = tiny_model.features({"pcm": torch.from_numpy(audio), **encoders.batch_inputs(tiny_model.dims.encoder, audio)})
    first_moved = int(np.flatnonzero((feats[0] - feats[1]).abs().amax(-1).numpy() > 1e-6)[0])
    expected = next(j for j in range(100) if timing.need(j) > click)
    assert first_moved == expected
    assert timing.need(expected) - timing.span <= click <= timing.centre(expected) + timing.span // 2


@pytest.mark.parametrize("fps", SUPPORTED_FPS)
@pytest.mark.parametrize("lookahead_ms", [0.0, 60.0, 137.5])
def test_stream_arithmetic_agrees_with_counting(fps, lookahead_ms):
    timing = StreamTiming(FeatureTiming(hop=320, first_need=560, span=880), fps, lookahead_ms)
    for samples in range(0, 40000, 997):
        due = sum(1 for i in range(200) if timing.frame_need(i) <= samples)
        assert timing.frames_ready(samples) == due
    added = timing.features_added(0, 150)
    assert added.sum() == timing.last_feature(149) + 1 and (added >= 0).all()
    np.testing.assert_array_equal(timing.features_added(37, 50), added[37:87])
    np.testing.assert_array_equal([timing.features_added(i, 1)[0] for i in range(150)], added)   # live steps
    np.testing.assert_array_equal(timing.frame_need(np.arange(20)),
                                  [frame_to_sample(i + 1, fps) + timing.lookahead_samples for i in range(20)])


def test_blocks_make_frames_wait_for_the_whole_block():
    timing = StreamTiming(FeatureTiming(hop=320, first_need=400, span=400, block=5), 30, 60.0)
    for i in range(60):
        last = timing.last_feature(i)
        assert timing.samples_for_frame(i) >= timing.features.need((last // 5 + 1) * 5 - 1)
        assert timing.samples_for_frame(i) >= timing.frame_need(i)


def test_the_default_dims_timing_round_trips_through_an_exported_header():
    timing = stream_timing(ModelDims())
    assert StreamTiming.from_json(timing.to_json()) == timing
