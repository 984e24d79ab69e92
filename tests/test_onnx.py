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
    dec = onnx.load(str(out / "decoder_step.onnx"))
    assert [i.name for i in dec.graph.input] == ["prev", "window_kv", "window_valid", "cache", "cache_valid"]
    assert [o.name for o in dec.graph.output] == ["frame", "next_cache"]
    enc = onnx.load(str(out / "encoder_step.onnx"))
    names = [i.name for i in enc.graph.input]
    assert names[0] == "mel" and names[1] == "state_mel"
    assert [o.name for o in enc.graph.output][1:] == ["next_" + n for n in names[1:]]
