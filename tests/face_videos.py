"""Small real videos for extraction tests, written with PyAV.

The face is scikit-image's `astronaut` photo (a real face shipped in a registry
package), turned in-plane by a known angle per frame, with a tone as audio.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_RATE = 16_000
TIME_BASE = Fraction(1, 1000)     # millisecond timestamps allow any frame times (variable fps)
# The astronaut's face sits near (x 240, y 130) of the 512 x 512 photo.
FACE_CROP = (slice(0, 320), slice(60, 380))


def astronaut_face() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[FACE_CROP])


def rotated(image: np.ndarray, degrees: float, size: int) -> np.ndarray:
    """The image turned counter-clockwise (as displayed) by `degrees` about its centre, centre-cropped."""
    from skimage import transform

    out = (transform.rotate(image, degrees, mode="edge", preserve_range=True)).astype(np.uint8)
    h, w = out.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(out[top:top + size, left:left + size])


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from skimage import transform

    return (transform.resize(image, (height, width), preserve_range=True, anti_aliasing=True)).astype(np.uint8)


def tone(seconds: float, freq: float = 220.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * AUDIO_RATE))) / AUDIO_RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_video(path: Path, frames, fps: float = 30.0, audio: np.ndarray | None = None,
                codec: str = "libx264", audio_start: float = 0.0) -> Path:
    """Encode (time_s, rgb (H, W, 3) uint8) pairs, in time order, plus optional 16 kHz mono audio
    whose first sample is at `audio_start` seconds."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        video = None
        audio_stream = None
        if audio is not None:
            audio_stream = out.add_stream("aac", rate=AUDIO_RATE)
            audio_stream.layout = "mono"
        for t, rgb in frames:
            if video is None:
                video = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
                video.width, video.height = rgb.shape[1], rgb.shape[0]
                video.pix_fmt = "yuv420p"
                video.time_base = TIME_BASE
                video.codec_context.time_base = TIME_BASE
                if codec == "libx264":
                    video.options = {"preset": "ultrafast", "crf": "18"}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), TIME_BASE
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio_stream is not None:
            _write_audio(out, audio_stream, audio, int(round(audio_start * AUDIO_RATE)))
    return path


def _write_audio(out, stream, pcm: np.ndarray, offset: int = 0, block: int = 1024) -> None:
    import av

    for start in range(0, pcm.size, block):
        chunk = pcm[start:start + block]
        frame = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, offset + start
        frame.time_base = Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def roll_angle(t: float, amplitude: float = 15.0, period: float = 2.0) -> float:
    """The in-plane angle (degrees, counter-clockwise) of the test face at time t."""
    return amplitude * np.sin(2 * np.pi * t / period)


def rotating_face_video(path: Path, seconds: float = 2.0, fps: float = 30.0, size: int = 256,
                        times: np.ndarray | None = None, with_audio: bool = True) -> Path:
    """The astronaut turning in-plane by roll_angle(t); `times` overrides the frame times (variable fps)."""
    face = astronaut_face()
    times = np.arange(int(round(seconds * fps))) / fps if times is None else times
    frames = ((float(t), rotated(face, roll_angle(float(t)), size)) for t in times)
    return write_video(path, frames, fps, tone(seconds) if with_audio else None)


def faceless_video(path: Path, seconds: float = 2.0, fps: float = 30.0, size: int = 256) -> Path:
    """Two faceless scenes (coffee, then rocket) with one cut halfway, with audio."""
    from skimage import data

    scenes = [resized(data.coffee(), size, size), resized(data.rocket(), size, size)]
    n = int(round(seconds * fps))
    frames = ((i / fps, scenes[0] if i < n // 2 else scenes[1]) for i in range(n))
    return write_video(path, frames, fps, tone(seconds))
