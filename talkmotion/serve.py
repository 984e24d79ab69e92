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
  text   {"type": "cancel"}  drop the utterance: audio and commands still queued are discarded, the
         stream restarts (same options), and the server answers {"type": "cancelled"} after the
         last message of the old utterance, so a client drops everything until then
The server answers with the messages of talkmotion/sinks/websocket.py ("hello", "frames",
"end", "cancelled", "error"). Every refusal is an "error" message in words; a client that breaks
the protocol is closed with the reason, everyone else keeps being served.

Limits (ServeLimits): the Host header (DNS rebinding), the Origin header of browser requests,
upload size and deadlines, WebSocket message size and rate, idle sessions, concurrent sessions
overall and per client address, connections per client address, and audio per session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from . import labels
from .animate import animate_chunks
from .audio import SAMPLE_RATE, AudioError, AudioTooLong, iter_audio
from .errors import TalkmotionError
from .frames import Frames
from .live import PCM_FORMATS, SourceError, decode_pcm
from .postprocess import OPTION_CHOICES, PostOptions, PostOptionsError
from .sinks.websocket import (PRESET_NAMES, cancelled_message, end_message, error_message, frames_message,
                              hello_message)
from .style import NAMES as EMOTION_NAMES
from .style import StyleError, parse_style_message

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent / "web" / "dist"
DEFAULT_PORT = 8080
DEFAULT_FORMAT = "f32le"     # what a browser's Float32Array gives without conversion
UPLOAD_CHUNK = 2**16         # bytes read from an upload at a time
CLOSE_REASON_BYTES = 123     # the WebSocket protocol's limit on a close reason
LOOPBACK_NAMES = ("localhost",)
ANY = "*"

# Slider ranges for the viewer, by PostOptions field; a field not listed gets
# 0 … max(1, 2 × its default).
SLIDER_RANGES: dict[str, tuple[float, float, float]] = {   # (min, max, step)
    "mouth_gain": (0.0, 2.0, 0.05), "brow_gain": (0.0, 2.0, 0.05), "head_scale": (0.0, 2.0, 0.05),
    "head_motion": (0.0, 2.0, 0.05),
    "eye_contact": (0.0, 1.0, 0.05), "squint_limit": (0.0, 1.0, 0.05), "blink_symmetry": (0.0, 1.0, 0.05),
    "smoothing_ms": (0.0, 200.0, 5.0), "seed": (0, 100, 1),
    "jaw_gate_db": (0.0, 60.0, 1.0), "jaw_gate_width_db": (1.0, 40.0, 1.0),
}
CHOICES = OPTION_CHOICES


class ServeError(TalkmotionError, ValueError):
    """A server setting that cannot be used (a limit, an address, a port); the message names it."""


