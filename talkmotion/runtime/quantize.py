"""8-bit weights for an exported model's large matrices (`talkmotion export --int8`).

A live stream steps one frame at a time, so each step multiplies one row by every weight
matrix: the time goes to reading the weights, not to arithmetic. A frozen Whisper trunk's
matrices (3.5 M numbers in two blocks) are read from memory at every 20 ms push; stored as
8-bit integers they are a quarter of the bytes, and ONNX Runtime multiplies them with
integer kernels (the activations are quantized on the fly, per call: "dynamic" quantization).

Only matrix products with a constant weight of at least MIN_WEIGHTS numbers are quantized
(Whisper tiny's smallest is 384 × 384), so the small trained layers keep their float
weights; the decode graph is never touched, and the encode and one-frame graphs quantize
the same products, so offline and live inference differ by the activations' per-call
scales only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import ExportError

QUANTIZED_GRAPHS = ("encode", "frame")
MIN_WEIGHTS = 128 * 1024       # more than any trained matrix of ours (the largest is 128 × 640)
INT8_WEIGHTS = "int8-dynamic"  # the exported header's "weights" entry for a quantized export...
FLOAT_WEIGHTS = "float32"      # ...and for one that is not


def quantize_graph(data: bytes, what: str) -> bytes:
    """An ONNX graph (bytes) with its large constant-weight MatMuls in 8 bits."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(data)
    _constants_to_initializers(model.graph)
    targets = _large_weight_matmuls(model.graph)
    if not targets:
        raise ExportError(f"{what}: no weight matrix of {MIN_WEIGHTS} numbers or more to quantize")
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        out = Path(tmp) / "quantized.onnx"
        quantize_dynamic(model, out, op_types_to_quantize=["MatMul"], nodes_to_quantize=targets,
                         weight_type=QuantType.QInt8, per_channel=True, extra_options={"MatMulConstBOnly": True})
        return out.read_bytes()


@contextlib.contextmanager
def _quiet_root_logger():
    """The quantizer logs advice meant for image models on the root logger ("consider
    pre-processing"): not the user's concern, held back while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _constants_to_initializers(graph) -> None:
    """Constant nodes holding tensors become initializers: what the quantizer reads as weights.
    (PyTorch exports weights that are not parameters, such as a frozen trunk's, as Constants.)"""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = type(node.attribute[0].t)()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _large_weight_matmuls(graph) -> list[str]:
    """Names of the MatMul nodes whose second input is an initializer of at least MIN_WEIGHTS numbers."""
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    names = []
    for k, node in enumerate(graph.node):
        if node.op_type == "MatMul" and sizes.get(node.input[1], 0) >= MIN_WEIGHTS:
            if not node.name:
                node.name = f"MatMul_quantized_{k}"
            names.append(node.name)
    return names
