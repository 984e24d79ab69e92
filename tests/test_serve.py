"""`talkmotion serve` on a real loopback port: streaming, uploads, limits and bad clients."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import struct
import threading
import time

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE, num_frames
from talkmotion.frames import Frames
from talkmotion.postprocess import PostOptions
from talkmotion.serve import ServeLimits, TalkServer
from talkmotion.animate import animate_pcm

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

SECONDS = 1.2


class RunningServer:
    """A TalkServer listening on 127.0.0.1:<free port> in a thread of its own."""

    def __init__(self, server: TalkServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start():
            self.runner, self.listener = await server.listen("127.0.0.1", 0)
            self.port = self.listener.sockets[0].getsockname()[1]

        def serve():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10), "server did not start"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def close(self):
        async def stop():
            self.listener.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def web_root(tmp_path):
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>viewer</title>")
    (root / "viewer.js").write_text("console.log('viewer')")
    (tmp_path / "secret.txt").write_text("do not serve")
    return root


@pytest.fixture
def make_server(tiny_runtime, web_root):
    running = []

    def make(**limits):
        r = RunningServer(TalkServer(tiny_runtime, ServeLimits(**limits), web_root=web_root, workers=2))
        running.append(r)
        return r

    yield make
    for r in running:
        r.close()


def speech_like(seconds: float = SECONDS, seed: int = 0) -> np.ndarray:
    """Noise shaped by a 4 Hz syllable envelope: varied enough to move a random model."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.3 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


