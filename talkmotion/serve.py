"""`talkmotion serve`: HTTP + WebSocket server and the browser viewer.

Routes
  GET  /                      the viewer (talkmotion/web/dist, built by scripts/setup.sh)
  GET  /static/<file>         the viewer's files; nothing outside that folder is ever served
  GET  /avatar/reference.vrm  the reference avatar (also .glb)
  GET  /api/info              model, frame rate, latency, channel names, post-processing controls,
                              emotion names, limits
  POST /api/animate           upload an audio file (multipart field "file" or the raw body) →
                              a frames file (talkmotion.frames JSON)
  GET  /ws                    WebSocket streaming session, protocol below

WebSocket session (messages from the client)
  text   {"type": "start", "format": "f32le"|"s16le", "options": {PostOptions fields}, "presets": true}
         optional; begins a new utterance with these settings
  binary PCM, 16 kHz mono, in the session's format (default f32le); any chunk size
  text   {"type": "options", "options": {numeric PostOptions fields}}   change controls mid-stream
  text   {"type": "style", "emotions": {"joy": 0.6, ...}, "attack_s": 0.3, "release_s": 0.6}
         emotions 0..1 (style.NAMES; unlisted ones fade out) from the next frame, ramping over
         attack_s/release_s (optional); they last across utterances and 'start'
  text   {"type": "end"}     flush: the last frames, then {"type": "end", ...}; the session stays open
The server answers with the messages of talkmotion/sinks/websocket.py ("hello", "frames",
"end", "error"). Every refusal is an "error" message in words; a client that breaks the
protocol is closed, everyone else keeps being served.

Limits (ServeLimits): upload size, WebSocket message size, message rate, concurrent
sessions, audio per session, and the Origin header of browser requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from . import labels
from .animate import animate_pcm
from .audio import SAMPLE_RATE, AudioError
from .frames import Frames
from .live import PCM_FORMATS, SourceError, decode_pcm
from .postprocess import PostOptions
from .style import NAMES as EMOTION_NAMES
from .style import StyleError, parse_style_message
from .sinks.websocket import PRESET_NAMES, end_message, error_message, frames_message, hello_message

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent / "web" / "dist"
DEFAULT_PORT = 8080
DEFAULT_FORMAT = "f32le"     # what a browser's Float32Array gives without conversion

# Slider ranges for the viewer, by PostOptions field; a field not listed gets
# 0 … max(1, 2 × its default).
SLIDER_RANGES: dict[str, tuple[float, float, float]] = {   # (min, max, step)
    "mouth_gain": (0.0, 2.0, 0.05), "brow_gain": (0.0, 2.0, 0.05), "head_scale": (0.0, 2.0, 0.05),
    "head_motion": (0.0, 2.0, 0.05),
    "eye_contact": (0.0, 1.0, 0.05), "squint_limit": (0.0, 1.0, 0.05), "blink_symmetry": (0.0, 1.0, 0.05),
    "smoothing_ms": (0.0, 200.0, 5.0), "seed": (0, 100, 1),
    "jaw_gate_db": (0.0, 60.0, 1.0), "jaw_gate_width_db": (1.0, 40.0, 1.0),
}
CHOICES: dict[str, tuple[str, ...]] = {"blinks": ("auto", "on", "off"), "gaze": ("auto", "on", "off")}


@dataclass(frozen=True)
class ServeLimits:
    max_upload_bytes: int = 25 * 2**20        # an uploaded audio file
    max_message_bytes: int = 2**20            # one WebSocket message (1 MiB ≈ 16 s of f32 audio)
    max_messages_per_second: float = 50.0     # sustained, per connection
    message_burst: int = 200                  # messages allowed at once before the rate applies
    max_sessions: int = 8                     # WebSocket sessions and uploads being animated at once
    max_session_seconds: float = 1800.0       # audio per WebSocket session or upload
    allowed_origins: tuple[str, ...] = ()     # browser origins besides the server's own; "*" = any

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Refusal(ValueError):
    """A request the server turns down; the message says why in words."""

    def __init__(self, message: str, status: int = 400, close_code: int = WSCloseCode.POLICY_VIOLATION):
        super().__init__(message)
        self.status, self.close_code = status, close_code


class TokenBucket:
    """`rate` events per second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.last = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def safe_static_path(root: Path, tail: str) -> Path:
    """The file `tail` names inside `root`; Refusal for anything that would leave it."""
    if "\x00" in tail or "\\" in tail or tail.startswith("/") or ".." in Path(tail).parts:
        raise Refusal(f"{tail!r}: not a path inside the viewer", status=403)
    root = root.resolve()
    path = (root / tail).resolve()
    if not path.is_relative_to(root):  # a symlink pointing out
        raise Refusal(f"{tail!r}: not a path inside the viewer", status=403)
    if not path.is_file():
        raise Refusal(f"{tail!r}: no such file in the viewer", status=404)
    return path


