"""The exported model: a folder ONNX Runtime runs without torch, equal to PyTorch, state by name."""

import json
import subprocess
import sys

import numpy as np
import pytest
import onnx
import torch

from talkmotion.checkpoint import CheckpointError, save_checkpoint
from talkmotion.cli import main
from talkmotion.runtime import ExportError
from talkmotion.runtime.export import compare_runtimes, export
from talkmotion.runtime.onnx_runtime import OnnxRuntime


def noise(seconds, seed=1):
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


def test_onnx_matches_pytorch(tiny_model, tmp_path):
    out = export(tiny_model, tmp_path / "exported")
    assert compare_runtimes(tiny_model, OnnxRuntime.load(out), noise(2.0), chunk=1234) < 1e-4


def test_live_pushes_run_the_one_frame_graph_and_match_pytorch(tiny_model, tmp_path):
    """20 ms pushes: one call of the frame graph per frame (not the encode and decode graphs),
    the same frames as PyTorch's; the frame graph has no distance arithmetic left."""
    out = export(tiny_model, tmp_path / "exported")
    runtime = OnnxRuntime.load(out)
    assert compare_runtimes(tiny_model, runtime, noise(1.5), chunk=16000) < 1e-4
    assert "frame" not in runtime.sessions        # a file's 1 s pushes never load it
    runtime.frame_graph()
    calls = {"frame": 0, "decode": 0}

    class Counting:
        def __init__(self, name):
            self.name, self.session = name, runtime.sessions[name]

        def __getattr__(self, attribute):
            return getattr(self.session, attribute)

        def run(self, *args):
            calls[self.name] += 1
            return self.session.run(*args)

        def run_with_iobinding(self, *args):
            calls[self.name] += 1
            return self.session.run_with_iobinding(*args)
    runtime.sessions["frame"], runtime.sessions["decode"] = Counting("frame"), Counting("decode")
    assert compare_runtimes(tiny_model, runtime, noise(1.5), chunk=320) < 1e-4
    assert calls["frame"] > 40 and calls["decode"] <= 4      # two streams; each one's first frame and flush
    frame, decode = optimized_ops(out / "frame.onnx", tmp_path), optimized_ops(out / "decode.onnx", tmp_path)
    assert not {"Range", "Less", "GreaterOrEqual"} & set(frame)      # no distance arithmetic for the biases
    assert len(frame) < len(decode)                                  # though it holds the encoder too


def test_streams_on_one_exported_model_keep_their_own_state(tiny_model, tmp_path):
    """A stream's state is updated in place (bound buffers): two streams pushed in turn on one
    runtime, and one restarted, each give the frames they give alone."""
    from talkmotion.postprocess import PostOptions
    from talkmotion.stream import Animator

    runtime = OnnxRuntime.load(export(tiny_model, tmp_path / "exported"))
    initial = [x.copy() for x in runtime.initial["decode"] + runtime.initial["encode"]]
    raw = PostOptions(blinks="off", gaze="off", head_motion=0.0)
    a, b = noise(1.0, seed=2), noise(1.0, seed=3)

    def alone(pcm):
        animator = Animator(runtime, raw)
        return np.concatenate([animator.push(pcm[i:i + 320]).values for i in range(0, pcm.size, 320)])
    first, second = Animator(runtime, raw), Animator(runtime, raw)
    second.push(b[:8000])
    second.reset()
    together = [[], []]
    for i in range(0, a.size, 320):
        together[0].append(first.push(a[i:i + 320]).values)
        together[1].append(second.push(b[i:i + 320]).values)
    np.testing.assert_array_equal(np.concatenate(together[0]), alone(a))
    np.testing.assert_array_equal(np.concatenate(together[1]), alone(b))
    for start, now in zip(initial, runtime.initial["decode"] + runtime.initial["encode"]):
        np.testing.assert_array_equal(start, now)


