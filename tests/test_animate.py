"""`talkmotion animate` end to end on real TTS speech, and its answers to bad input."""

import csv
import json
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile as sf

from talkmotion import labels
from talkmotion.animate import animate_file, animate_pcm
from talkmotion.assets import SAMPLE_SPEECH
from talkmotion.audio import load_audio
from talkmotion.checkpoint import save_checkpoint
from talkmotion.frames import read_frames
from talkmotion.postprocess import PostOptions

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


@pytest.fixture
def tiny_checkpoint(tiny_model, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, tiny_model)
    return path


def animate(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "talkmotion", "animate", *map(str, args)], input=stdin,
                          capture_output=True)


def encode(path, pcm, sr, codec, channels=1):
    """Write 16 kHz `pcm` at rate `sr` with PyAV in any container/codec (mp3, m4a, ogg, flac, mp4...)."""
    from talkmotion.audio import resample

    layout = "mono" if channels == 1 else "stereo"
    data = np.tile(resample(pcm, 16000, sr)[None], (channels, 1)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for k in range(0, data.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, k:k + step]), format="fltp",
                                               layout=layout)
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_animate_real_speech_writes_json_and_csv(tiny_checkpoint, tmp_path):
    out_json, out_csv = tmp_path / "speech.json", tmp_path / "speech.csv"
    proc = animate(SAMPLE_SPEECH, "--model", tiny_checkpoint, "-o", out_json, "-o", out_csv)
    assert proc.returncode == 0, proc.stderr.decode()
    obj = json.loads(out_json.read_text())
    seconds = load_audio(SAMPLE_SPEECH).size / 16000
    assert obj["format"] == "talkmotion.frames" and obj["version"] == 1 and obj["fps"] == 30
    assert obj["blendshapes"] == list(labels.BLENDSHAPES) and obj["head"] == ["pitch", "yaw", "roll"]
    assert len(obj["frames"]) == int(np.ceil(seconds * 30 - 1e-9))
    assert obj["duration"] == pytest.approx(seconds, abs=1e-3)
    assert 0 < obj["latency_ms"] <= 100 and obj["model"] == "tiny-random"
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(obj["frames"])
    assert float(rows[1]["jawOpen"]) == pytest.approx(obj["frames"][1][labels.index("jawOpen")], abs=1e-4)
    assert "real time" in proc.stderr.decode()


def test_fps_resampling_keeps_duration(tiny_checkpoint, tmp_path):
    assert animate(SAMPLE_SPEECH, "--model", tiny_checkpoint, "--fps", "60", "-o", tmp_path / "a.json").returncode == 0
    frames = read_frames(tmp_path / "a.json")
    assert frames.fps == 60 and len(frames) == int(np.ceil(frames.seconds * 60 - 1e-9))


@pytest.mark.parametrize("suffix,codec", [(".flac", "flac"), (".ogg", "libopus"), (".mp3", "libmp3lame"),
                                          (".m4a", "aac"), (".mp4", "aac")])
def test_common_formats_decode(tiny_runtime, tmp_path, suffix, codec):
    pcm = load_audio(SAMPLE_SPEECH)[:16000 * 2]
    path = tmp_path / f"speech{suffix}"
    encode(path, pcm, {"flac": 22050, "libopus": 48000}.get(codec, 44100), codec)
    frames = animate_file(tiny_runtime, path)
    assert len(frames) == pytest.approx(60, abs=2)


