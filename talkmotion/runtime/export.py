"""`talkmotion export`: a checkpoint → a self-contained model folder that ONNX Runtime runs
without torch (runtime/onnx_runtime.py describes the folder).

Each graph is one of the step modules of runtime/torch_runtime.py, with every piece of
streaming state a named input and output, checked against PyTorch after writing. With
`external_data`, large weights go to a file beside their graph (`encode.onnx.data`): a
frozen third-party encoder can then be fetched at set-up instead of committed, and the
graph and header stay small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import labels
from ..checkpoint import check_finite, header_of
from ..files import write_json
from ..postprocess import PostOptions
from ..timing import SAMPLE_RATE
from . import ExportError, export_fingerprint
from .onnx_runtime import FORMAT, VERSION, OnnxRuntime, state_entry
from .quantize import FLOAT_WEIGHTS
from .torch_runtime import DecodeStep, EncodeStep, FrameStep, TorchRuntime, example_source

OPSET = 17
FILES = {"encode": "encode.onnx", "decode": "decode.onnx", "frame": "frame.onnx"}


def export_in_memory(model) -> tuple[dict, dict[str, bytes]]:
    """The exported model's header and its graphs as bytes."""
    if model.encoder.export_refusal:
        raise ExportError(f"model {model.name!r} {model.encoder.export_refusal}")
    check_finite(model.state_dict(), f"model {model.name!r}")
    model = model.eval()
    encode, decode, frame = EncodeStep(model), DecodeStep(model), FrameStep(model)
    source = example_source(model)
    with torch.no_grad():
        new_kv, new_q = encode(source, *encode.initial_state())[:2]
    hidden = torch.tensor([1, 0])
    encode_state, decode_state = encode.state_names(), decode.state_names()
    graphs = {   # every state comes back as next_<name>
        "encode": _onnx(encode, (source, *encode.initial_state()), ["source", *encode_state],
                        ["new_kv", "new_q", *("next_" + n for n in encode_state)],
                        {"source": {1: "source_steps"}, "new_kv": {3: "features"}, "new_q": {1: "features"}}),
        "decode": _onnx(decode, (new_kv, new_q, hidden, *decode.initial_state()),
                        ["new_kv", "new_q", "hidden", *decode_state],
                        ["frames", *("next_" + n for n in decode_state)],
                        {"new_kv": {3: "features"}, "new_q": {1: "features"}, "hidden": {0: "frames"},
                         "frames": {1: "frames"}}),
        # The decode state then the encoder's, as the runtimes keep them; newest_q goes unread.
        "frame": _onnx(frame, (source, *decode.initial_state(), *encode.initial_state()),
                       ["source", *frame.state_names()], ["frames", *("next_" + n for n in frame.state_names())],
                       {"source": {1: "source_steps"}}),
    }
    header = {**header_of(model), "format": FORMAT, "version": VERSION, "code": export_fingerprint(),
              "post": dataclasses.asdict(PostOptions()), "timing": model.timing.to_json(),
              "source": model.encoder.source_spec(), "graphs": dict(FILES), "weights": FLOAT_WEIGHTS,
              "state": {"encode": _state(encode), "decode": _state(decode)}}
    return header, graphs