@dataclass(frozen=True)
class ServeLimits:
    max_upload_bytes: int = 25 * 2**20        # an uploaded audio file
    max_message_bytes: int = 2**20            # one WebSocket message (1 MiB ≈ 16 s of f32 audio)
    max_messages_per_second: float = 50.0     # sustained, per connection
    message_burst: int = 200                  # messages allowed at once before the rate applies
    max_sessions: int = 8                     # WebSocket sessions and uploads being animated at once
    max_sessions_per_client: int = 4          # ... of them from one client address, so one cannot take all
    max_connections_per_client: int = 32      # open TCP connections from one address (browsers use ~6)
    max_session_seconds: float = 1800.0       # audio per WebSocket utterance or upload
    max_queued_messages: int = 64             # WebSocket messages read ahead of the model per session
    header_seconds: float = 10.0              # a request's line and headers must arrive within this
    read_seconds: float = 15.0                # an upload may pause this long between pieces of its body
    body_seconds: float = 120.0               # ... and must have arrived whole within this
    idle_seconds: float = 120.0               # a WebSocket with no message and no work for this long is closed
    allowed_origins: tuple[str, ...] = ()     # browser origins besides the server's own; "*" = any
    allowed_hosts: tuple[str, ...] = ()       # Host header names besides loopback ones; "*" = any

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not (math.isfinite(value) and value > 0):
                raise ServeError(f"serve: {f.name} must be a positive number, not {value}")
        if self.message_burst < 1 or self.max_queued_messages < 1:
            raise ServeError("serve: message_burst and max_queued_messages must be at least 1")

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
    Values are checked against PostOptions' ranges too (post_options builds them).
    """
    if not isinstance(values, dict):
        raise Refusal(f"{where}: options must be an object of {{name: value}}")
    fields = {f.name: f.default for f in dataclasses.fields(PostOptions)}
    out = {}
    for name, value in values.items():
        if name not in fields:
            raise Refusal(f"{where}: unknown option {_shown(name)}; options are {', '.join(fields)}")
        default = fields[name]
        if live_only and not isinstance(default, float):
            raise Refusal(f"{where}: option {name!r} can only be set in a 'start' message")
        if isinstance(default, str):
            choices = CHOICES.get(name, (default,))
            if not isinstance(value, str) or value not in choices:
                raise Refusal(f"{where}: option {name!r} must be one of {', '.join(choices)}, not {_shown(value)}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise Refusal(f"{where}: option {name!r} must be an integer, not {_shown(value)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Refusal(f"{where}: option {name!r} must be a finite number, not {_shown(value)}")
        else:
            value = float(value)
        out[name] = value
    post_options(out, where)
    return out


def post_options(values: dict, where: str, base: PostOptions | None = None) -> PostOptions:
    """PostOptions from checked client values (over `base`); their range errors become refusals."""
    try:
        return dataclasses.replace(base or PostOptions(), **values)
    except PostOptionsError as err:
        raise Refusal(f"{where}: {err}") from None


def parse_json(text: str | bytes, where: str):
    """A client's JSON text; a refusal in words for anything else, deep nesting included."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Refusal(f"{where}: must be JSON ({err})", close_code=WSCloseCode.UNSUPPORTED_DATA) from None
    except RecursionError:
        raise Refusal(f"{where}: JSON nested too deeply to read", close_code=WSCloseCode.UNSUPPORTED_DATA) from None


def _shown(value, limit: int = 40) -> str:
    """repr(value), cut short: a refusal quotes what it refuses, never megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def close_reason(text: str) -> bytes:
    """`text` as a WebSocket close reason: at most 123 bytes of UTF-8, cut at a character."""
    return text.encode()[:CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()


def host_name(header: str) -> str:
    """The name in a Host header, without port or brackets, lower case: '[::1]:8080' → '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


CANCEL = object()   # queued in place of an utterance's dropped messages