def test_several_inputs_into_a_folder(tiny_checkpoint, tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    pcm = load_audio(SAMPLE_SPEECH)[:16000]
    sf.write(a, pcm, 16000)
    sf.write(b, pcm, 16000)
    proc = animate(a, b, "--model", tiny_checkpoint, "-o", f"{tmp_path}/out/", "--format", "json,csv")
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv", "a.json", "b.csv", "b.json"]


def test_stdin_pcm_8khz_stereo(tiny_checkpoint, tmp_path):
    pcm = load_audio(SAMPLE_SPEECH)[:16000 * 2]
    from talkmotion.audio import resample
    eight = resample(pcm, 16000, 8000)
    stereo = (np.stack([eight, eight], 1) * 32767).astype("<i2").tobytes()
    proc = animate("-", "--model", tiny_checkpoint, "--sample-rate", "8000", "--channels", "2", "-o", "-",
                   stdin=stereo)
    assert proc.returncode == 0, proc.stderr.decode()
    obj = json.loads(proc.stdout)
    assert len(obj["frames"]) == 60


def test_stdin_and_file_give_the_same_frames(tiny_runtime, tmp_path):
    pcm = load_audio(SAMPLE_SPEECH)[:16000 * 2]
    path = tmp_path / "x.wav"
    sf.write(path, pcm, 16000, subtype="FLOAT")
    opts = PostOptions(blinks="off", gaze="off")
    np.testing.assert_allclose(animate_file(tiny_runtime, path, opts).values, animate_pcm(tiny_runtime, pcm, opts).values,
                               atol=1e-4)


def test_8khz_stereo_file_is_resampled(tiny_runtime, tmp_path):
    pcm = load_audio(SAMPLE_SPEECH)[:16000]
    path = tmp_path / "tel.wav"
    sf.write(path, np.stack([pcm[::2], pcm[::2]], 1), 8000)
    assert len(animate_file(tiny_runtime, path)) == 30


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not audio, just text\n" * 50), "not a readable audio"),
])
def test_bad_files_get_one_line_errors_and_no_output(tiny_checkpoint, tmp_path, make, message):
    bad = tmp_path / "bad.wav"
    make(bad)
    out = tmp_path / "out.json"
    proc = animate(bad, "--model", tiny_checkpoint, "-o", out)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and message in err and str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_truncated_mp3_animates_what_is_there_or_fails_cleanly(tiny_checkpoint, tmp_path):
    pcm = load_audio(SAMPLE_SPEECH)[:16000 * 3]
    full = tmp_path / "full.mp3"
    encode(full, pcm, 16000, "libmp3lame")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "cut.json"
    proc = animate(cut, "--model", tiny_checkpoint, "-o", out)
    if proc.returncode == 0:
        assert 0 < read_frames(out).seconds < 3.0
    else:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode() and not out.exists()


def test_nan_samples_fail_without_output(tiny_checkpoint, tmp_path):
    pcm = load_audio(SAMPLE_SPEECH)[:16000].copy()
    pcm[5000:5010] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, pcm, 16000, subtype="FLOAT")
    proc = animate(path, "--model", tiny_checkpoint, "-o", tmp_path / "nan.json")
    assert proc.returncode == 2 and "NaN" in proc.stderr.decode()
    assert not (tmp_path / "nan.json").exists()


def test_silence_is_animated(tiny_runtime, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 2, np.float32), 16000)
    frames = animate_file(tiny_runtime, path)
    assert len(frames) == 60 and np.isfinite(frames.values).all()


def test_unknown_output_format(tiny_checkpoint, tmp_path):
    proc = animate(SAMPLE_SPEECH, "--model", tiny_checkpoint, "-o", tmp_path / "x.xyz")
    assert proc.returncode == 2 and "unknown output format" in proc.stderr.decode()


def test_missing_model_checkpoint(tmp_path):
    proc = animate(SAMPLE_SPEECH, "--model", tmp_path / "nope.safetensors", "-o", tmp_path / "x.json")
    assert proc.returncode == 2 and "no such checkpoint" in proc.stderr.decode()


def test_onnx_backend_matches_torch(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKMOTION_CACHE", str(tmp_path / "cache"))
    for backend in ("torch", "onnx"):
        proc = animate(SAMPLE_SPEECH, "--model", tiny_checkpoint, "--backend", backend, "--blinks", "off",
                       "--gaze", "off", "-o", tmp_path / f"{backend}.json")
        assert proc.returncode == 0, proc.stderr.decode()
    a, b = read_frames(tmp_path / "torch.json"), read_frames(tmp_path / "onnx.json")
    np.testing.assert_allclose(a.values, b.values, atol=1e-3)
