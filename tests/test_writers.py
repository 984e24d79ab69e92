"""The text writers format whole blocks at once: byte for byte what value-by-value Python formatting wrote.

The references below are the writers as they were (one Python call per value);
the frames hold the awkward numbers: exact ties, negative zeros, values that
round to zero, tiny ones repr writes with an exponent, large head angles.
Every writer refuses frames holding NaN or infinity, naming the output.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.frames import Frames, NonFiniteFramesError
from talkmotion.sinks import csv_file, file_sink, json_file, livelink_csv, numtext
from talkmotion.sinks.livelink_udp import head_to_live_link

AWKWARD = [0.0, -0.0, 1 / 64, -1 / 64, 1 / 128, 2.675, 1e-5, 9e-5, 1.5e-5, 3e-6, -3e-6, 5e-6, 0.999995, 1.0,
           12.5, -179.99999, 0.5, 1e-4, 0.00012, 99.99999, 0.1, 0.2, 0.3]


def awkward_frames(count: int, start: int = 0, seed: int = 0) -> Frames:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-0.2, 1.2, (count, labels.NUM_CHANNELS))
    values[:, labels.HEAD_SLICE] = rng.uniform(-180, 180, (count, len(labels.HEAD)))
    picks = rng.random(values.shape) < 0.3
    values[picks] = rng.choice(AWKWARD, int(picks.sum()))
    values[rng.random(values.shape) < 0.05] = rng.integers(0, 1 << 20, 1) / (1 << 20)   # dyadic: exact ties
    return Frames(values.astype(np.float32), fps=30, start=start, model="ünïcode model", latency_ms=93.3333)


def reference_json(frames: Frames) -> str:
    head = json.dumps(frames.header_json())[:-1]
    rows = ",\n".join(json.dumps([round(float(v), 5) for v in row]) for row in frames.values)
    return f'{head}, "frames": [\n{rows}\n]}}\n'


def reference_csv(frames: Frames) -> str:
    lines = [",".join(["time", *labels.CHANNELS])]
    lines += [",".join([f"{t:.4f}", *(f"{v:.5f}" for v in row)]) for t, row in zip(frames.times, frames.values)]
    return "\n".join(lines) + "\n"


def reference_timecode(frame: int, fps: float) -> str:
    import math

    seconds = frame / fps
    whole = int(math.floor(seconds + 1e-9))
    in_second = (seconds - whole) * fps
    ff = int(math.floor(in_second + 1e-6))
    sub = max(0.0, in_second - ff)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(round(sub * 1000)) % 1000:03d}"


def reference_livelink(frames: Frames) -> str:
    blend = np.clip(frames.blendshapes, 0.0, 1.0)
    cols = labels.indices(livelink_csv.CSV_SHAPE_ORDER)
    head = head_to_live_link(frames.values[:, labels.indices(livelink_csv.HEAD_COLUMNS.values())])
    lines = [",".join(livelink_csv.COLUMNS)]
    for i in range(len(frames)):
        lines.append(",".join([reference_timecode(frames.start + i, frames.fps), "61",
                               *(f"{v:.6f}" for v in blend[i, cols]), *(f"{v:.6f}" for v in head[i]),
                               *["0.000000"] * len(livelink_csv.EYE_COLUMNS)]))
    return "\n".join(lines) + "\n"


def written(tmp_path, name: str, frames: Frames) -> str:
    sink = file_sink(tmp_path / name)
    sink.open(frames.fps, frames.model, frames.latency_ms)
    for k in range(0, len(frames), 7):                    # in pieces, as a stream delivers them
        sink.write(Frames(frames.values[k:k + 7], fps=frames.fps, start=frames.start + k))
    sink.close(len(frames) / frames.fps)
    return (tmp_path / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("count", [0, 1, 250])
def test_text_writers_write_what_value_by_value_formatting_wrote(tmp_path, monkeypatch, count):
    for module in (json_file, csv_file, livelink_csv):
        monkeypatch.setattr(module, "ROWS_PER_BLOCK", 64)    # several blocks, one of them short
    frames = awkward_frames(count)
    whole = Frames(frames.values, fps=30, model=frames.model, latency_ms=frames.latency_ms,
                   duration=count / 30)
    assert written(tmp_path, "a.json", frames) == reference_json(whole)
    assert written(tmp_path, "a.csv", frames) == reference_csv(whole)
    assert written(tmp_path, "a.livelink.csv", frames) == reference_livelink(whole)


def test_frames_json_object_holds_pythons_rounded_numbers():
    frames = awkward_frames(300, seed=3)
    assert frames.to_json()["frames"] == [[round(float(v), 5) for v in row] for row in frames.values]


@pytest.mark.parametrize("decimals", [4, 5, 6])
def test_numbers_as_python_formats_them_float32_and_float64(decimals):
    rng = np.random.default_rng(decimals)
    picks = np.concatenate([rng.uniform(-200, 200, 20_000), rng.normal(0, 1e-4, 20_000), AWKWARD,
                            rng.integers(-4000, 4000, 5000) / 2.0 ** rng.integers(0, 24, 5000)])
    for values in (picks.astype(np.float32), picks / 180.0, np.arange(5000) / 30.0):
        text = [row[row != numtext.PAD].tobytes().decode() for row in numtext.fixed(values, decimals)]
        assert text == [f"{v:.{decimals}f}" for v in values.tolist()]
        text = [row[row != numtext.PAD].tobytes().decode() for row in numtext.rounded_repr(values, decimals)]
        assert text == [repr(round(v, decimals)) for v in values.tolist()]


def test_timecodes_past_an_hour_and_at_every_frame_rate():
    for fps in (24, 25, 30, 60):
        frames = np.concatenate([np.arange(200), fps * 3600 * np.arange(1, 4) + 7, [fps * 360_000 + 1]])
        codes = [row[row != numtext.PAD].tobytes().decode() for row in livelink_csv.timecodes(frames, fps)]
        assert codes == [reference_timecode(int(f), fps) for f in frames]


@pytest.mark.parametrize("name", ["x.json", "x.csv", "x.livelink.csv", "x.vrma", "x.glb"])
def test_every_file_writer_refuses_non_finite_frames_and_writes_nothing(tmp_path, name):
    sink = file_sink(tmp_path / name)
    sink.open(30)
    sink.write(Frames(np.zeros((3, labels.NUM_CHANNELS), np.float32), fps=30))
    bad = np.zeros((2, labels.NUM_CHANNELS), np.float32)
    bad[1, labels.index("jawOpen")] = np.nan
    with pytest.raises(NonFiniteFramesError, match=rf"{name}: frame 4 has jawOpen = nan; non-finite"):
        sink.write(Frames(bad, fps=30, start=3))
    sink.abort()
    assert not list(tmp_path.iterdir())


def test_live_writers_and_the_json_object_refuse_non_finite_frames():
    from talkmotion.sinks.livelink_udp import LiveLinkUdpSink
    from talkmotion.sinks.vmc import VmcSink
    from talkmotion.sinks.websocket import frames_message

    bad = np.zeros((1, labels.NUM_CHANNELS), np.float32)
    bad[0, labels.index("yaw")] = np.inf
    frames = Frames(bad, fps=30, start=12)
    for sink in (VmcSink("127.0.0.1:1"), LiveLinkUdpSink("127.0.0.1:1")):
        sink.open(30)
        try:
            with pytest.raises(NonFiniteFramesError, match="frame 12 has yaw = inf"):
                sink.write(frames)
        finally:
            sink.close()
    with pytest.raises(NonFiniteFramesError, match="WebSocket frames message: frame 12 has yaw = inf"):
        frames_message(frames)
    with pytest.raises(NonFiniteFramesError, match="stdout: frame 12 has yaw = inf"):
        frames.to_json("stdout")


def test_csv_files_read_back_as_numbers(tmp_path):
    frames = awkward_frames(40, seed=5)
    rows = list(csv.reader(written(tmp_path, "b.csv", frames).splitlines()))
    np.testing.assert_allclose(np.array(rows[1:], float)[:, 1:], frames.values, atol=5e-6)