def optimized_ops(graph, tmp_path) -> list[str]:
    """The operators of a graph as ONNX Runtime runs it, after its optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_a_truncated_or_missing_frame_graph_is_a_one_line_error_naming_it(tiny_model, tmp_path):
    out = export(tiny_model, tmp_path / "exported")
    data = (out / "frame.onnx").read_bytes()
    (out / "frame.onnx").write_bytes(data[:len(data) // 2])
    with pytest.raises(ExportError, match=f"its frame graph 'frame.onnx' is {len(data) // 2} bytes, not the "
                                          f"{len(data)} it was written with"):
        OnnxRuntime.load(out)
    # Damaged at its full size: found when a stream first steps one frame, as clearly.
    (out / "frame.onnx").write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2))
    runtime = OnnxRuntime.load(out)
    with pytest.raises(ExportError, match="exported: frame graph cannot be loaded"):
        runtime.step(np.zeros((1, 1), np.float32), np.ones(1, np.int64), runtime.initial_state())
    (out / "frame.onnx").unlink()
    with pytest.raises(ExportError, match="its frame graph 'frame.onnx' is missing"):
        OnnxRuntime.load(out)


def test_large_weights_can_live_beside_the_graph(tiny_model, tmp_path):
    """External data: what a frozen third-party encoder fetched at set-up would use; the
    one-frame graph, which would hold the weights again, is left out and the two graphs serve."""
    out = export(tiny_model, tmp_path / "exported", external_data=True)
    assert (out / "encode.onnx.data").stat().st_size > (out / "encode.onnx").stat().st_size
    assert not (out / "frame.onnx").exists() and not OnnxRuntime.load(out).has_frame_graph
    assert compare_runtimes(tiny_model, OnnxRuntime.load(out), noise(1.0), chunk=320) < 1e-4
    assert compare_runtimes(tiny_model, OnnxRuntime.load(out), noise(1.0), chunk=999) < 1e-4
    (out / "encode.onnx.data").unlink()
    with pytest.raises(ExportError, match="encode graph cannot be loaded"):
        OnnxRuntime.load(out)


def test_state_is_named_and_its_initial_value_is_in_the_header(tiny_model, tmp_path):
    with torch.no_grad():   # normalised silence then differs by band: the mel state's start is not a constant
        tiny_model.encoder.mel_mean.copy_(torch.linspace(-12, -3, tiny_model.dims.encoder.n_mels))
    out = export(tiny_model, tmp_path / "exported")
    header = json.loads((out / "model.json").read_text())
    blocks = [f"state_block{k}" for k in range(tiny_model.dims.encoder.layers)]
    for graph, inputs, outputs, state in (
            ("encode", ["source"], ["new_kv", "new_q"], ["state_mel", *blocks]),
            ("decode", ["new_kv", "new_q", "hidden"], ["frames"],
             ["window_kv", "window_valid", "cache", "cache_valid", "newest_q"])):
        g = onnx.load(str(out / f"{graph}.onnx")).graph
        assert [i.name for i in g.input] == [*inputs, *state]
        assert [o.name for o in g.output] == [*outputs, *("next_" + n for n in state)]   # every state comes back
        assert [s["name"] for s in header["state"][graph]] == state
    frame = onnx.load(str(out / "frame.onnx")).graph     # newest_q goes unread, so unlisted
    assert [i.name for i in frame.input] == ["source", "window_kv", "window_valid", "cache", "cache_valid",
                                             "state_mel", *blocks]
    assert [o.name for o in frame.output] == ["frames", *("next_" + n for n in (
        "window_kv", "window_valid", "cache", "cache_valid", "newest_q", "state_mel", *blocks))]
    mel_state = header["state"]["encode"][0]
    silence = ((tiny_model.encoder.silence - tiny_model.encoder.mel_mean) / tiny_model.encoder.mel_std).numpy()
    np.testing.assert_allclose(np.asarray(mel_state["values"]).reshape(mel_state["shape"])[0, 0], silence, rtol=1e-6)
    assert header["timing"]["features"]["hop"] == 320 and header["source"]["type"] == "logmel"
    assert header["predicted"] == tiny_model.predicted() and "jaw_gate_db" in header["post"]


def test_decode_graph_has_little_shape_arithmetic(tiny_model, tmp_path):
    """Dynamic feature and frame counts must not cost Shape/Gather plumbing per layer and head."""
    out = export(tiny_model, tmp_path / "exported")
    ops = optimized_ops(out / "decode.onnx", tmp_path)
    # The step's counts (features, frames) and each layer's heads reshapes of its queries and keys.
    assert ops.count("Shape") <= 5 * tiny_model.dims.n_layers + 4


def test_export_never_replaces_a_folder_without_being_told(tiny_model, tmp_path, capsys):
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    out = tmp_path / "exported"
    assert main(["export", "--model", str(checkpoint), "-o", str(out)]) == 0
    first = (out / "decode.onnx").stat().st_mtime_ns
    assert main(["export", "--model", str(checkpoint), "-o", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "decode.onnx").stat().st_mtime_ns == first
    assert main(["export", "--model", str(checkpoint), "-o", str(out), "--overwrite", "--no-check"]) == 0
    (tmp_path / "notes").mkdir()
    with pytest.raises(ExportError, match="not an exported model"):
        export(tiny_model, tmp_path / "notes", overwrite=True)


def test_weights_that_are_not_finite_are_refused(tiny_model, tmp_path):
    with torch.no_grad():
        tiny_model.decoder.inp.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="decoder.inp.weight holds NaN"):
        export(tiny_model, tmp_path / "exported")
    with pytest.raises(CheckpointError, match="decoder.inp.weight holds NaN"):
        save_checkpoint(tmp_path / "m.safetensors", tiny_model)
    assert not (tmp_path / "exported").exists() and not (tmp_path / "m.safetensors").exists()


def test_a_broken_exported_folder_is_one_line(tiny_model, tmp_path, capsys):
    out = export(tiny_model, tmp_path / "exported")
    (out / "model.json").write_text("{not json")
    from talkmotion.audio import write_wav

    write_wav(tmp_path / "a.wav", noise(0.5))
    assert main(["animate", str(tmp_path / "a.wav"), "--model", str(out), "-o", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert "not an exported talkmotion model" in err and "Traceback" not in err


def test_the_onnx_path_never_imports_torch(tiny_model, tmp_path):
    out = export(tiny_model, tmp_path / "exported")
    code = f"""