def _onnx(module, example, inputs, outputs, dynamic_axes) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated; the dynamo one needs seconds per graph
        # and exports these small steps to larger graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # strided slices (the Whisper trunk's conv2 as a matrix product) are left to ONNX Runtime
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(module, example, buffer, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def _state(step) -> list[dict]:
    return [state_entry(name, value.numpy()) for name, value in zip(step.state_names(), step.initial_state())]


def export(model, out_dir: str | Path, overwrite: bool = False, external_data: bool = False,
           checkpoint: str | Path | None = None, int8: bool = False) -> Path:
    """Write the exported model folder `out_dir` (whole, or not at all). An existing folder is
    replaced only with `overwrite`. `checkpoint`: the file the model came from, recorded by
    its SHA-256 so set-up can tell a stale export. `int8`: large weight matrices in 8 bits
    (runtime/quantize.py)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if out_dir.exists() and not (out_dir / "model.json").is_file():
        raise ExportError(f"{out_dir}: exists and is not an exported model; refusing to replace it")
    header, graphs = export_in_memory(model)
    if external_data:   # large weights: the frame graph would store them a second time
        del graphs["frame"], header["graphs"]["frame"]
    if int8:
        from .quantize import INT8_WEIGHTS, QUANTIZED_GRAPHS, quantize_graph   # needs the onnx package

        for graph in QUANTIZED_GRAPHS:
            if graph in graphs:
                graphs[graph] = quantize_graph(graphs[graph], f"model {model.name!r}: {graph} graph")
        header["weights"] = INT8_WEIGHTS
    if checkpoint is not None:
        header["checkpoint_sha256"] = sha256(checkpoint)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for graph, data in graphs.items():
            _write_graph(tmp / FILES[graph], data, external_data)
        # each graph's size: a truncated file is found when the model is opened, though
        # the runtime loads the one-frame graph only when a stream first needs it
        header["graph_bytes"] = {graph: (tmp / FILES[graph]).stat().st_size for graph in graphs}
        write_json(tmp / "model.json", header)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_graph(path: Path, data: bytes, external_data: bool) -> None:
    if not external_data:
        path.write_bytes(data)
        return
    import onnx

    onnx.save_model(onnx.load_from_string(data), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compare_runtimes(model, runtime, pcm: np.ndarray, chunk: int = 3200) -> float:
    """Largest difference between PyTorch's frames and `runtime`'s over a chunked stream."""
    from ..postprocess import PostOptions as Options
    from ..stream import Animator

    raw = Options(blinks="off", gaze="off")

    def run(rt):
        a = Animator(rt, raw)
        parts = [a.push(pcm[i:i + chunk]).values for i in range(0, pcm.size, chunk)]
        return np.concatenate(parts + [a.flush().values])
    return float(np.abs(run(TorchRuntime(model)) - run(runtime)).max())


# --- CLI ---------------------------------------------------------------------------------

CHECK_TOLERANCE = 1e-3   # ONNX Runtime's frames may differ from PyTorch's by float rounding only
# ... or, with --int8, by 8-bit rounding: the quality model's frames moved by at most 0.05 over
# these 3 s of noise and 0.08 over the speech sample (mouthClose; 0.0004 on average over the mouth)
CHECK_TOLERANCE_INT8 = 0.15


def check_export(model, out: Path, int8: bool = False) -> float:
    """Stream 3 s of noise through the export and through PyTorch: the largest difference,
    or an ExportError when it is more than rounding explains (8-bit rounding with `int8`)."""
    pcm = (np.random.default_rng(0).standard_normal(SAMPLE_RATE * 3) * 0.1).astype(np.float32)
    diff = compare_runtimes(model, OnnxRuntime.load(out), pcm)
    tolerance = CHECK_TOLERANCE_INT8 if int8 else CHECK_TOLERANCE
    if not diff <= tolerance:
        raise ExportError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (more than {tolerance:g})")
    return diff


def add_arguments(parser) -> None:
    from . import model_argument_help

    parser.add_argument("-o", "--out", required=True,
                        help="output folder (model.json, encode.onnx, decode.onnx, frame.onnx)")
    parser.add_argument("--model", default=None, help=model_argument_help("a checkpoint (.safetensors)"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing exported model folder")
    parser.add_argument("--external-data", action="store_true",
                        help="keep large weights in files beside the graphs (<graph>.onnx.data); "
                             "leaves out the one-frame graph, which would hold them again")
    parser.add_argument("--int8", action="store_true",
                        help="keep the large weight matrices (a frozen Whisper trunk's) in 8 bits: a live "
                             "stream of the quality model runs about twice as fast (BENCHMARKS.md)")
    parser.add_argument("--no-check", action="store_true", help="skip the PyTorch comparison")


def run(args) -> int:
    from ..assets import checkpoint_path
    from ..checkpoint import load_checkpoint

    source = checkpoint_path(args.model)
    model = load_checkpoint(source)
    out = export(model, args.out, overwrite=args.overwrite, external_data=args.external_data, checkpoint=source,
                 int8=args.int8)
    if not args.no_check:
        diff = check_export(model, out, args.int8)
        print(f"export: ONNX Runtime vs PyTorch over a 3 s stream: max |diff| = {diff:.2e}")
    print(f"export: wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))}; "
          f"{len(labels.CHANNELS)} channels)")
    return 0