def post_option_controls() -> list[dict]:
    """PostOptions fields as viewer controls: name, default, kind and range or choices."""
    controls = []
    for f in dataclasses.fields(PostOptions):
        default = f.default
        if isinstance(default, str):
            controls.append({"name": f.name, "default": default, "kind": "choice",
                             "choices": list(CHOICES.get(f.name, (default,)))})
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            lo, hi, step = SLIDER_RANGES.get(f.name, (0.0, max(1.0, 2.0 * default), 0.05 if isinstance(default, float) else 1))
            controls.append({"name": f.name, "default": default, "kind": "number", "min": lo, "max": hi,
                             "step": step, "live": isinstance(default, float)})
    return controls


def parse_options(values, where: str, live_only: bool = False) -> dict:
    """A client's {field: value} → checked PostOptions keyword arguments.

    Float fields may change mid-stream (live_only); choices and integers (the
    procedural seed) shape a stream from its start, so only a 'start' sets them.
    """
    if not isinstance(values, dict):
        raise Refusal(f"{where}: options must be an object of {{name: value}}")
    fields = {f.name: f.default for f in dataclasses.fields(PostOptions)}
    out = {}
    for name, value in values.items():
        if name not in fields:
            raise Refusal(f"{where}: unknown option {name!r}; options are {', '.join(fields)}")
        default = fields[name]
        if live_only and not isinstance(default, float):
            raise Refusal(f"{where}: option {name!r} can only be set in a 'start' message")
        if isinstance(default, str):
            choices = CHOICES.get(name, (default,))
            if value not in choices:
                raise Refusal(f"{where}: option {name!r} must be one of {', '.join(choices)}, not {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise Refusal(f"{where}: option {name!r} must be an integer, not {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Refusal(f"{where}: option {name!r} must be a finite number, not {value!r}")
        else:
            value = float(value)
        out[name] = value
    return out


class Session:
    """One WebSocket client: its animator, its audio format and its message budget."""

    def __init__(self, server: "TalkServer", ws: web.WebSocketResponse):
        self.server, self.ws = server, ws
        self.format = DEFAULT_FORMAT
        self.presets = True
        self.options: dict = {}
        self.style: tuple | None = None     # the last style message: (emotions, attack_s, release_s)
        self.animator = server.new_animator(None)
        self.samples = 0
        self.frames_sent = 0
        self.bucket = TokenBucket(server.limits.max_messages_per_second, server.limits.message_burst)

    async def handle(self, msg) -> None:
        limits = self.server.limits
        if not self.bucket.take():
            raise Refusal(f"more than {limits.max_messages_per_second:g} messages per second; "
                          "send larger chunks or slow down")
        if msg.type == WSMsgType.BINARY:
            await self.audio(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await self.command(msg.data)

    async def audio(self, data: bytes) -> None:
        limits = self.server.limits
        if len(data) > limits.max_message_bytes:
            raise Refusal(f"a message of {len(data)} bytes is over the limit of {limits.max_message_bytes}; "
                          "send smaller chunks", close_code=WSCloseCode.MESSAGE_TOO_BIG)
        try:
            pcm = decode_pcm(data, self.format, "audio message")
        except (SourceError, AudioError) as err:
            raise Refusal(str(err), close_code=WSCloseCode.UNSUPPORTED_DATA) from None
        self.samples += pcm.size
        if self.samples > limits.max_session_seconds * SAMPLE_RATE:
            raise Refusal(f"this session passed its limit of {limits.max_session_seconds:g} s of audio")
        frames = await self.server.compute(self.animator.push, pcm)
        await self.send_frames(frames)

    async def command(self, text: str) -> None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise Refusal(f"text messages must be JSON ({err})", close_code=WSCloseCode.UNSUPPORTED_DATA) from None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "start":
            fmt = obj.get("format", DEFAULT_FORMAT)
            if fmt not in PCM_FORMATS:
                raise Refusal(f"start: format {fmt!r} is not one of {', '.join(PCM_FORMATS)}")
            rate = obj.get("sample_rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE:
                raise Refusal(f"start: audio must be {SAMPLE_RATE} Hz mono, not {rate!r}")
            self.options = parse_options(obj.get("options", {}), "start")
            self.format, self.presets = fmt, bool(obj.get("presets", True))
            self.animator = self.server.new_animator(PostOptions(**self.options))
            if self.style is not None:
                self.animator.set_style(*self.style)
        elif kind == "style":
            try:
                self.style = parse_style_message(obj)
            except StyleError as err:
                raise Refusal(str(err)) from None
            self.animator.set_style(*self.style)
        elif kind == "options":
            changes = parse_options(obj.get("options", {}), "options", live_only=True)
            self.options.update(changes)
            # Numeric controls are read on every chunk: change them without a restart.
            self.animator.set_options(dataclasses.replace(self.animator.options, **changes))
        elif kind == "end":
            frames = await self.server.compute(self.animator.flush)
            await self.send_frames(frames)
            await self.ws.send_str(end_message(self.frames_sent, self.samples / SAMPLE_RATE))
            self.samples = self.frames_sent = 0
        else:
            raise Refusal(f"unknown message type {kind!r}; expected start, options, style or end",
                          close_code=WSCloseCode.UNSUPPORTED_DATA)

    async def send_frames(self, frames: Frames) -> None:
        if len(frames):
            self.frames_sent += len(frames)
            await self.ws.send_str(frames_message(frames, presets=self.presets))


class TalkServer:
    """The aiohttp application around one loaded model."""

    def __init__(self, model, limits: ServeLimits = ServeLimits(), web_root: Path = WEB_ROOT,
                 avatar_paths=None, workers: int | None = None, backend: str = "torch"):
        self.model, self.limits, self.web_root = model, limits, Path(web_root)
        self.avatar_paths = avatar_paths
        self.sessions = 0
        self.executor = ThreadPoolExecutor(max_workers=workers or limits.max_sessions,
                                           thread_name_prefix="talkmotion-serve")
        from .stream import make_runtime

        # One runtime for every session: it holds no stream state, and both TorchScript and
        # ONNX Runtime compute outside the GIL, so sessions in the worker threads run in parallel.
        self.runtime = make_runtime(model, backend)
        probe = self.new_animator(None)
        self.fps, self.latency_ms, self.model_name = probe.fps, probe.latency_ms, probe.name

    def new_animator(self, options: PostOptions | None):
        from .stream import Animator

        return Animator(self.model, options, runtime=self.runtime)

    async def compute(self, fn, *args):
        """Model work off the event loop, so one busy session never stalls the others' I/O."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # --- application -------------------------------------------------------
    def app(self) -> web.Application:
        # aiohttp's own body cap sits above ours so that ours, with its clearer message, answers first.
        app = web.Application(client_max_size=self.limits.max_upload_bytes + 2**16,
                              middlewares=[self._refusals, self._origin_check])
        app.router.add_get("/", self.index)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_get("/static/{tail:.*}", self.static)
        app.router.add_get("/avatar/reference.{ext}", self.avatar)
        app.router.add_get("/api/info", self.info)
        app.router.add_post("/api/animate", self.animate)
        app.router.add_get("/ws", self.websocket)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _refusals(self, request, handler):
        try:
            return await handler(request)
        except Refusal as err:
            log.info("refused %s %s: %s", request.method, request.path, err)
            return web.json_response({"error": str(err)}, status=err.status)

    @web.middleware
    async def _origin_check(self, request, handler):
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(request, origin):
            raise Refusal(f"origin {origin!r} may not use this server; start it with --allow-origin {origin} "
                          "to allow it", status=403)
        return await handler(request)

    def origin_allowed(self, request, origin: str) -> bool:
        """Same-origin pages always; others only when listed (browsers send Origin, scripts need not)."""
        own = f"{request.scheme}://{request.host}"
        allowed = self.limits.allowed_origins
        return origin == own or "*" in allowed or origin in allowed

    # --- handlers ----------------------------------------------------------
    async def index(self, request):
        if not (self.web_root / "index.html").is_file():
            raise Refusal(f"the viewer is not built ({self.web_root / 'index.html'} is missing); run "
                          "scripts/setup.sh, or `npm ci && node build.mjs` in talkmotion/web", status=503)
        return web.FileResponse(self.web_root / "index.html")

    async def favicon(self, request):
        return web.Response(status=204)  # no icon; saves browsers a logged 404

    async def static(self, request):
        return web.FileResponse(safe_static_path(self.web_root, request.match_info["tail"]))

    async def avatar(self, request):
        ext = request.match_info["ext"]
        if ext not in ("glb", "vrm"):
            raise Refusal(f"reference avatar comes as .glb or .vrm, not .{ext}", status=404)
        paths = self.avatar_paths
        if paths is None:
            from .preview.avatar import reference_avatar_paths

            paths = await asyncio.to_thread(reference_avatar_paths)
        glb, vrm = paths
        return web.FileResponse(Path(vrm if ext == "vrm" else glb),
                                headers={"Content-Type": "model/gltf-binary"})

    async def info(self, request):
        return web.json_response({
            "fps": self.fps, "latency_ms": self.latency_ms, "model": self.model_name,
            "sample_rate": SAMPLE_RATE, "formats": list(PCM_FORMATS),
            "blendshapes": list(labels.BLENDSHAPES), "head": list(labels.HEAD), "presets": list(PRESET_NAMES),
            "controls": post_option_controls(), "emotions": list(EMOTION_NAMES),
            "limits": self.limits.to_json(), "sessions": self.sessions,
        })

    async def animate(self, request):
        with self._session_slot():
            data, name, options = await self._read_upload(request)
            pcm = await asyncio.to_thread(_decode_upload, data, name)
            if pcm.size > self.limits.max_session_seconds * SAMPLE_RATE:
                raise Refusal(f"{name}: {pcm.size / SAMPLE_RATE:.0f} s of audio is over the limit of "
                              f"{self.limits.max_session_seconds:g} s", status=413)
            frames = await self.compute(animate_pcm, self.model, pcm, PostOptions(**options))
        return web.json_response(frames.to_json())

    async def _read_upload(self, request) -> tuple[bytes, str, dict]:
        limit = self.limits.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refusal(f"upload of {request.content_length} bytes is over the limit of {limit} bytes", status=413)
        options: dict = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data, name = None, "upload"
            async for part in reader:
                if part.name == "file":
                    name = part.filename or name
                    data = await _read_capped(part, limit, name)
                elif part.name == "options":
                    options = parse_options(json.loads(await part.text() or "{}"), "upload options")
            if data is None:
                raise Refusal("multipart upload has no 'file' field")
        else:
            name = request.query.get("name", "upload")
            data = await _read_capped(request.content, limit, name)
        if not data:
            raise Refusal(f"{name}: the upload is empty")
        return data, name, options

    async def websocket(self, request):
        limits = self.limits
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=2 * limits.max_message_bytes)
        await ws.prepare(request)
        if self.sessions >= limits.max_sessions:
            await ws.send_str(error_message(f"server busy: {self.sessions} sessions are running (limit "
                                            f"{limits.max_sessions}); try again later"))
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"server busy")
            return ws
        self.sessions += 1
        session = Session(self, ws)
        try:
            await ws.send_str(hello_message(self.fps, self.latency_ms, self.model_name))
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    log.info("WebSocket session ended by a transport error: %s", ws.exception())
                    break
                try:
                    await session.handle(msg)
                except Refusal as err:
                    log.info("refused a WebSocket client: %s", err)
                    await ws.send_str(error_message(str(err)))
                    await ws.close(code=err.close_code, message=str(err)[:120].encode())
                    break
        except ConnectionError as err:
            log.info("WebSocket client went away mid-stream: %s", err)  # nothing left to tell it
        finally:
            self.sessions -= 1
        return ws

    @contextlib.contextmanager
    def _session_slot(self):
        """Count an upload as a session while it is animated; refuse when the server is full."""
        if self.sessions >= self.limits.max_sessions:
            raise Refusal(f"server busy: {self.sessions} sessions are running (limit "
                          f"{self.limits.max_sessions}); try again later", status=503)
        self.sessions += 1
        try:
            yield
        finally:
            self.sessions -= 1


async def _read_capped(stream, limit: int, name: str) -> bytes:
    """Read a body or multipart part, refusing it as soon as it passes `limit` bytes."""
    read = stream.read_chunk if isinstance(stream, BodyPartReader) else stream.read
    parts, size = [], 0
    while True:
        chunk = await read(2**16)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise Refusal(f"{name}: upload is over the limit of {limit} bytes", status=413)
        parts.append(chunk)
    return b"".join(parts)


def _decode_upload(data: bytes, name: str) -> np.ndarray:
    from .audio import load_audio

    suffix = Path(name).suffix[:16] if Path(name).suffix.isascii() else ""
    with tempfile.TemporaryDirectory(prefix="talkmotion-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return load_audio(path)
        except AudioError as err:
            raise Refusal(str(err).replace(str(path), name)) from None


# --- command ----------------------------------------------------------------

def add_arguments(parser) -> None:
    from .stream import add_backend_argument

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--model", help="checkpoint (.safetensors); default: the embedded model")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="also accept browser pages from ORIGIN (e.g. http://localhost:5173); '*' = any")
    defaults = ServeLimits()
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions,
                        help="concurrent streaming sessions and uploads")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20,
                        help="largest accepted upload, MiB")
    parser.add_argument("--max-rate", type=float, default=defaults.max_messages_per_second,
                        help="WebSocket messages per second per client")
    add_backend_argument(parser)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch threads per computation; sessions already run in parallel")


def run(args) -> int:
    import torch

    from .checkpoint import load_model

    torch.set_num_threads(max(1, args.torch_threads))
    logging.basicConfig(level=logging.WARNING, format="talkmotion serve: %(message)s")
    logging.getLogger("talkmotion").setLevel(logging.INFO)  # refusals and dropped clients, one line each
    limits = ServeLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_messages_per_second=args.max_rate,
                         max_sessions=args.max_sessions, allowed_origins=tuple(args.allow_origin))
    server = TalkServer(load_model(args.model), limits, backend=args.backend)
    print(f"talkmotion serve: http://{args.host}:{args.port}/", file=sys.stderr)
    web.run_app(server.app(), host=args.host, port=args.port, print=None)
    return 0