import sys
import numpy as np
import talkmotion
model = talkmotion.load_model({str(out)!r})
animator = talkmotion.Animator(model)
frames = animator.push(np.zeros(16000, np.float32))
frames = animator.flush()
assert 'torch' not in sys.modules, 'torch was imported'
print('ok', model.name)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok tiny-random"


def test_stream_on_onnx_runtime_matches_animate_on_pytorch_and_writes_no_cache(tiny_model, tmp_path, monkeypatch):
    from talkmotion.audio import write_wav

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    t = np.arange(24000) / 16000
    write_wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 180 * t) * (1 - np.cos(2 * np.pi * 3 * t)))
    assert main(["stream", str(tmp_path / "speech.wav"), "--model", str(checkpoint), "--backend", "onnx",
                 "--fast", "-o", str(tmp_path / "onnx.json")]) == 0
    assert main(["animate", str(tmp_path / "speech.wav"), "--model", str(checkpoint), "-q",
                 "-o", str(tmp_path / "torch.json")]) == 0
    assert not any((tmp_path / "tmp").iterdir()) and not (tmp_path / "home").exists()   # exported in memory
    read = lambda name: np.asarray(json.loads((tmp_path / name).read_text())["frames"])  # noqa: E731
    onnx_frames, torch_frames = read("onnx.json"), read("torch.json")
    assert onnx_frames.shape == torch_frames.shape and len(onnx_frames) == 45
    np.testing.assert_allclose(onnx_frames, torch_frames, atol=1e-4)
