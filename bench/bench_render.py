"""Speed of `talkmotion render`: seconds of wall time per second of preview video.

    .venv/bin/python bench/bench_render.py [--seconds 10] [--size 480] [--video]

Renders synthetic talking frames (jaw, smile, blinks, head motion) on the
reference avatar with a 16 kHz audio track, optionally beside a generated source
video, and prints the time per rendered second and per frame, and the avatar
draw alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE
from talkmotion.frames import Frames
from talkmotion.preview.render import PANEL_PX, FaceRenderer, render_video

FPS = 30


def synthetic_frames(seconds: float) -> Frames:
    t = np.arange(int(seconds * FPS)) / FPS
    v = np.zeros((len(t), labels.NUM_CHANNELS), np.float32)
    v[:, labels.index("jawOpen")] = np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 3 * t), 0, 1)
    v[:, labels.index("mouthSmileLeft")] = v[:, labels.index("mouthSmileRight")] = 0.3
    v[(t % 3) < 0.15, labels.index("eyeBlinkLeft")] = 1
    v[(t % 3) < 0.15, labels.index("eyeBlinkRight")] = 1
    v[:, labels.index("yaw")] = 12 * np.sin(2 * np.pi * 0.3 * t)
    v[:, labels.index("pitch")] = 5 * np.sin(2 * np.pi * 0.5 * t)
    return Frames(v, fps=FPS)


def make_video(path: Path, seconds: float, size=(640, 480)) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(int(seconds * FPS)):
            image = np.full((size[1], size[0], 3), (i * 3) % 255, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=PANEL_PX)
    parser.add_argument("--video", action="store_true", help="also decode and place a 640×480 source video")
    args = parser.parse_args()
    frames = synthetic_frames(args.seconds)
    audio = (0.1 * np.sin(2 * np.pi * 200 * np.arange(int(args.seconds * SAMPLE_RATE)) / SAMPLE_RATE)).astype(
        np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        video = None
        if args.video:
            video = Path(tmp) / "source.mp4"
            make_video(video, args.seconds)
        face = FaceRenderer(size=args.size)
        weights = face.weights(frames)
        start = time.perf_counter()
        for i in range(min(len(frames), 60)):
            face.draw(weights[i], frames.head[i])
        draw = (time.perf_counter() - start) / min(len(frames), 60)
        start = time.perf_counter()
        render_video(frames, Path(tmp) / "out.mp4", audio, video=video, size=args.size)
        took = time.perf_counter() - start
    print(f"render: {args.seconds:.0f} s clip, {len(frames)} frames at {FPS} fps, panel {args.size}px"
          f"{', with source video' if args.video else ''}")
    print(f"  total {took:.1f} s = {took / args.seconds:.2f} s per rendered second "
          f"({took / len(frames) * 1000:.0f} ms per frame; avatar draw alone {draw * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
