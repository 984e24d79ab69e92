"""`talkmotion bench` pieces on a tiny model: the figures are consistent with each other."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from talkmotion import bench
from talkmotion.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


def test_stream_timing_times_every_push_and_keeps_the_fastest_run(tiny_runtime, monkeypatch):
    # A clock that says how long each push took: 4 ms each in the first run; in the
    # second, 10 ms for the first push and 1 ms for the others. The second is faster.
    pcm = bench.speech(2.0)
    pushes = pcm.size // bench.CHUNK
    durations = [0.004] * pushes + [0.010] + [0.001] * (pushes - 1)
    ticks = iter([0.0] + [d for duration in durations for d in (duration, 0.0)])
    now = [0.0]

    def clock() -> float:
        now[0] += next(ticks)
        return now[0]

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock))
    figures = bench.stream_timing(tiny_runtime, pcm, repeats=2)
    second = np.array(durations[pushes:])
    assert figures["ms_per_audio_s"] == pytest.approx(1000 * second.sum() / 2.0)
    assert figures["rtf"] == pytest.approx(2.0 / second.sum())
    assert figures["p50_ms"] == pytest.approx(1.0)
    assert figures["p99_ms"] == pytest.approx(1000 * np.percentile(second, 99))


def test_the_seeds_recompute_loop_costs_more_than_the_cached_stream(tiny_model, tiny_runtime):
    # Re-encoding a 3 s buffer every 0.5 s and re-decoding every frame against one cached
    # pass over the same audio: same run, a ratio, not a time.
    pcm = bench.speech(6.0)
    recompute = bench.recompute_baseline(tiny_model, pcm)
    cached = bench.stream_timing(tiny_runtime, pcm)["rtf"]
    assert cached > 1.5 * recompute


def test_a_training_step_is_timed_with_gradients_and_leaves_the_model_in_eval(tiny_model):
    for p in tiny_model.parameters():
        p.grad = None
    seconds = bench.train_step_seconds(tiny_model, batch_size=2, seconds=1.5, repeats=1)
    assert np.isfinite(seconds) and seconds > 0 and tiny_model.training is False
    assert tiny_model.decoder.inp.weight.grad is not None and tiny_model.encoder.inp.weight.grad is not None


def test_the_end_to_end_figure_runs_the_animate_command(tiny_model, tmp_path):
    """What users get is measured by running what they run: the command, in fresh processes."""
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    figures = bench.animate_end_to_end(str(checkpoint), long_s=6.0, short_s=2.0, repeats=1)
    assert figures["wall_6s"] > 0 and figures["wall_2s"] > 0 and figures["startup_1s_wall_s"] > 0
    assert figures["marginal_rtf"] == pytest.approx(4.0 / (figures["wall_6s"] - figures["wall_2s"]))
    assert np.isfinite(figures["marginal_rtf_cpu"]) and figures["startup_1s_cpu_s"] > 0
    assert "talkmotion animate IN -o OUT.json" in figures["command"] and "--model" in figures["command"]
