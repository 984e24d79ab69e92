"""8-bit exports (`talkmotion export --int8`, runtime/quantize.py): the frozen Whisper trunk's
matrices go to 8 bits in the encode and one-frame graphs, the frames stay close to PyTorch's,
and set-up tells an 8-bit export from a float one."""

import json
from dataclasses import replace

import onnx
import pytest
import torch

from talkmotion import whisper
from talkmotion.assets import EMBEDDED_MODELS, SAMPLE_SPEECH, WHISPER_TINY_EN, export_is_current
from talkmotion.audio import load_audio
from talkmotion.runtime import ExportError
from talkmotion.runtime.export import CHECK_TOLERANCE, CHECK_TOLERANCE_INT8, compare_runtimes, export
from talkmotion.runtime.onnx_runtime import OnnxRuntime

needs_weights = pytest.mark.skipif(not WHISPER_TINY_EN.path.is_file(), reason="set-up installs Whisper tiny.en")


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("stride", [1, 2])
def test_the_convolutions_as_one_matrix_product_give_conv1ds_sums(stride):
    torch.manual_seed(stride)
    conv = torch.nn.Conv1d(16, 24, 3, stride=stride)
    x = torch.randn(2, 11, 16)                                   # (B, T, C): time-major, as the trunk keeps it
    with torch.no_grad():
        want = conv(x.transpose(1, 2)).transpose(1, 2)
        got = whisper._conv_as_matmul(x, conv, stride)
    assert got.shape == want.shape == (2, (11 - 3) // stride + 1, 24)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(whisper._conv_as_matmul(x.flip(1), conv, stride), want, atol=1e-2)


@pytest.mark.slow
@needs_weights
def test_an_int8_export_holds_whispers_matrices_in_8_bits_and_stays_close(tmp_path):
    from talkmotion.checkpoint import load_checkpoint

    model = load_checkpoint("quality")      # a trained decoder: a random one magnifies any change of its input
    floats = export(model, tmp_path / "float")
    int8 = export(model, tmp_path / "int8", int8=True)
    header = json.loads((int8 / "model.json").read_text())
    assert header["weights"] == "int8-dynamic"
    assert json.loads((floats / "model.json").read_text())["weights"] == "float32"
    for graph in ("encode", "frame"):
        assert "DynamicQuantizeLinear" in op_types(int8 / f"{graph}.onnx")
        assert "DynamicQuantizeLinear" not in op_types(floats / f"{graph}.onnx")
        # 3.9 M of Whisper's numbers (conv2 and two blocks) go from 4 bytes to 1
        assert (floats / f"{graph}.onnx").stat().st_size - (int8 / f"{graph}.onnx").stat().st_size > 10e6
    assert "DynamicQuantizeLinear" not in op_types(int8 / "decode.onnx")      # the small decoder stays float
    pcm = load_audio(SAMPLE_SPEECH)[:16000 * 4]
    runtime = OnnxRuntime.load(int8)
    for chunk in (320, 4000):       # live pushes (the one-frame graph) and larger ones (encode + decode)
        diff = compare_runtimes(model, runtime, pcm, chunk=chunk)
        assert CHECK_TOLERANCE < diff < CHECK_TOLERANCE_INT8    # rounded to 8 bits, and no more than that
    assert compare_runtimes(model, OnnxRuntime.load(floats), pcm, chunk=320) < CHECK_TOLERANCE


def test_a_model_without_large_matrices_is_refused_in_one_line(tiny_model, tmp_path):
    with pytest.raises(ExportError, match=r"model 'tiny-random': encode graph: no weight matrix of 131072"):
        export(tiny_model, tmp_path / "out", int8=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@needs_weights
def test_set_up_rebuilds_an_export_whose_weights_are_not_the_embedded_models(tmp_path, capsys):
    from talkmotion.assets import install_export
    from talkmotion.cli import main

    quality = replace(EMBEDDED_MODELS["quality"], export=tmp_path / "quality_model")
    assert quality.int8
    assert main(["export", "--model", "quality", "-o", str(quality.export)]) == 0      # float, checked
    assert not export_is_current(quality)
    assert export_is_current(replace(quality, int8=False))
    assert main(["export", "--model", "quality", "--int8", "--overwrite", "-o", str(quality.export)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert export_is_current(quality)
    (quality.export / "model.json").write_text(
        (quality.export / "model.json").read_text().replace('"int8-dynamic"', '"float32"'))
    assert not export_is_current(quality)
    install_export(quality)
    assert export_is_current(quality)
    assert json.loads((quality.export / "model.json").read_text())["weights"] == "int8-dynamic"


@pytest.mark.slow
@needs_weights
def test_set_up_removes_an_int8_export_that_strays_from_pytorch(tmp_path, monkeypatch):
    """8-bit kernels differ between CPUs, so set-up checks the export it built on this one."""
    from talkmotion.assets import install_export
    from talkmotion.runtime import export as export_module

    quality = replace(EMBEDDED_MODELS["quality"], export=tmp_path / "quality_model")
    monkeypatch.setattr(export_module, "CHECK_TOLERANCE_INT8", 1e-6)    # as if this CPU's kernels saturated
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* \(more than 1e-06\)"):
        install_export(quality)
    assert not quality.export.exists() and not export_is_current(quality)
