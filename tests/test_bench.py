"""`talkmotion bench` pieces on a tiny model: the figures are consistent with each other."""

import numpy as np
import pytest
import torch

from talkmotion import bench


def test_stream_timing_figures_agree(tiny_model):
    pcm = bench.speech(2.0)
    figures = bench.stream_timing(tiny_model, pcm, repeats=2)
    assert figures["rtf"] == pytest.approx(1000 / figures["ms_per_audio_s"])
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    # The whole stream's compute is at least what the median chunk costs times the chunk count.
    chunks = pcm.size // bench.CHUNK
    assert figures["ms_per_audio_s"] * 2.0 >= 0.5 * figures["p50_ms"] * chunks


def test_parallel_scheduled_sampling_beats_the_frame_loop(tiny_model):
    torch.manual_seed(0)
    figures = bench.train_step_ratio(tiny_model, batch_size=2, seconds=1.5)
    # 45 dependent decoder steps against two parallel passes: same run, a ratio, not a time.
    assert figures["ratio"] > 1.5
    # The decoder passes alone (encoder outside the clock) are timed too: the same gap, larger.
    assert figures["passes_ratio"] > 1.5
    assert np.isfinite(figures["parallel_step_s"]) and tiny_model.training is False
