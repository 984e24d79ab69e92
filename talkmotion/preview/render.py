"""`talkmotion render`: an MP4 preview — the avatar's face, a strip of the main curves, the audio.

    talkmotion render speech.json --audio speech.wav -o preview.mp4
    talkmotion render speech.wav -o preview.mp4                  # animates first (default model)
    talkmotion render clip.json --video clip.mp4 -o side_by_side.mp4 --avatar me.vrm

Layout: the avatar (front view, orthographic, head motion included) on the left,
the source video beside it when given, and under both a strip of curves
(jawOpen, mouthFunnel, mouthPucker, smile, blink, head pitch/yaw/roll) scrolling
past a cursor at the current frame. Fully headless: the software rasterizer in
raster.py draws the avatar and PyAV encodes H.264 (MPEG-4 part 2 if libx264 is
missing) with AAC audio; no system ffmpeg or GPU needed.
Audio comes from --audio, else the input when it is audio, else the --video's track.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import labels
from ..audio import SAMPLE_RATE, AudioError, frame_to_sample, load_audio
from ..errors import TalkmotionError
from ..files import atomic_path
from ..frames import Frames, read_frames
from .raster import OrthoCamera, rasterize, shade, to_srgb8
from ..rotation import head_quaternions, quaternion_matrices

PANEL_PX = 480                 # face panel is PANEL_PX square
STRIP_PX = 160                 # curve strip height
LEGEND_PX = 118                # legend column at the strip's left
WINDOW_SECONDS = 4.0           # the strip shows this much time, the cursor in the middle
SIZE_RANGE = (64, 4096)        # --size: smaller shows no face; 4096² is already 4K video per panel
WINDOW_RANGE = (0.5, 60.0)     # --window: under half a second no curve reads; a minute of strip is flat
VIEW_HEIGHT_M = 0.38           # world metres shown top to bottom: head, neck and shoulders
VIEW_ABOVE_HEAD_JOINT_M = 0.07  # the view is centred this far above the head joint
BACKGROUND = (0.16, 0.17, 0.19)
STRIP_BACKGROUND = (18, 20, 24)
GRID = (50, 54, 62)
CURSOR = (235, 235, 235)
VIDEO_CODECS = ("libx264", "mpeg4")
AUDIO_CODEC = "aac"
AUDIO_FRAME = 1024             # AAC encodes 1024 samples per frame
X264_OPTIONS = {"crf": "22", "preset": "veryfast"}

# (label, channels averaged, colour, kind): kind "weight" plots 0..1, "angle" ±HEAD_LIMIT_DEG.
CURVES = (
    ("jawOpen", ("jawOpen",), (255, 120, 90), "weight"),
    ("funnel", ("mouthFunnel",), (250, 200, 80), "weight"),
    ("pucker", ("mouthPucker",), (170, 220, 90), "weight"),
    ("smile", ("mouthSmileLeft", "mouthSmileRight"), (90, 210, 200), "weight"),
    ("blink", ("eyeBlinkLeft", "eyeBlinkRight"), (120, 150, 255), "weight"),
    ("pitch", ("pitch",), (220, 120, 230), "angle"),
    ("yaw", ("yaw",), (240, 240, 240), "angle"),
    ("roll", ("roll",), (150, 150, 150), "angle"),
)


class RenderError(TalkmotionError, ValueError):
    """Input the renderer cannot use; the message names the file."""


# --- the avatar panel ----------------------------------------------------------------

class FaceRenderer:
    """Draws one avatar front view per frame."""

    def __init__(self, avatar=None, size: int = PANEL_PX):
        """avatar: a .vrm/.glb path, a loaded `Avatar`, or None for the reference avatar."""
        from .avatar import load_avatar
        from .avatar.loader import Avatar
        from .avatar.scene import build_posable

        self.avatar = avatar if isinstance(avatar, Avatar) else load_avatar(avatar)
        self.mesh = build_posable(self.avatar)
        if self.avatar.head_flip:  # VRM 0.x faces -Z: turn it to face the camera
            flip = np.array([-1.0, 1.0, -1.0], np.float32)
            self.mesh.base *= flip
            self.mesh.deltas *= flip
            self.mesh.head_pivot = self.mesh.head_pivot * flip
        if self.avatar.head_node is not None:
            center = self.mesh.head_pivot + np.array([0.0, VIEW_ABOVE_HEAD_JOINT_M, 0.0])
        else:  # no head bone: frame the top of the model
            top = self.mesh.base.max(0)
            center = np.array([self.mesh.base[:, 0].mean(), top[1] - VIEW_HEIGHT_M / 2, 0.0])
        self.camera = OrthoCamera(center, VIEW_HEIGHT_M, size, size)
        self.size = size
        self._split_static()

    def _split_static(self) -> None:
        """Draw the parts no frame moves (torso, neck...) once; frames redraw only the rest."""
        mesh = self.mesh
        moves = (mesh.head_weight > 0) | (np.abs(mesh.deltas).max(axis=(0, 2)) > 0 if len(mesh.slots)
                                          else np.zeros(len(mesh.base), bool))
        dynamic = moves[mesh.triangles].any(1)
        self.dynamic_triangles = mesh.triangles[dynamic]
        static = mesh.triangles[~dynamic]
        self.static_image = np.empty((self.size, self.size, 3))
        self.static_image[:] = BACKGROUND
        self.static_depth = rasterize(self.camera.project(mesh.base), static,
                                      shade(mesh.base, static, mesh.colors), self.static_image)

    def weights(self, frames: Frames) -> np.ndarray:
        """(T, K) morph slot weights for the whole clip."""
        return self.mesh.slot_weights(self.avatar, frames.blendshapes)

    def draw(self, slot_weights: np.ndarray, head_degrees: np.ndarray) -> np.ndarray:
        """(K,) slot weights and (3,) pitch, yaw, roll → (size, size, 3) uint8 image."""
        rotation = quaternion_matrices(head_quaternions(np.asarray(head_degrees, np.float64)))
        pos = self.mesh.pose(slot_weights, rotation)
        image = self.static_image.copy()
        tris = self.dynamic_triangles
        rasterize(self.camera.project(pos), tris, shade(pos, tris, self.mesh.colors), image, self.static_depth)
        return to_srgb8(image)


# --- the curve strip ------------------------------------------------------------------

def curve_values(frames: Frames) -> np.ndarray:
    """(T, len(CURVES)) each curve scaled to 0..1 (angles: 0.5 is straight ahead)."""
    out = []
    for _, names, _, kind in CURVES:
        v = np.mean([frames.channel(n) for n in names], axis=0)
        out.append(np.clip(v, 0, 1) if kind == "weight" else np.clip(0.5 + v / (2 * labels.HEAD_LIMIT_DEG), 0, 1))
    return np.stack(out, 1) if out else np.zeros((len(frames), 0))


class CurveStrip:
    """The whole clip's curves drawn once; each frame shows a window of it around the cursor."""

    def __init__(self, frames: Frames, width: int, height: int = STRIP_PX, window: float = WINDOW_SECONDS):
        from PIL import Image, ImageDraw

        self.width, self.height = width, height
        self.plot_width = width - LEGEND_PX
        self.px_per_second = self.plot_width / window
        self.px_per_frame = self.px_per_second / frames.fps
        pad = self.plot_width // 2
        total = int(np.ceil(len(frames) * self.px_per_frame)) + 2 * pad + 2
        canvas = Image.new("RGB", (total, height), STRIP_BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        margin = 8
        for level in (0.0, 0.5, 1.0):
            y = margin + (1 - level) * (height - 2 * margin)
            draw.line([(0, y), (total, y)], fill=GRID)
        for second in range(int(frames.seconds) + 1):
            x = pad + second * self.px_per_second
            draw.line([(x, 0), (x, height)], fill=GRID)
        values = curve_values(frames)
        xs = pad + np.arange(len(frames)) * self.px_per_frame
        for c, (_, _, color, _) in enumerate(CURVES):
            ys = margin + (1 - values[:, c]) * (height - 2 * margin)
            if len(xs) > 1:
                draw.line(list(zip(xs.tolist(), ys.tolist())), fill=color, width=2)
        self.canvas = np.asarray(canvas)
        self.pad = pad
        legend = Image.new("RGB", (LEGEND_PX, height), STRIP_BACKGROUND)
        ldraw = ImageDraw.Draw(legend)
        step = (height - 8) / len(CURVES)
        for c, (label, _, color, kind) in enumerate(CURVES):
            y = 4 + c * step
            ldraw.rectangle([6, y + 4, 16, y + 10], fill=color)
            ldraw.text((22, y), label + (" (°)" if kind == "angle" else ""), fill=color)
        self.legend = np.asarray(legend)

    def draw(self, frame_index: int) -> np.ndarray:
        """(height, width, 3) uint8: the legend and the window centred on `frame_index`."""
        left = int(round(frame_index * self.px_per_frame))
        window = self.canvas[:, left:left + self.plot_width].copy()
        window[:, self.plot_width // 2] = CURSOR
        return np.concatenate([self.legend, window], 1)


# --- the source video -------------------------------------------------------------------

class VideoPanel:
    """Frames of a source video at our frame times, scaled to the panel height."""

    def __init__(self, path: str | Path, height: int):
        import av

        self.path = Path(path)
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise RenderError(f"{self.path}: not a readable video ({err})") from None
        if not self.container.streams.video:
            raise RenderError(f"{self.path}: has no video track")
        stream = self.container.streams.video[0]
        aspect = (stream.width or height) / max(stream.height or height, 1)
        self.height = height
        self.width = max(2, int(round(height * aspect / 2)) * 2)
        self.frames = self.container.decode(stream)
        self.current = None
        self.next = next(self.frames, None)

    def at(self, seconds: float) -> np.ndarray:
        """The last source frame shown at or before `seconds` (held after the video ends)."""
        while self.next is not None and (self.next.time or 0.0) <= seconds + 1e-6:
            self.current, self.next = self.next, next(self.frames, None)
        shown = self.current or self.next
        if shown is None:
            return np.zeros((self.height, self.width, 3), np.uint8)
        return shown.reformat(width=self.width, height=self.height, format="rgb24").to_ndarray()

    def close(self) -> None:
        self.container.close()


# --- encoding ---------------------------------------------------------------------------

def _video_stream(container, fps: float, width: int, height: int):
    import av

    rate = Fraction(fps).limit_denominator(1001)
    for codec in VIDEO_CODECS:
        try:
            stream = container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError):
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = dict(X264_OPTIONS)
        return stream
    raise RenderError(f"no video encoder available (tried {', '.join(VIDEO_CODECS)})")


def _audio_packets(stream, pcm: np.ndarray, start: int, stop: int):
    import av

    packets = []
    for offset in range(start, stop, AUDIO_FRAME):
        chunk = pcm[offset:min(offset + AUDIO_FRAME, stop)]
        frame = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, offset
        packets += stream.encode(frame)
    return packets


def render_video(frames: Frames, output: str | Path, audio: np.ndarray | None = None,
                 avatar=None, video: str | Path | None = None,
                 size: int = PANEL_PX, window: float = WINDOW_SECONDS, progress: bool = False) -> int:
    """Write the preview MP4 atomically; return the number of video frames.

    frames: the animation; audio: 16 kHz mono samples (None: a silent video);
    avatar: a path, an `Avatar` or None (the reference avatar); progress: a bar on a terminal.
    """
    import av
    from tqdm import tqdm

    if not len(frames):
        raise RenderError(f"{output}: nothing to render (no frames)")
    face = FaceRenderer(avatar, size)
    slot_weights = face.weights(frames)
    side = VideoPanel(video, size) if video else None
    width = size + (side.width if side else 0)
    strip = CurveStrip(frames, width, STRIP_PX, window)
    height = size + STRIP_PX
    if audio is not None:  # exactly the frames' duration
        need = frame_to_sample(len(frames), frames.fps)
        audio = np.pad(audio[:need], (0, max(0, need - len(audio))))
    try:
        with atomic_path(output) as tmp:
            with av.open(str(tmp), "w", format="mp4") as container:
                vstream = _video_stream(container, frames.fps, width, height)
                astream = container.add_stream(AUDIO_CODEC, rate=SAMPLE_RATE, layout="mono") if audio is not None \
                    else None
                sent = 0
                for i in tqdm(range(len(frames)), desc=Path(output).name, unit="frame", file=sys.stderr,
                              disable=None if progress else True, leave=False):
                    top = face.draw(slot_weights[i], frames.head[i])
                    if side:
                        top = np.concatenate([top, side.at(i / frames.fps)], 1)
                    image = np.concatenate([top, strip.draw(i)], 0)
                    vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                    vframe.pts = i
                    container.mux(vstream.encode(vframe))
                    if astream is not None:  # interleave: audio up to the end of this frame
                        until = frame_to_sample(i + 1, frames.fps)
                        container.mux(_audio_packets(astream, audio, sent, until))
                        sent = until
                container.mux(vstream.encode(None))
                if astream is not None:
                    container.mux(astream.encode(None))
    finally:
        if side:
            side.close()
    return len(frames)


# --- command line -----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="frames file (.json) or a speech audio/video file to animate first")
    parser.add_argument("-o", "--output", required=True, help="the .mp4 to write")
    parser.add_argument("--audio", help="audio track for the preview (default: the input if it is audio)")
    parser.add_argument("--video", help="source video shown beside the avatar")
    parser.add_argument("--avatar", help=".vrm/.glb to show (default: the built-in reference avatar)")
    parser.add_argument("--model", default=None, help="checkpoint used when the input is audio")
    parser.add_argument("--size", type=int, default=PANEL_PX, help="avatar panel size in pixels (even)")
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS, help="seconds shown in the curve strip")


