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


def test_parallel_scheduled_sampling_beats_the_frame_loop(tiny_model):
    torch.manual_seed(0)
    figures = bench.train_step_ratio(tiny_model, batch_size=2, seconds=1.5)
    # 45 dependent decoder steps against two parallel passes: same run, a ratio, not a time.
    assert figures["ratio"] > 1.5
    # The decoder passes alone (encoder outside the clock) are timed too: the same gap, larger.
    assert figures["passes_ratio"] > 1.5
    assert np.isfinite(figures["parallel_step_s"]) and tiny_model.training is False


def test_the_end_to_end_figure_runs_the_animate_command(tiny_model, tmp_path):
    """What users get is measured by running what they run: the command, in fresh processes."""
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    figures = bench.animate_end_to_end(str(checkpoint), long_s=6.0, short_s=2.0, repeats=1)
    assert figures["wall_6s"] > 0 and figures["wall_2s"] > 0 and figures["startup_1s_wall_s"] > 0
    assert figures["marginal_rtf"] == pytest.approx(4.0 / (figures["wall_6s"] - figures["wall_2s"]))
    assert np.isfinite(figures["marginal_rtf_cpu"]) and figures["startup_1s_cpu_s"] > 0
    assert "talkmotion animate IN -o OUT.json" in figures["command"] and "--model" in figures["command"]
