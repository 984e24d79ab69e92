"""ONNX export of the streaming steps equals PyTorch over a multi-chunk stream."""

import numpy as np
import onnx

from talkmotion.onnx_export import OnnxRuntime, compare_runtimes, export


def test_onnx_matches_pytorch(tiny_model, tmp_path):
    out = export(tiny_model, tmp_path / "onnx")
    pcm = (np.random.default_rng(1).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    assert compare_runtimes(tiny_model, OnnxRuntime(tiny_model, out), pcm, chunk=1234) < 1e-4


def test_onnx_state_is_named(tiny_model, tmp_path):
    out = export(tiny_model, tmp_path / "onnx")
    graph = onnx.load(str(out / "frame_step.onnx")).graph
    inputs, outputs = [i.name for i in graph.input], [o.name for o in graph.output]
    assert inputs[:6] == ["source", "prev", "window_kv", "window_valid", "cache", "cache_valid"]
    assert inputs[6:8] == ["state_mel", "state_block0"]
    assert outputs == ["frame"] + ["next_" + n for n in inputs[2:]]


def test_onnx_step_is_one_graph_without_shape_arithmetic(tiny_model, tmp_path):
    """A dynamic mel length must not cost Shape/Gather plumbing on every frame."""
    import onnxruntime as ort

    out = export(tiny_model, tmp_path / "onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out / "frame_step.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    # One Shape per decoder layer (its heads reshape of the new features) and one for their count;
    # the encoder's taps and every state update are constant slices.
    assert ops.count("Shape") <= tiny_model.dims.n_layers + 1


def test_stream_command_on_onnx_runtime_matches_animate_on_pytorch(tiny_model, tmp_path, monkeypatch):
    import json

    from talkmotion.audio import write_wav
    from talkmotion.checkpoint import save_model
    from talkmotion.cli import main

    monkeypatch.setenv("TALKMOTION_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "tiny.safetensors"
    save_model(checkpoint, tiny_model, name="tiny")
    t = np.arange(24000) / 16000
    write_wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 180 * t) * (1 - np.cos(2 * np.pi * 3 * t)))
    assert main(["stream", str(tmp_path / "speech.wav"), "--model", str(checkpoint), "--backend", "onnx",
                 "--fast", "-o", str(tmp_path / "onnx.json")]) == 0
    assert main(["animate", str(tmp_path / "speech.wav"), "--model", str(checkpoint), "-q",
                 "-o", str(tmp_path / "torch.json")]) == 0
    assert any((tmp_path / "cache").iterdir())        # exported once, into the cache
    read = lambda name: np.asarray(json.loads((tmp_path / name).read_text())["frames"])  # noqa: E731
    onnx_frames, torch_frames = read("onnx.json"), read("torch.json")
    assert onnx_frames.shape == torch_frames.shape and len(onnx_frames) == 45
    np.testing.assert_allclose(onnx_frames, torch_frames, atol=1e-4)
