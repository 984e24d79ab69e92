"""talkmotion: speech audio → ARKit blendshapes and head rotation, streamed in real time.

    import talkmotion
    model = talkmotion.load_model()            # the embedded default model (ONNX Runtime, no torch)
    frames = talkmotion.animate_file(model, "speech.wav")
    frames.blendshapes, frames.head            # (T, 52) weights, (T, 3) degrees
    animator = talkmotion.Animator(model)      # streaming: push(pcm) → Frames, flush()

The names below are imported on first use, so `import talkmotion` stays instant and the
default path never imports torch.
"""

import os

# talkmotion's numpy work is small matrices (mel filterbanks, per-frame windows), where
# OpenBLAS's thread pool only adds overhead and, on a busy machine, stalls by 10×.
# Set before numpy loads; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["load_model", "animate_file", "animate_pcm", "Animator", "Frames", "read_frames",
           "BLENDSHAPES", "CHANNELS", "HEAD"]
__version__ = "0.1.0"

_HOMES = {"load_model": "runtime", "animate_file": "animate", "animate_pcm": "animate", "Animator": "stream",
          "Frames": "frames", "read_frames": "frames", "BLENDSHAPES": "labels", "CHANNELS": "labels",
          "HEAD": "labels"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'talkmotion' has no attribute {name!r}")