class Session:
    """One WebSocket client: its animator, its audio format and its message budget.

    Messages are read as they arrive into a bounded queue, and a worker feeds them to
    the model in order; so a 'cancel' is seen at once, however much audio waits before it.
    """

    def __init__(self, server: "TalkServer", ws: web.WebSocketResponse):
        self.server, self.ws = server, ws
        self.format = DEFAULT_FORMAT
        self.presets = True
        self.options = PostOptions()
        self.style: tuple | None = None     # the last style message: (emotions, attack_s, release_s)
        self.animator = server.new_animator(None)
        self.samples = 0
        self.frames_sent = 0
        self.bucket = TokenBucket(server.limits.max_messages_per_second, server.limits.message_burst)
        self.queue: asyncio.Queue = asyncio.Queue(server.limits.max_queued_messages)
        self.busy = False   # the worker is on a message

    async def run(self) -> None:
        """Read and answer messages until the client leaves, idles out or is refused."""
        worker = asyncio.create_task(self._work())
        try:
            await self._read()
        except Refusal as err:
            await self.refuse(err)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _read(self) -> None:
        limits = self.server.limits
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=limits.idle_seconds)
            except asyncio.TimeoutError:
                if self.busy or not self.queue.empty():
                    continue   # the client waits for us, it is not idle
                log.info("closing a WebSocket session idle for %g s", limits.idle_seconds)
                await self.ws.close(code=WSCloseCode.GOING_AWAY,
                                    message=close_reason(f"idle: no message for {limits.idle_seconds:g} s"))
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                log.info("WebSocket session ended by a transport error: %s", self.ws.exception())
                return
            if not self.bucket.take():
                raise Refusal(f"more than {limits.max_messages_per_second:g} messages per second; "
                              "send larger chunks or slow down")
            if msg.type == WSMsgType.TEXT:
                obj = parse_json(msg.data, "text message")
                if isinstance(obj, dict) and obj.get("type") == "cancel":
                    self._cancel()
                    continue
                await self.queue.put(obj)
            elif msg.type == WSMsgType.BINARY:
                self._check_size(msg.data)
                await self.queue.put(msg.data)

    def _cancel(self) -> None:
        """Drop what waits for the model; the worker answers 'cancelled' after what it is on."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CANCEL)

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            self.busy = True
            try:
                await self.handle(item)
            except Refusal as err:
                await self.refuse(err)
                return
            finally:
                self.busy = False

    async def handle(self, item) -> None:
        """One queued message: PCM bytes, a parsed command, or CANCEL."""
        if item is CANCEL:
            self.animator = self.new_animator()
            self.samples = self.frames_sent = 0
            await self.ws.send_str(cancelled_message())
        elif isinstance(item, bytes):
            await self.audio(item)
        else:
            await self.command(item)

    async def refuse(self, err: Refusal) -> None:
        log.info("refused a WebSocket client: %s", err)
        with contextlib.suppress(ConnectionError):
            if not self.ws.closed:
                await self.ws.send_str(error_message(str(err)))
                await self.ws.close(code=err.close_code, message=close_reason(str(err)))

    def _check_size(self, data: bytes) -> None:
        limit = self.server.limits.max_message_bytes
        if len(data) > limit:
            raise Refusal(f"a message of {len(data)} bytes is over the limit of {limit}; "
                          "send smaller chunks", close_code=WSCloseCode.MESSAGE_TOO_BIG)

    async def audio(self, data: bytes) -> None:
        limits = self.server.limits
        try:
            pcm = decode_pcm(data, self.format, "audio message")
        except (SourceError, AudioError) as err:
            raise Refusal(str(err), close_code=WSCloseCode.UNSUPPORTED_DATA) from None
        self.samples += pcm.size
        if self.samples > limits.max_session_seconds * SAMPLE_RATE:
            raise Refusal(f"this utterance passed its limit of {limits.max_session_seconds:g} s of audio; "
                          "send 'end' to start another")
        frames = await self.server.compute(self.animator.push, pcm)
        await self.send_frames(frames)

    async def command(self, obj) -> None:
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "start":
            fmt = obj.get("format", DEFAULT_FORMAT)
            if fmt not in PCM_FORMATS:
                raise Refusal(f"start: format {_shown(fmt)} is not one of {', '.join(PCM_FORMATS)}")
            rate = obj.get("sample_rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE:
                raise Refusal(f"start: audio must be {SAMPLE_RATE} Hz mono, not {_shown(rate)}")
            self.options = post_options(parse_options(obj.get("options", {}), "start"), "start")
            self.format, self.presets = fmt, bool(obj.get("presets", True))
            self.animator = self.new_animator()
            self.samples = self.frames_sent = 0
        elif kind == "style":
            try:
                self.style = parse_style_message(obj)
            except StyleError as err:
                raise Refusal(str(err)) from None
            self.animator.set_style(*self.style)
        elif kind == "options":
            changes = parse_options(obj.get("options", {}), "options", live_only=True)
            self.options = post_options(changes, "options", self.options)
            # Numeric controls are read on every chunk: change them without a restart.
            self.animator.set_options(post_options(changes, "options", self.animator.options))
        elif kind == "end":
            frames = await self.server.compute(self.animator.flush)
            await self.send_frames(frames)
            await self.ws.send_str(end_message(self.frames_sent, self.samples / SAMPLE_RATE))
            self.samples = self.frames_sent = 0
        else:
            raise Refusal(f"unknown message type {_shown(kind)}; expected start, options, style, end or cancel",
                          close_code=WSCloseCode.UNSUPPORTED_DATA)

    def new_animator(self):
        """A fresh stream with the session's options and style."""
        animator = self.server.new_animator(self.options)
        if self.style is not None:
            animator.set_style(*self.style)
        return animator

    async def send_frames(self, frames: Frames) -> None:
        if len(frames):
            self.frames_sent += len(frames)
            await self.ws.send_str(frames_message(frames, presets=self.presets))


