"""Label spec, time convention, log-mel, frames file, config and post-processing."""

import dataclasses

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.audio import MelStream, frame_to_sample, log_mel, num_frames
from talkmotion.config import ConfigError, from_dict
from talkmotion.frames import Frames, FramesFileError
from talkmotion.postprocess import PostOptions, PostProcessor


def test_label_spec_is_arkit_52_plus_head():
    assert labels.NUM_BLENDSHAPES == 52 and len(set(labels.BLENDSHAPES)) == 52
    assert labels.CHANNELS[-3:] == ("pitch", "yaw", "roll")
    assert "tongueOut" in labels.BLENDSHAPES and "_neutral" not in labels.BLENDSHAPES
    assert labels.to_pascal("jawOpen") == "JawOpen" and labels.from_pascal("EyeBlinkLeft") == "eyeBlinkLeft"


def test_mediapipe_categories_map_by_name():
    scores = {"_neutral": 0.9, "jawOpen": 0.4, "eyeBlinkRight": 0.7}
    weights, valid = labels.from_mediapipe(scores)
    assert weights[labels.index("jawOpen")] == pytest.approx(0.4) and valid[labels.index("jawOpen")]
    assert not valid[labels.index("tongueOut")]
    with pytest.raises(KeyError):
        labels.from_mediapipe({"notAShape": 1.0})


def test_vrm_presets_follow_arkit():
    row = np.zeros(52, np.float32)
    row[labels.index("jawOpen")] = 0.8
    presets = labels.to_vrm_presets(row)
    assert presets["aa"] > 0.5 and presets["ou"] == 0
    row[:] = 0
    row[labels.index("eyeBlinkLeft")] = row[labels.index("eyeBlinkRight")] = 1.0
    presets = labels.to_vrm_presets(row)
    assert presets["blink"] == 1.0 and presets["blinkLeft"] == 0.0


def test_sample_offsets_never_drift():
    fps, sr = 30, 16000
    i = np.arange(0, 30 * 3600)           # an hour of frames
    starts = frame_to_sample(i, fps, sr)
    assert abs(int(starts[-1]) - round(i[-1] * sr / fps)) == 0
    assert num_frames(16000 * 3600, fps, sr) == 30 * 3600
    assert num_frames(16001, fps, sr) == 31


