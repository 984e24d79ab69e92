"""talkmotion: speech audio → ARKit blendshapes and head rotation, streamed in real time.

    import talkmotion
    model = talkmotion.load_model()            # the embedded default model
    frames = talkmotion.animate_file(model, "speech.wav")
    animator = talkmotion.Animator(model)      # streaming: push(pcm) → Frames
"""

from .frames import Frames, read_frames
from .labels import BLENDSHAPES, CHANNELS, HEAD

__all__ = ["Frames", "read_frames", "BLENDSHAPES", "CHANNELS", "HEAD"]
__version__ = "0.1.0"