class ConnectionGuard:
    """Connections per client address, and a deadline for a new connection's first request.

    aiohttp's keep-alive timeout (set to the same deadline) closes connections that wait
    between requests; this closes those that never finish their first request line and
    headers, which would otherwise be held open for as long as the client likes.
    """

    BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 44\r\n\r\ntoo many connections from this address    \n")

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self.open: collections.Counter = collections.Counter()
        self.deadlines: dict = {}   # transport → its header deadline's timer

    def protocol(self, make_inner) -> "asyncio.Protocol":
        return _GuardedProtocol(self, make_inner)

    def headers_arrived(self, transport) -> None:
        timer = self.deadlines.pop(transport, None)
        if timer is not None:
            timer.cancel()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind the guard: the same events, passed through once admitted."""

    def __init__(self, guard: ConnectionGuard, make_inner):
        self.guard, self.make_inner, self.inner, self.peer = guard, make_inner, None, None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        if self.guard.open[self.peer] >= self.guard.limits.max_connections_per_client:
            log.info("refused a connection: %s already has %d open", self.peer, self.guard.open[self.peer])
            transport.write(ConnectionGuard.BUSY)
            transport.close()
            self.peer = None
            return
        self.guard.open[self.peer] += 1
        loop = asyncio.get_running_loop()
        self.guard.deadlines[transport] = loop.call_later(self.guard.limits.header_seconds, self._expire, transport)
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

    def _expire(self, transport) -> None:
        if self.guard.deadlines.pop(transport, None) is not None:
            log.info("closed a connection from %s: no request within %g s", self.peer,
                     self.guard.limits.header_seconds)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        if self.peer is not None:
            self.guard.open[self.peer] -= 1
            if not self.guard.open[self.peer]:
                del self.guard.open[self.peer]
        self.guard.headers_arrived(self.transport)   # nothing left to wait for
        if self.inner is not None:
            self.inner.connection_lost(exc)


class TalkServer:
    """The aiohttp application around one loaded model (a runtime: `runtime.load_model`)."""

    def __init__(self, model, limits: ServeLimits = ServeLimits(), web_root: Path = WEB_ROOT,
                 avatar_paths=None, workers: int | None = None):
        self.model, self.limits, self.web_root = model, limits, Path(web_root)
        self.avatar_paths = avatar_paths
        self.sessions = 0
        self.sessions_by_client: collections.Counter = collections.Counter()
        self.guard = ConnectionGuard(limits)
        self.executor = ThreadPoolExecutor(max_workers=workers or limits.max_sessions,
                                           thread_name_prefix="talkmotion-serve")
        # One runtime (`model`) for every session: it holds no stream state, and both TorchScript
        # and ONNX Runtime compute outside the GIL, so sessions in the worker threads run in parallel.
        probe = self.new_animator(None)
        self.fps, self.latency_ms, self.model_name = probe.fps, probe.latency_ms, probe.name

    def new_animator(self, options: PostOptions | None):
        from .stream import Animator

        return Animator(self.model, options)

    async def compute(self, fn, *args):
        """Model work off the event loop, so one busy session never stalls the others' I/O."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # --- application -------------------------------------------------------
    def app(self) -> web.Application:
        # aiohttp's own body cap sits above ours so that ours, with its clearer message, answers first.
        app = web.Application(client_max_size=self.limits.max_upload_bytes + 2**16,
                              middlewares=[self._refusals, self._host_check, self._origin_check])
        app.router.add_get("/", self.index)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_get("/static/{tail:.*}", self.static)
        app.router.add_get("/avatar/reference.{ext}", self.avatar)
        app.router.add_get("/api/info", self.info)
        app.router.add_post("/api/animate", self.animate)
        app.router.add_get("/ws", self.websocket)
        app.on_shutdown.append(self._shutdown)
        return app

    async def listen(self, host: str, port: int) -> tuple[web.AppRunner, asyncio.AbstractServer]:
        """Serve on host:port behind the connection guard; ServeError if it cannot listen there."""
        runner = web.AppRunner(self.app(), keepalive_timeout=self.limits.header_seconds, access_log=None)
        await runner.setup()
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(lambda: self.guard.protocol(runner.server), host, port)
        except (OSError, UnicodeError) as err:   # in use, not ours, or a name that does not resolve
            await runner.cleanup()
            reason = getattr(err, "strerror", None) or err
            raise ServeError(f"cannot listen on {host}:{port} ({reason})") from None
        return runner, listener

    async def _shutdown(self, app) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _refusals(self, request, handler):
        self.guard.headers_arrived(request.transport)
        try:
            return await handler(request)
        except Refusal as err:
            log.info("refused %s %s: %s", request.method, request.path, err)
            return web.json_response({"error": str(err)}, status=err.status)

    @web.middleware
    async def _host_check(self, request, handler):
        """Only names this server answers to: a page on another name that resolves here
        (DNS rebinding) would otherwise pass the origin check as 'same origin'."""
        name = host_name(request.headers.get("Host", ""))
        if not self.host_allowed(name):
            raise Refusal(f"host {_shown(name)} is not served here; start the server with --allow-host {name} "
                          "to serve it under that name", status=403)
        return await handler(request)

    def host_allowed(self, name: str) -> bool:
        allowed = self.limits.allowed_hosts
        return is_loopback(name) or ANY in allowed or name in (h.lower() for h in allowed)

    @web.middleware
    async def _origin_check(self, request, handler):
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(request, origin):
            raise Refusal(f"origin {_shown(origin)} may not use this server; start it with --allow-origin "
                          f"{origin} to allow it", status=403)
        return await handler(request)

    def origin_allowed(self, request, origin: str) -> bool:
        """Same-origin pages always; others only when listed (browsers send Origin, scripts need not)."""
        own = f"{request.scheme}://{request.host}"
        allowed = self.limits.allowed_origins
        return origin == own or ANY in allowed or origin in allowed

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
            raise Refusal(f"reference avatar comes as .glb or .vrm, not .{_shown(ext)}", status=404)
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
        with self._session_slot(request.remote), tempfile.TemporaryDirectory(prefix="talkmotion-upload-") as tmp:
            name, options = await self._receive_upload(request, Path(tmp))
            frames = await self.compute(self._animate_upload, Path(tmp) / "upload", name, options)
        return web.json_response(frames.to_json())

    def _animate_upload(self, path: Path, name: str, options: PostOptions) -> Frames:
        """Decode and animate in one stream: memory holds one second of audio, never the file."""
        limit = self.limits.max_session_seconds
        try:
            frames = animate_chunks(self.model, iter_audio(path, max_seconds=limit), options)
        except AudioTooLong as err:
            raise Refusal(str(err).replace(str(path), name), status=413) from None
        except AudioError as err:
            raise Refusal(str(err).replace(str(path), name)) from None
        if frames.seconds == 0:
            raise Refusal(f"{name}: contains no audio samples")
        return frames

    async def _receive_upload(self, request, folder: Path) -> tuple[str, PostOptions]:
        """The uploaded file into folder/upload (under the size limit and deadlines); its name and options."""
        limit = self.limits.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refusal(f"upload of {request.content_length} bytes is over the limit of {limit} bytes", status=413)
        deadline = time.monotonic() + self.limits.body_seconds
        target = folder / "upload"
        options: dict = {}
        if request.content_type.startswith("multipart/"):
            reader = await self._in_time(request.multipart(), deadline, "upload")
            name, size = "upload", None
            while (part := await self._in_time(reader.next(), deadline, name)) is not None:
                if part.name == "file":
                    name = _upload_name(part.filename) or name
                    size = await self._save_capped(part, target, deadline, name)
                elif part.name == "options":
                    text = (await self._read_capped(part, deadline, "upload options")).decode("utf-8", "replace")
                    options = parse_options(parse_json(text or "{}", "upload options"), "upload options")
            if size is None:
                raise Refusal("multipart upload has no 'file' field")
        else:
            name = _upload_name(request.query.get("name", "upload")) or "upload"
            size = await self._save_capped(request.content, target, deadline, name)
        if not size:
            raise Refusal(f"{name}: the upload is empty")
        return name, post_options(options, "upload options")

    async def _save_capped(self, stream, target: Path, deadline: float, name: str) -> int:
        """Copy a body or multipart part to `target`, refusing it once it passes the size limit."""
        limit, size = self.limits.max_upload_bytes, 0
        with open(target, "wb") as f:
            async for chunk in self._chunks(stream, deadline, name):
                size += len(chunk)
                if size > limit:
                    raise Refusal(f"{name}: upload is over the limit of {limit} bytes", status=413)
                f.write(chunk)
        return size

    async def _read_capped(self, stream, deadline: float, name: str, limit: int = 2**16) -> bytes:
        parts, size = [], 0
        async for chunk in self._chunks(stream, deadline, name):
            size += len(chunk)
            if size > limit:
                raise Refusal(f"{name}: over the limit of {limit} bytes", status=413)
            parts.append(chunk)
        return b"".join(parts)

    async def _chunks(self, stream, deadline: float, name: str):
        """A body's pieces as they arrive, each within the read timeout and all before the deadline."""
        read = stream.read_chunk if isinstance(stream, BodyPartReader) else stream.read
        while chunk := await self._in_time(read(UPLOAD_CHUNK), deadline, name):
            yield chunk

    async def _in_time(self, awaitable, deadline: float, name: str):
        limits = self.limits
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(awaitable, min(limits.read_seconds, max(left, 0.0)))
        except asyncio.TimeoutError:
            why = (f"nothing arrived for {limits.read_seconds:g} s" if left > limits.read_seconds
                   else f"it did not arrive within {limits.body_seconds:g} s")
            raise Refusal(f"{name}: upload abandoned, {why}", status=408) from None

    async def websocket(self, request):
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=2 * self.limits.max_message_bytes)
        await ws.prepare(request)
        try:
            with self._session_slot(request.remote):
                await ws.send_str(hello_message(self.fps, self.latency_ms, self.model_name))
                await Session(self, ws).run()
        except Refusal as err:   # busy: told in words, then closed
            await ws.send_str(error_message(str(err)))
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"server busy")
        except ConnectionError as err:
            log.info("WebSocket client went away mid-stream: %s", err)  # nothing left to tell it
        return ws

    @contextlib.contextmanager
    def _session_slot(self, client: str | None):
        """Count an upload or a WebSocket as a session while it runs; refuse when the server,
        or this client's share of it, is full."""
        limits, client = self.limits, client or "?"
        if self.sessions >= limits.max_sessions:
            raise Refusal(f"server busy: {self.sessions} sessions are running (limit "
                          f"{limits.max_sessions}); try again later", status=503)
        if self.sessions_by_client[client] >= limits.max_sessions_per_client:
            raise Refusal(f"server busy: this address already has {self.sessions_by_client[client]} sessions "
                          f"(limit {limits.max_sessions_per_client} per client); try again later", status=503)
        self.sessions += 1
        self.sessions_by_client[client] += 1
        try:
            yield
        finally:
            self.sessions -= 1
            self.sessions_by_client[client] -= 1
            if not self.sessions_by_client[client]:
                del self.sessions_by_client[client]