def wav_bytes(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def stream_session(url: str, pcm: np.ndarray, chunk: int = 3000, start: dict | None = None,
                         headers: dict | None = None) -> tuple[list[dict], dict]:
    """Stream pcm (f32le) and collect the frames messages and the end message."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello["type"] == "hello"
        if start is not None:
            await ws.send_str(json.dumps({"type": "start", **start}))
        for i in range(0, pcm.size, chunk):
            await ws.send_bytes(pcm[i:i + chunk].astype("<f4").tobytes())
        await ws.send_str(json.dumps({"type": "end"}))
        frames = []
        while True:
            msg = json.loads((await ws.receive(timeout=30)).data)
            if msg["type"] == "frames":
                frames.append(msg)
            elif msg["type"] == "end":
                return frames, msg
            else:
                raise AssertionError(f"unexpected message {msg}")


def rows(messages: list[dict]) -> np.ndarray:
    starts = [m["start"] for m in messages]
    lengths = [len(m["values"]) for m in messages]
    assert starts == list(np.cumsum([0] + lengths[:-1])), "frames must arrive in order, without gaps"
    return np.concatenate([np.asarray(m["values"], np.float32) for m in messages])


def offline(model, pcm: np.ndarray, options: PostOptions | None = None) -> np.ndarray:
    return animate_pcm(model, pcm, options).values


def test_streaming_session_matches_offline(make_server, tiny_runtime):
    r = make_server()
    pcm = speech_like()
    messages, end = asyncio.run(stream_session(r.ws_url, pcm))
    got = rows(messages)
    assert got.shape == (num_frames(pcm.size), labels.NUM_CHANNELS)
    assert end["frames"] == got.shape[0] and end["duration"] == pytest.approx(SECONDS)
    np.testing.assert_allclose(got, offline(tiny_runtime, pcm), atol=2e-4)  # 4-decimal JSON rounding
    presets = np.concatenate([np.asarray(m["presets"]) for m in messages])
    assert presets.shape == (got.shape[0], len(labels.VRM_PRESETS))


def test_info_lists_controls_and_channels(make_server):
    r = make_server()

    async def go():
        async with aiohttp.ClientSession() as http, http.get(r.url + "/api/info") as resp:
            return resp.status, await resp.json()

    status, info = asyncio.run(go())
    assert status == 200
    assert info["blendshapes"] == list(labels.BLENDSHAPES) and info["head"] == list(labels.HEAD)
    names = [c["name"] for c in info["controls"]]
    assert "mouth_gain" in names and "head_scale" in names and "blinks" in names
    assert info["limits"]["max_sessions"] == ServeLimits().max_sessions


def test_upload_returns_frames_file(make_server, tiny_runtime):
    r = make_server()
    pcm = speech_like(0.8)

    async def go():
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm), filename="speech.wav", content_type="audio/wav")
        async with aiohttp.ClientSession() as http, http.post(r.url + "/api/animate", data=form) as resp:
            return resp.status, await resp.json()

    status, obj = asyncio.run(go())
    assert status == 200 and obj["format"] == "talkmotion.frames"
    frames = Frames.from_json(obj)
    sent, _ = sf.read(io.BytesIO(wav_bytes(pcm)), dtype="float32")  # what the 16-bit file holds
    np.testing.assert_allclose(frames.values, offline(tiny_runtime, sent), atol=2e-5)  # 5-decimal JSON
    assert frames.seconds == pytest.approx(0.8)


def test_upload_refusals_say_why(make_server):
    r = make_server(max_upload_bytes=10_000)

    async def post(data):
        async with aiohttp.ClientSession() as http, http.post(r.url + "/api/animate?name=x.wav", data=data) as resp:
            return resp.status, (await resp.json())["error"]

    status, message = asyncio.run(post(b"\0" * 20_000))
    assert status == 413 and "over the limit of 10000 bytes" in message
    status, message = asyncio.run(post(b"this is not audio at all" * 10))
    assert status == 400 and message.startswith("x.wav:") and "readable" in message
    status, message = asyncio.run(post(b""))
    assert status == 400 and "empty" in message


def test_other_origins_are_refused(make_server):
    r = make_server()

    async def go(origin):
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(r.ws_url, headers={"Origin": origin}) as ws:
                    return "open", json.loads((await ws.receive()).data)["type"]
            except aiohttp.WSServerHandshakeError as err:
                return err.status, None

    assert asyncio.run(go("http://evil.example")) == (403, None)
    assert asyncio.run(go(r.url)) == ("open", "hello")

    async def message():
        async with aiohttp.ClientSession() as http, \
                http.get(r.url + "/api/info", headers={"Origin": "http://evil.example"}) as resp:
            return resp.status, (await resp.json())["error"]

    status, text = asyncio.run(message())
    assert status == 403 and "origin 'http://evil.example'" in text and "--allow-origin" in text


def raw_get(port: int, path: str) -> tuple[int, str]:
    """GET `path` exactly as written: no client-side normalisation of '..'."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def test_static_serving_stays_inside_the_viewer(make_server):
    r = make_server()
    assert raw_get(r.port, "/static/viewer.js") == (200, "console.log('viewer')")
    assert raw_get(r.port, "/")[0] == 200
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/./../secret.txt",
                 "/static/..%2fsecret.txt", "/static/%2fetc%2fpasswd", "/static/sub/..%5c..%5csecret.txt"):
        status, text = raw_get(r.port, path)
        assert status == 403, path
        assert "not a path inside the viewer" in text and "do not serve" not in text
    status, text = raw_get(r.port, "/static/missing.js")
    assert status == 404 and "no such file" in text


def test_busy_server_refuses_with_a_message(make_server):
    r = make_server(max_sessions=1)

    async def go():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(r.ws_url) as first:
                assert json.loads((await first.receive()).data)["type"] == "hello"
                async with http.ws_connect(r.ws_url) as second:
                    refusal = json.loads((await second.receive()).data)
                    closed = await second.receive()
            # the first session is over: there is room again
            async with http.ws_connect(r.ws_url) as third:
                again = json.loads((await third.receive()).data)
        return refusal, closed, again

    refusal, closed, again = asyncio.run(go())
    assert refusal["type"] == "error" and "server busy" in refusal["message"] and "limit 1" in refusal["message"]
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert again["type"] == "hello"


def test_message_rate_is_limited(make_server):
    r = make_server(max_messages_per_second=5, message_burst=3)

    async def go():
        async with aiohttp.ClientSession() as http, http.ws_connect(r.ws_url) as ws:
            await ws.receive()
            for _ in range(10):
                await ws.send_bytes(np.zeros(160, "<f4").tobytes())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                    return json.loads(msg.data)["message"]
        return None

    assert "more than 5 messages per second" in asyncio.run(go())


