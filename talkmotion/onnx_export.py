"""ONNX export of the streaming model and an ONNX Runtime backend for the Animator.

One graph, `frame_step.onnx`, computes one output frame from the audio it adds, with
every piece of streaming state as a named input and output (see `stream.FrameStep`):
  inputs   source (1, 2m, n_mels) mel frames, prev, window_kv, window_valid, cache,
           cache_valid, state_mel, state_block0..
  outputs  frame (1, 1, C), next_window_kv, next_window_valid, next_cache, next_cache_valid,
           next_state_mel, next_state_block0..   (the frame is the next prev)
plus model.json (the checkpoint header). `OnnxRuntime` runs it behind the same interface
as `stream.TorchRuntime`, so the Animator's bookkeeping is shared.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .checkpoint import header_of
from .errors import TalkmotionError
from .files import atomic_path, write_json
from .model import TalkModel
from .stream import Animator, FrameStep, TorchRuntime

OPSET = 17
GRAPH = "frame_step.onnx"
GRAPH_VERSION = 2   # bump when the exported graph's inputs or outputs change (keys the export cache)


class OnnxExportError(TalkmotionError, ValueError):
    """A model or an exported folder that ONNX Runtime cannot run."""


def export(model: TalkModel, out_dir: str | Path) -> Path:
    """Write frame_step.onnx and model.json into out_dir."""
    if model.dims.encoder != "mel":
        raise OnnxExportError(f"model {getattr(model, 'name', '')!r} uses a pretrained {model.dims.pretrained!r} "
                              "encoder; ONNX export supports the mel encoder, run it with --backend torch")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = FrameStep(model.eval())
    names = step.state_names()
    source = torch.zeros(1, 4, model.dims.n_mels)
    with atomic_path(out_dir / GRAPH) as tmp, torch.no_grad():
        torch.onnx.export(step, (source, *step.initial_state()), str(tmp),
                          input_names=["source", *names], output_names=["frame", *("next_" + n for n in names[1:])],
                          dynamic_axes={"source": {1: "mel_frames"}}, opset_version=OPSET, dynamo=False)
    header = getattr(model, "header", None) or header_of(model, getattr(model, "name", ""))
    write_json(out_dir / "model.json", header)
    return out_dir


class OnnxRuntime:
    """The streaming step in ONNX Runtime (one thread by default)."""

    def __init__(self, model: TalkModel, onnx_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.model = model
        self.dims = model.dims
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A streaming step is a few hundred microseconds: spinning threads only steal the core.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # MatMulAddFusion wraps every 3-D Linear in Reshapes, which cost more than they save here.
        self.session = ort.InferenceSession(str(Path(onnx_dir) / GRAPH), opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["MatMulAddFusion"])
        self.frame_step = FrameStep(model)
        self.input_names = [i.name for i in self.session.get_inputs()]
        if self.input_names[1:] != self.frame_step.state_names():
            raise OnnxExportError(f"{onnx_dir}/{GRAPH} has inputs {self.input_names}, "
                             f"not those of this model's frame step")

    def initial_state(self) -> list[np.ndarray]:
        return [s.numpy() for s in self.frame_step.initial_state()]

    def step(self, source: np.ndarray, state):
        out = self.session.run(None, dict(zip(self.input_names, [source[None], *state])))
        return out[0][0, 0], out


def model_fingerprint(model: TalkModel) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_runtime(model: TalkModel, threads: int = 1) -> OnnxRuntime:
    """An OnnxRuntime for `model`, exporting once into a cache folder keyed by the weights."""
    cache = Path(os.environ.get("TALKMOTION_CACHE", Path(tempfile.gettempdir()) / "talkmotion-onnx"))
    out = cache / f"v{GRAPH_VERSION}-{model_fingerprint(model)}"
    if not (out / GRAPH).exists():
        export(model, out)
    return OnnxRuntime(model, out, threads)


def compare_runtimes(model: TalkModel, runtime, pcm: np.ndarray, chunk: int = 3200) -> float:
    """Largest difference between PyTorch and `runtime` frames over a chunked stream."""
    def run(rt):
        a = Animator(model, runtime=rt)
        parts = [a.push(pcm[i:i + chunk]).values for i in range(0, pcm.size, chunk)]
        return np.concatenate(parts + [a.flush().values])
    return float(np.abs(run(TorchRuntime(model)) - run(runtime)).max())


# --- CLI ---------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("-o", "--out", required=True, help="output folder for frame_step.onnx and model.json")
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--no-check", action="store_true", help="skip the PyTorch comparison")


def run(args) -> int:
    from .checkpoint import load_model

    model = load_model(args.model)
    out = export(model, args.out)
    if not args.no_check:
        pcm = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
        diff = compare_runtimes(model, OnnxRuntime(model, out), pcm)
        print(f"export-onnx: ONNX Runtime vs PyTorch over a 3 s stream: max |diff| = {diff:.2e}")
        if diff > 1e-3:
            raise RuntimeError(f"ONNX export differs from PyTorch by {diff:.2e}")
    print(f"export-onnx: wrote {out}/{GRAPH}, model.json")
    return 0