def _upload_name(name: str | None) -> str:
    """An uploaded file's name as messages quote it: its last path part, short and printable."""
    name = Path(str(name or "").replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:80]


# --- command ----------------------------------------------------------------

# Flags for the numeric limits: (flag, ServeLimits field, type, units per field unit, help).
LIMIT_FLAGS = (
    ("--max-sessions", "max_sessions", int, 1, "concurrent streaming sessions and uploads"),
    ("--max-sessions-per-client", "max_sessions_per_client", int, 1, "... of them from one client address"),
    ("--max-upload-mb", "max_upload_bytes", float, 2**20, "largest accepted upload, MiB"),
    ("--max-audio-seconds", "max_session_seconds", float, 1, "audio per upload or WebSocket utterance"),
    ("--max-rate", "max_messages_per_second", float, 1, "WebSocket messages per second per client"),
    ("--idle-timeout", "idle_seconds", float, 1, "close a WebSocket session after this many seconds with no "
                                                 "message and no work"),
    ("--header-timeout", "header_seconds", float, 1, "seconds a request's line and headers may take"),
    ("--read-timeout", "read_seconds", float, 1, "seconds an upload may pause between pieces"),
    ("--body-timeout", "body_seconds", float, 1, "seconds a whole upload may take"),
)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")   # listen on every interface