@pytest.mark.parametrize("send, expected", [
    (lambda ws: ws.send_str("hello?"), "must be JSON"),
    (lambda ws: ws.send_str('{"type": "dance"}'), "unknown message type 'dance'"),
    (lambda ws: ws.send_bytes(np.full(100, np.nan, "<f4").tobytes()), "NaN"),
    (lambda ws: ws.send_str('{"type": "start", "options": {"mouth_gian": 2}}'), "unknown option 'mouth_gian'"),
    (lambda ws: ws.send_str('{"type": "start", "sample_rate": 44100}'), "16000 Hz"),
    (lambda ws: ws.send_bytes(b"\0" * 5000), "over the limit of 4096"),
    (lambda ws: ws.send_bytes(b"\0" * 7), "7 bytes is not a whole number of 4-byte f32le samples"),
])
def test_garbage_gets_a_message_and_others_keep_being_served(make_server, send, expected):
    r = make_server(max_message_bytes=4096)
    pcm = speech_like(0.5)

    async def go():
        async with aiohttp.ClientSession() as http, http.ws_connect(r.ws_url) as bad:
            await bad.receive()
            good = asyncio.create_task(stream_session(r.ws_url, pcm, chunk=1000))
            await send(bad)
            reply = json.loads((await bad.receive(timeout=10)).data)
            closing = await bad.receive(timeout=10)
            return reply, closing, await good

    reply, closing, (messages, end) = asyncio.run(go())
    assert reply["type"] == "error" and expected in reply["message"]
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert end["frames"] == num_frames(pcm.size) == rows(messages).shape[0]


def test_client_vanishing_mid_stream_leaves_server_healthy(make_server, tiny_runtime):
    r = make_server(max_sessions=2)
    pcm = speech_like(0.6)

    def vanish():
        """Open a WebSocket by hand, send half a stream, then reset the connection: no close handshake."""
        sock = socket.create_connection(("127.0.0.1", r.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        payload = pcm[:4000].astype("<f4").tobytes()
        # binary frame, masked (clients must mask) with an all-zero key, 16-bit length
        sock.sendall(bytes([0x82, 0x80 | 126]) + struct.pack(">H", len(payload)) + b"\0\0\0\0" + payload)
        time.sleep(0.2)  # let the server start on it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        sock.close()

    vanish()
    for _ in range(3):  # more sessions than the limit: the vanished one's slot came back
        messages, end = asyncio.run(stream_session(r.ws_url, pcm))
        np.testing.assert_allclose(rows(messages), offline(tiny_runtime, pcm), atol=2e-4)
    deadline = time.monotonic() + 10    # the last session's slot is freed just after its reply is sent
    while r.server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.server.sessions == 0


def test_controls_change_mid_stream(make_server):
    r = make_server()
    pcm = speech_like(1.0)
    mouth = labels.indices(labels.MOUTH)

    async def go():
        async with aiohttp.ClientSession() as http, http.ws_connect(r.ws_url) as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"type": "start", "options": {"mouth_gain": 1.0, "blinks": "off"}}))
            await ws.send_bytes(pcm[:8000].astype("<f4").tobytes())
            first = json.loads((await ws.receive()).data)
            await ws.send_str(json.dumps({"type": "options", "options": {"mouth_gain": 0.0}}))
            await ws.send_bytes(pcm[8000:].astype("<f4").tobytes())
            second = json.loads((await ws.receive()).data)
            await ws.send_str(json.dumps({"type": "options", "options": {"blinks": "on"}}))
            refusal = json.loads((await ws.receive()).data)
            return first, second, refusal

    first, second, refusal = asyncio.run(go())
    assert np.abs(np.asarray(first["values"])[:, mouth]).max() > 0
    assert np.abs(np.asarray(second["values"])[:, mouth]).max() == 0
    assert refusal["type"] == "error" and "only be set in a 'start' message" in refusal["message"]
