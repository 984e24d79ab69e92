"""Runtimes: the things that step a model, behind the one interface the Animator relies on.

A runtime (any of the classes below) has
  name             the model's name
  timing           timing.StreamTiming: when each frame is due and which audio features it hears
  predicted        frozenset of the channel names the model predicts (post-processing fills the rest)
  post_defaults    postprocess.PostOptions the model ships with
  new_source()     audio → what `step` reads, for one stream (runtime.sources)
  initial_state()  the state of a stream that has heard nothing, opaque to the Animator: a list
                   of tensors (PyTorch), or an OnnxStreamState whose arrays the graphs update in place
  step(source, added, state) -> (frames (k, C) float32, state)
                   the k frames whose audio features `source` brings; added (k,) says how many
                   of those features each frame brings (from timing.features_added)
                   (one frame that brings features, `is_one_frame`, runs as one fused call)
One runtime serves many Animators: it holds no stream state.

  OnnxRuntime   (runtime.onnx_runtime) an exported model (`talkmotion export`) in ONNX Runtime:
                onnxruntime and numpy only, never torch. The default.
  TorchRuntime  (runtime.torch_runtime) a TalkModel checkpoint, its steps traced into TorchScript.

This module imports neither torch nor onnxruntime; each backend is imported when chosen.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TalkmotionError

BACKENDS = ("auto", "onnx", "torch")


class ModelLoadError(TalkmotionError, ValueError):
    """A model that cannot be loaded or run as asked; the message names it and what to do."""


class ExportError(TalkmotionError, ValueError):
    """A model that cannot be exported, or an exported model that cannot be run."""


def is_one_frame(added) -> bool:
    """Whether a step (added: features each frame brings) is one frame that brings at least one
    feature: the step a live stream's pushes make, which runtimes run as one FrameStep."""
    return len(added) == 1 and added[0] > 0


def load_model(path: str | Path | None = None, backend: str = "auto", threads: int | None = None):
    """A runtime for a model file or folder, or for an embedded model by name (assets.EMBEDDED_MODELS:
    "default", "quality"); None is the default model.

    An exported folder (`talkmotion export`) runs in ONNX Runtime; a checkpoint
    (.safetensors) runs in PyTorch, or with backend="onnx" is exported in memory first.
    backend="auto" picks ONNX Runtime for the embedded models and exported folders. threads:
    the model's CPU threads (None: one for ONNX Runtime; PyTorch's process-wide setting untouched).
    """
    from ..assets import embedded_model

    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    embedded = embedded_model(path)
    if embedded is not None:
        path = embedded_model_path(embedded, backend)
    path = Path(path)
    if path.is_dir():
        if backend == "torch":
            raise ModelLoadError(f"{path}: an exported model runs in ONNX Runtime only; give its checkpoint "
                                 f"(.safetensors) for --backend torch")
        from .onnx_runtime import OnnxRuntime

        return OnnxRuntime.load(path, threads=threads or 1)
    try:
        from ..checkpoint import load_checkpoint
    except ImportError as err:   # an inference-only install: no torch
        raise ModelLoadError(f"{path}: a checkpoint needs PyTorch ({err}); install talkmotion with torch, "
                             f"or give a model exported by `talkmotion export`") from None
    return make_runtime(load_checkpoint(path), "torch" if backend == "auto" else backend, threads)


def embedded_model_path(embedded, backend: str) -> Path:
    """What runs an embedded model: its export in ONNX Runtime, or its checkpoint in PyTorch
    (asked for, no onnxruntime installed, or the export not built yet: `make setup` builds it)."""
    if backend != "torch" and _has_onnxruntime() and (embedded.export / "model.json").is_file():
        return embedded.export
    return embedded.checkpoint


def model_argument_help(others: str = "an exported model folder or a checkpoint") -> str:
    """The `--model` help text of every command that takes a model: the embedded models by name,
    then `others`, what else the command takes."""
    from ..assets import EMBEDDED_MODELS

    names = ", ".join(f"'{m.name}' ({m.about})" for m in EMBEDDED_MODELS.values())
    return f"an embedded model, {names}; or {others} (default: 'default')"


def make_runtime(model, backend: str = "torch", threads: int | None = None):
    """A runtime for a TalkModel: PyTorch (a traced step, any encoder) or ONNX Runtime (exported
    in memory; encoders that export)."""
    if backend in ("torch", "auto"):
        from .torch_runtime import TorchRuntime

        return TorchRuntime(model, threads=threads)
    if backend == "onnx":
        from .export import export_in_memory
        from .onnx_runtime import OnnxRuntime

        header, graphs = export_in_memory(model)
        return OnnxRuntime(header, graphs, threads=threads or 1)
    raise ModelLoadError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


# The code that shapes an exported model's graphs: an export made by other code is stale.
EXPORT_CODE = ("model.py", "timing.py", "encoders/__init__.py", "encoders/mel.py", "encoders/whisper.py",
               "whisper.py", "runtime/torch_runtime.py", "runtime/export.py", "runtime/onnx_runtime.py",
               "runtime/quantize.py")


def export_fingerprint() -> str:
    """SHA-256 over EXPORT_CODE, recorded in every export."""
    import hashlib

    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in EXPORT_CODE:
        h.update((package / name).read_bytes())
    return h.hexdigest()[:16]


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def add_backend_argument(parser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: ONNX Runtime for the default and exported models, PyTorch for checkpoints; "
                             "onnx exports a checkpoint in memory (mel-encoder models); torch runs a traced step")
