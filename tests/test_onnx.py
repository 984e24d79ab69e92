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
