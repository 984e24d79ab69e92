"""ONNX export of the streaming model and an ONNX Runtime backend for the Animator.

Two graphs, with the streaming state as named inputs and outputs:
  encoder_step.onnx  mel (1, 2m, n_mels), state_mel, state_block0.. → features_kv (1, m, L, H, 2*dh)
                     (each new audio feature as every decoder layer's cross keys/values),
                     next_state_mel, next_state_block0..
  decoder_step.onnx  prev (1, 1, C), window_kv (1, W, L, H, 2*dh), window_valid (1, W),
                     cache (L, 1, H, S-1, 2*dh), cache_valid (1, S-1) → frame (1, 1, C), next_cache
plus model.json (the checkpoint header). `OnnxRuntime` runs them behind the same
interface as `stream.TorchRuntime`, so the Animator's bookkeeping is shared.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .checkpoint import header_of
from .files import atomic_path, write_json
from .model import TalkModel
from .stream import Animator, EncoderStep, TorchRuntime

OPSET = 17


def _state_names(model: TalkModel) -> list[str]:
    return ["state_mel"] + [f"state_block{k}" for k in range(len(model.encoder.blocks))]


def export(model: TalkModel, out_dir: str | Path) -> Path:
    """Write encoder_step.onnx, decoder_step.onnx and model.json into out_dir."""
    if model.dims.encoder != "mel":
        raise ValueError("ONNX export supports the mel encoder; pretrained encoders run in PyTorch")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    d = model.dims
    states = model.encoder.initial_state(1)
    names = _state_names(model)
    mel = torch.zeros(1, 4, d.n_mels)
    _export(EncoderStep(model), (mel, *states), out_dir / "encoder_step.onnx",
            ["mel", *names], ["features_kv", *("next_" + n for n in names)],
            {"mel": {1: "mel_frames"}, "features_kv": {1: "features"}})
    runtime = TorchRuntime(model)
    dh2 = 2 * d.d_model // d.n_heads
    inputs = (torch.zeros(1, 1, d.n_channels), torch.zeros(1, d.audio_window, d.n_layers, d.n_heads, dh2),
              torch.ones(1, d.audio_window, dtype=torch.bool),
              torch.zeros(d.n_layers, 1, d.n_heads, d.self_window - 1, dh2),
              torch.zeros(1, d.self_window - 1, dtype=torch.bool))
    _export(runtime.decoder_step, inputs, out_dir / "decoder_step.onnx",
            ["prev", "window_kv", "window_valid", "cache", "cache_valid"], ["frame", "next_cache"], {})
    header = getattr(model, "header", None) or header_of(model, getattr(model, "name", ""))
    write_json(out_dir / "model.json", header)
    return out_dir


def _export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(module, args, str(tmp), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or None, opset_version=OPSET, dynamo=False)


class OnnxRuntime:
    """The streaming steps in ONNX Runtime (one thread by default)."""

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
        onnx_dir = Path(onnx_dir)
        # MatMulAddFusion wraps every 3-D Linear in Reshapes, which cost more than they save here.
        session = lambda name: ort.InferenceSession(  # noqa: E731
            str(onnx_dir / name), opts, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])
        self.encoder = session("encoder_step.onnx")
        self.decoder = session("decoder_step.onnx")
        self.state_names = _state_names(model)

    def encoder_state(self):
        return [s.numpy() for s in self.model.encoder.initial_state(1)]

    def encode_mel(self, mel: np.ndarray, state):
        feeds = {"mel": mel[None].astype(np.float32), **dict(zip(self.state_names, state))}
        out = self.encoder.run(None, feeds)
        return out[0][0], out[1:]

    def decode(self, prev, window, window_valid, cache, cache_valid):
        frame, cache = self.decoder.run(None, {
            "prev": prev[None, None].astype(np.float32), "window_kv": window[None], "window_valid": window_valid[None],
            "cache": cache, "cache_valid": cache_valid[None]})
        return frame[0, 0], cache


def model_fingerprint(model: TalkModel) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_runtime(model: TalkModel, threads: int = 1) -> OnnxRuntime:
    """An OnnxRuntime for `model`, exporting once into a cache folder keyed by the weights."""
    cache = Path(os.environ.get("TALKMOTION_CACHE", Path(tempfile.gettempdir()) / "talkmotion-onnx"))
    out = cache / model_fingerprint(model)
    if not (out / "decoder_step.onnx").exists():
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
    parser.add_argument("-o", "--out", required=True, help="output folder for the .onnx files")
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
    print(f"export-onnx: wrote {out}/encoder_step.onnx, decoder_step.onnx, model.json")
    return 0


