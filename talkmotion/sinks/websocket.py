"""WebSocket JSON frames for web clients: the message format, and a broadcast sink.

Server → client messages (one JSON object per text message):
  {"type": "hello", "fps": 30, "latency_ms": ms, "model": "...", "blendshapes": [52 ARKit names],
   "head": ["pitch", "yaw", "roll"], "presets": [VRM preset names]}
  {"type": "frames", "start": i, "values": [[52 weights, pitch, yaw, roll], ...],
   "presets": [[preset weights], ...]}          frame start+k is at time (start+k)/fps
  {"type": "end", "frames": n, "duration": s}   the stream is over
  {"type": "cancelled"}                         the client's cancel took effect: nothing after this
                                                belongs to the cancelled utterance
  {"type": "error", "message": "..."}           a refusal, in words
Names are sent once in `hello`; rows follow labels.CHANNELS. `presets` (labels.
VRM_PRESETS order) lets a viewer drive avatars without perfect sync without
knowing how presets are mixed.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np

from .. import labels
from ..frames import Frames, check_finite
from . import Sink
from .udp import SinkError, parse_address

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
DECIMALS = 4  # 1e-4 of a weight or a degree is far below anything visible
# Messages a slow client may have waiting before it is dropped: ~4 s at 30 fps
# when frames go one at a time. Holding more would show a stale face.
MAX_PENDING = 120
PRESET_NAMES = tuple(labels.VRM_PRESETS)


def hello_message(fps: float, latency_ms: float, model: str) -> str:
    return json.dumps({"type": "hello", "fps": fps, "latency_ms": round(float(latency_ms), 3), "model": model,
                       "blendshapes": list(labels.BLENDSHAPES), "head": list(labels.HEAD),
                       "presets": list(PRESET_NAMES)})


def frames_message(frames: Frames, presets: bool = True) -> str:
    """Frames → one "frames" message; rows rounded to DECIMALS. NonFiniteFramesError if a value is not finite."""
    check_finite(frames, "WebSocket frames message")
    msg = {"type": "frames", "start": int(frames.start),
           "values": np.round(frames.values.astype(np.float64), DECIMALS).tolist()}
    if presets:
        weights = labels.to_vrm_presets(np.clip(frames.blendshapes, 0.0, 1.0))
        table = np.stack([weights[n] for n in PRESET_NAMES], axis=-1) if len(frames) else np.zeros((0, 0))
        msg["presets"] = np.round(table.astype(np.float64), DECIMALS).tolist()
    return json.dumps(msg, separators=(",", ":"))


def end_message(frames: int, duration: float) -> str:
    return json.dumps({"type": "end", "frames": int(frames), "duration": round(float(duration), 6)})


def cancelled_message() -> str:
    return json.dumps({"type": "cancelled"})


def error_message(text: str) -> str:
    return json.dumps({"type": "error", "message": text})


class WebSocketBroadcastSink(Sink):
    """Serves ws://HOST:PORT/ and sends every frame to every connected client.

    Must be opened inside a running asyncio loop (`await start()` after `open`).
    A client that falls MAX_PENDING messages behind is told so and dropped;
    the others are not held back by it.
    """

    def __init__(self, address: str = f"127.0.0.1:{DEFAULT_PORT}"):
        self.host, self.port = parse_address(address, DEFAULT_PORT, "WebSocket", listen=True)
        self.clients: dict[object, asyncio.Queue] = {}
        self.runner = None
        self.hello = ""

    def open(self, fps: float, model: str = "", latency_ms: float = 0.0) -> None:
        super().open(fps, model, latency_ms)
        self.hello = hello_message(fps, latency_ms, model)

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self._client)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as err:
            await self.runner.cleanup()
            raise SinkError(f"WebSocket {self.host}:{self.port}: cannot listen ({err.strerror})") from None
        if self.port == 0:  # an ephemeral port was asked for: report the real one
            self.port = self.runner.addresses[0][1]

    async def _client(self, request):
        from aiohttp import web

        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(MAX_PENDING)
        self.clients[ws] = queue
        sender = asyncio.create_task(self._send_queued(ws, queue))
        try:
            async for _ in ws:  # clients send nothing; reading notices when one leaves
                pass
        finally:
            self.clients.pop(ws, None)
            sender.cancel()
        return ws

    async def _send_queued(self, ws, queue: asyncio.Queue) -> None:
        try:
            await ws.send_str(self.hello)
            while (text := await queue.get()) is not None:
                await ws.send_str(text)
        except ConnectionError:
            return  # the client went away; nothing to tell it
        await ws.close()

    def send(self, frames: Frames) -> None:
        if not len(frames):
            return
        text = frames_message(frames)
        for ws, queue in list(self.clients.items()):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("a WebSocket client fell %d messages behind; dropping it", MAX_PENDING)
                self.clients.pop(ws, None)
                _drain(queue)
                queue.put_nowait(error_message("you fell too far behind the stream; reconnect to resume"))
                queue.put_nowait(None)

    def close(self, duration: float | None = None) -> None:
        """End every client's stream after what it has been sent so far."""
        for queue in self.clients.values():
            if queue.full():
                queue.get_nowait()  # the oldest frame matters least
            queue.put_nowait(None)

    async def stop(self) -> None:
        """Stop listening, once the clients have their last frames."""
        if self.runner is not None:
            await asyncio.sleep(0)  # let client tasks send what they hold
            await self.runner.cleanup()
            self.runner = None

    abort = close


def _drain(queue: asyncio.Queue) -> None:
    while not queue.empty():
        queue.get_nowait()
