"""talkmotion: speech audio → ARKit blendshapes and head rotation, streamed in real time.

    import talkmotion
    model = talkmotion.load_model()            # the embedded default model
    frames = talkmotion.animate_file(model, "speech.wav")
    animator = talkmotion.Animator(model)      # streaming: push(pcm) → Frames
"""

import os

# talkmotion's numpy work is small matrices (mel filterbanks, per-frame windows), where
# OpenBLAS's thread pool only adds overhead and, on a busy machine, stalls by 10×.
# Set before numpy loads; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .frames import Frames, read_frames  # noqa: E402
from .labels import BLENDSHAPES, CHANNELS, HEAD  # noqa: E402

__all__ = ["Frames", "read_frames", "BLENDSHAPES", "CHANNELS", "HEAD"]
__version__ = "0.1.0"