def load_input(path: str | Path, model_path: str | None = None) -> tuple[Frames, np.ndarray | None]:
    """Frames (from a frames file, or by animating speech) and the input's audio when it has some."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_frames(path), None
    from ..animate import animate_file  # the model loads only when there is audio to animate
    from ..runtime import load_model

    return animate_file(load_model(model_path), path), load_audio(path)


def run(args: argparse.Namespace) -> int:
    import time

    from ..files import check_output
    from .avatar import load_avatar

    if not SIZE_RANGE[0] <= args.size <= SIZE_RANGE[1] or args.size % 2:
        raise RenderError(f"--size {args.size}: must be an even number of pixels within "
                          f"{SIZE_RANGE[0]}..{SIZE_RANGE[1]} (H.264 needs even dimensions)")
    if not WINDOW_RANGE[0] <= args.window <= WINDOW_RANGE[1]:
        raise RenderError(f"--window {args.window}: must be {WINDOW_RANGE[0]:g}..{WINDOW_RANGE[1]:g} seconds")
    check_output(args.output)
    frames, audio = load_input(args.input, args.model)
    source = args.audio or (None if audio is not None else args.video)
    if source:
        try:
            audio = load_audio(source)
        except AudioError:
            if source == args.audio:
                raise
            audio = None  # a video without sound: the preview is silent
    if audio is None:
        print("talkmotion render: no audio given (--audio): the preview is silent", file=sys.stderr)
    avatar = load_avatar(args.avatar)
    if avatar.mode != "arkit" or len(avatar.arkit) < labels.NUM_BLENDSHAPES or avatar.head_node is None:
        print(f"talkmotion render: {avatar.describe()}", file=sys.stderr)  # how a partial avatar is driven
    start = time.perf_counter()
    count = render_video(frames, args.output, audio, avatar, args.video, args.size, args.window, progress=True)
    took = time.perf_counter() - start
    print(f"{args.output}: {count} frames ({frames.seconds:.2f} s) in {took:.1f} s "
          f"({took / max(frames.seconds, 1e-9):.2f} s per second of video)")
    return 0