def test_log_mel_same_in_pieces():
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    stream = MelStream()
    pieces = np.concatenate([stream.push(x[i:i + 123]) for i in range(0, x.size, 123)])
    np.testing.assert_allclose(pieces, log_mel(x), atol=1e-5)
    assert log_mel(x).shape == ((16000 - 400) // 160 + 1, 80)


def test_frames_file_round_trip_by_name():
    values = np.random.default_rng(0).random((5, labels.NUM_CHANNELS)).astype(np.float32)
    obj = Frames(values, fps=30, latency_ms=93.3, model="m").to_json()
    # Reorder columns: readers must go by name, not position.
    names = obj["blendshapes"] + obj["head"]
    order = np.random.default_rng(1).permutation(len(names))
    obj["blendshapes"], obj["head"] = [names[k] for k in order], []
    obj["frames"] = [[row[k] for k in order] for row in obj["frames"]]
    back = Frames.from_json(obj)
    np.testing.assert_allclose(back.values, values, atol=1e-5)
    obj["version"] = 2
    with pytest.raises(FramesFileError, match="version"):
        Frames.from_json(obj)


def test_frames_resample_keeps_duration():
    values = np.zeros((30, labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = np.linspace(0, 1, 30)
    frames = Frames(values, fps=30, duration=1.0)
    sixty = frames.resample(60)
    assert len(sixty) == 60 and sixty.channel("jawOpen")[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not supported"):
        frames.resample(29)


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = 1.0


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_config_types_and_nesting():
    assert from_dict(Outer, {"inner": {"rate": 2}}).inner.rate == 2.0
    with pytest.raises(ConfigError, match="inner.rate: expected float"):
        from_dict(Outer, {"inner": {"rate": "fast"}})
    with pytest.raises(ConfigError, match="unknown key.*valid keys are rate"):
        from_dict(Outer, {"inner": {"rte": 1}})


def run_post(options, values, chunk):
    post = PostProcessor(options, predicted=set(labels.CHANNELS) - set(labels.EYE_BLINK) - set(labels.EYE_LOOK))
    return np.concatenate([post(values[k:k + chunk], k, 30) for k in range(0, len(values), chunk)])


def test_post_processing_is_chunking_invariant():
    values = np.random.default_rng(0).random((900, labels.NUM_CHANNELS)).astype(np.float32) * 0.3
    opts = PostOptions(mouth_gain=1.3, smoothing_ms=40, blink_symmetry=0.5)
    whole = run_post(opts, values, 900)
    np.testing.assert_allclose(run_post(opts, values, 1), whole, atol=1e-6)
    np.testing.assert_allclose(run_post(opts, values, 7), whole, atol=1e-6)


def test_frame_levels_measure_each_frames_own_samples():
    from talkmotion.audio import frame_levels_db, frame_to_sample

    audio = np.zeros(16000, np.float32)
    audio[frame_to_sample(10):frame_to_sample(11)] = 0.5                 # frame 10 alone is loud
    levels = frame_levels_db(audio, 30, 30)
    assert levels[10] == pytest.approx(10 * np.log10(0.25), abs=1e-3)    # a constant 0.5: -6 dBFS
    assert np.delete(levels, 10).max() < -90                              # digital silence
    first = 7                                                             # measured from a later frame on
    np.testing.assert_allclose(frame_levels_db(audio[frame_to_sample(first):], 23, 30, first), levels[first:],
                               atol=1e-4)


def test_jaw_gate_shuts_the_jaw_far_below_the_recent_peak_at_any_input_gain():
    from talkmotion.postprocess import jaw_gate

    jaw = labels.index("jawOpen")
    values = np.full((30, labels.NUM_CHANNELS), 0.4, np.float32)
    speech_pause_speech = np.array([-12.0] * 10 + [-70.0] * 10 + [-14.0] * 10, np.float32)
    for gain_db in (0.0, -15.0):                                          # a quieter microphone
        out, _ = jaw_gate(values.copy(), speech_pause_speech + gain_db, 30, PostOptions(), None)
        assert np.allclose(out[:10, jaw], 0.4) and np.allclose(out[20:, jaw], 0.4)
        assert np.all(out[10:20, jaw] == 0)
        np.testing.assert_array_equal(np.delete(out, jaw, axis=1), np.delete(values, jaw, axis=1))
    halfway = speech_pause_speech.copy()
    halfway[10:20] = -12.0 - PostOptions().jaw_gate_db + PostOptions().jaw_gate_width_db / 2
    out, _ = jaw_gate(values.copy(), halfway, 30, PostOptions(), None)
    assert out[15, jaw] == pytest.approx(0.2, abs=0.01)                   # half free, half shut
    off, _ = jaw_gate(values.copy(), speech_pause_speech, 30, PostOptions(jaw_gate_db=0), None)
    np.testing.assert_array_equal(off, values)


@pytest.mark.parametrize("field", ["jaw_gate_db", "mouth_gain"])
def test_non_finite_post_options_are_refused_by_name(field, tmp_path):
    from talkmotion.assets import SAMPLE_SPEECH
    from talkmotion.cli import main
    from talkmotion.postprocess import PostOptionsError

    with pytest.raises(PostOptionsError, match=f"--{field.replace('_', '-')} must be a finite number"):
        PostOptions(**{field: float("nan")})
    out = tmp_path / "nan.json"
    assert main(["animate", str(SAMPLE_SPEECH), "-o", str(out), f"--{field.replace('_', '-')}", "nan"]) == 2
    assert not out.exists()


def test_procedural_blinks_have_human_rate_and_shape():
    values = np.zeros((30 * 60, labels.NUM_CHANNELS), np.float32)    # one minute
    out = run_post(PostOptions(), values, 10)
    lid = out[:, labels.index("eyeBlinkLeft")]
    onsets = np.flatnonzero((lid[1:] > 0.5) & (lid[:-1] <= 0.5))
    assert 8 <= len(onsets) <= 30                # people blink ~10–20 times a minute
    closed = (lid > 0.5).sum() / len(onsets) / 30
    assert 0.03 <= closed <= 0.25                # each blink is closed for tens of ms
    np.testing.assert_array_equal(lid, out[:, labels.index("eyeBlinkRight")])


def test_blinks_off_when_the_model_predicts_them():
    post = PostProcessor(PostOptions(), predicted=set(labels.CHANNELS))
    out = post(np.zeros((900, labels.NUM_CHANNELS), np.float32), 0, 30)
    assert out[:, labels.index("eyeBlinkLeft")].max() == 0


def test_live_link_orders_are_permutations_of_the_label_spec():
    """The Live Link CSV and UDP formats list the shapes in Apple's orders (which differ
    from each other and from ours); each must still name every ARKit shape exactly once."""
    from talkmotion.sinks.livelink_csv import CSV_SHAPE_ORDER
    from talkmotion.sinks.livelink_udp import LIVE_LINK_ORDER

    for order in (CSV_SHAPE_ORDER, LIVE_LINK_ORDER):
        assert sorted(order) == sorted(labels.BLENDSHAPES)


def test_every_error_class_is_a_talkmotion_error():
    """The CLI prints TalkmotionError as one line; an error class outside it would traceback."""
    import importlib
    import inspect
    import pkgutil

    import talkmotion
    from talkmotion.errors import TalkmotionError

    found = {}
    for info in pkgutil.walk_packages(talkmotion.__path__, "talkmotion."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and name.endswith("Error") and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    assert len(found) >= 15
    assert [n for n, cls in found.items() if not issubclass(cls, TalkmotionError)] == []


def test_streamed_file_that_fails_midway_leaves_the_old_file(tmp_path):
    from talkmotion.files import write_chunks

    path = tmp_path / "take.csv"
    path.write_text("old\n")

    def chunks():
        yield b"time,v\n0.0,1\n"
        raise RuntimeError("the take broke off")

    with pytest.raises(RuntimeError, match="broke off"):
        write_chunks(path, chunks())
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["take.csv"]      # no temporary file left
    write_chunks(path, iter([b"time,v\n", b"0.0,1\n0.033,2\n"]))
    assert path.read_text() == "time,v\n0.0,1\n0.033,2\n"