def add_arguments(parser) -> None:
    from .runtime import add_backend_argument, model_argument_help

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--model", help=model_argument_help())
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="also accept browser pages from ORIGIN (e.g. http://localhost:5173); '*' = any")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to NAME (Host header), e.g. a LAN name; "
                             "loopback names and addresses are always allowed; '*' = any")
    defaults = ServeLimits()
    for flag, field, kind, unit, text in LIMIT_FLAGS:
        default = getattr(defaults, field) / unit
        parser.add_argument(flag, type=kind, default=kind(default), help=f"{text} (default {default:g})")
    add_backend_argument(parser)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="threads per computation; sessions already run in parallel")


def limits_from_args(args) -> ServeLimits:
    """ServeLimits from the command line; ServeError naming the flag for a value it cannot take."""
    values = {}
    for flag, field, kind, unit, _ in LIMIT_FLAGS:
        given = getattr(args, flag[2:].replace("-", "_"))
        if not (math.isfinite(given) and given > 0):
            raise ServeError(f"{flag} {given}: must be a positive number")
        values[field] = int(given * unit) if field == "max_upload_bytes" else given
    hosts = list(args.allow_host)
    if args.host not in WILDCARD_HOSTS:
        hosts.append(host_name(args.host))   # the address it listens on is its own name
    return ServeLimits(**values, allowed_origins=tuple(args.allow_origin), allowed_hosts=tuple(hosts))


def run(args) -> int:
    from .runtime import load_model

    if not 0 < args.port < 2**16:
        raise ServeError(f"--port {args.port}: a port is 1..65535")
    if args.torch_threads < 1:
        raise ServeError(f"--torch-threads {args.torch_threads}: must be at least 1")
    limits = limits_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="talkmotion serve: %(message)s")
    logging.getLogger("talkmotion").setLevel(logging.INFO)  # refusals and dropped clients, one line each
    server = TalkServer(load_model(args.model, args.backend, args.torch_threads), limits)
    try:
        asyncio.run(_serve_forever(server, args.host, args.port))
    except KeyboardInterrupt:
        print("talkmotion serve: stopped", file=sys.stderr)
    return 0


async def _serve_forever(server: TalkServer, host: str, port: int) -> None:
    runner, listener = await server.listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"talkmotion serve: http://{shown}:{port}/", file=sys.stderr)
    if host in WILDCARD_HOSTS and not server.limits.allowed_hosts:
        print("talkmotion serve: listening on every interface, but only loopback names are answered; "
              "add --allow-host NAME for each name or address clients use", file=sys.stderr)
    try:
        await asyncio.Event().wait()   # until interrupted
    finally:
        listener.close()
        await runner.cleanup()
