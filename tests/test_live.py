"""`talkmotion stream` sources (stdin, WebSocket, microphone) and the WebSocket JSON frames sink."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from talkmotion import labels
from talkmotion.audio import num_frames
from talkmotion.live import SourceError, decode_pcm, mic_source, run_stream, stdin_source, websocket_source
from talkmotion.sinks.websocket import WebSocketBroadcastSink
from talkmotion.animate import animate_pcm
from talkmotion.stream import Animator

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 190 * t) * (1 - np.cos(2 * np.pi * 3 * t))).astype(np.float32)


async def collect(source) -> np.ndarray:
    return np.concatenate([chunk async for chunk in source])


class Trickle:
    """A pipe that hands over at most `piece` bytes per read, splitting samples."""

    def __init__(self, data: bytes, piece: int):
        self.data, self.piece = data, piece

    def read(self, size: int) -> bytes:
        out, self.data = self.data[:min(size, self.piece)], self.data[min(size, self.piece):]
        return out


def test_stdin_pcm_in_odd_pieces_gives_every_sample():
    pcm = tone(0.3)
    s16 = np.round(pcm * 32767).astype("<i2")
    got = asyncio.run(collect(stdin_source("s16le", stream=Trickle(s16.tobytes(), piece=333))))
    np.testing.assert_array_equal(got, s16.astype(np.float32) / 32768)
    f32 = asyncio.run(collect(stdin_source("f32le", stream=io.BytesIO(pcm.astype("<f4").tobytes()))))
    np.testing.assert_array_equal(f32, pcm)


def test_bad_pcm_is_refused_by_name():
    with pytest.raises(SourceError, match="stdin: unknown PCM format 'u8'"):
        decode_pcm(b"\0\0", "u8", "stdin")
    with pytest.raises(SourceError, match="stdin: 3 bytes is not a whole number of 2-byte s16le samples"):
        decode_pcm(b"\0\0\0", "s16le", "stdin")
    with pytest.raises(ValueError, match="ws://x: 1 samples are NaN"):
        decode_pcm(np.array([0.0, np.nan], "<f4").tobytes(), "f32le", "ws://x")


def test_missing_microphone_is_a_clear_error():
    async def go():
        async for _ in mic_source("no-such-microphone-xyz", seconds=0.1):
            pass

    with pytest.raises(SourceError, match="microphone no-such-microphone-xyz: cannot open"):
        asyncio.run(go())


def test_websocket_audio_in_json_frames_out(tiny_runtime):
    """Audio from a WebSocket server → the animator → WebSocket JSON frames to a web client."""
    pcm = tone(0.8)

    async def audio_server(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("greetings carry no audio")
        for i in range(0, pcm.size, 2500):
            await ws.send_bytes(pcm[i:i + 2500].astype("<f4").tobytes())
        await ws.close()
        return ws

    async def go():
        app = web.Application()
        app.router.add_get("/audio", audio_server)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        sink = WebSocketBroadcastSink("127.0.0.1:0")
        animator = Animator(tiny_runtime)
        sink.open(animator.fps, "tiny", animator.latency_ms)
        await sink.start()
        received = []
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{sink.port}/") as viewer:
            hello = json.loads((await viewer.receive()).data)
            stats = await run_stream(websocket_source(f"ws://127.0.0.1:{port}/audio", "f32le"), animator, [sink],
                                     realtime=False)
            sink.close()
            async for msg in viewer:
                received.append(json.loads(msg.data))
        await sink.stop()
        await runner.cleanup()
        return hello, received, stats

    hello, received, stats = asyncio.run(go())
    assert hello["type"] == "hello" and hello["blendshapes"] == list(labels.BLENDSHAPES)
    values = np.concatenate([np.asarray(m["values"], np.float32) for m in received if m["type"] == "frames"])
    assert stats.frames == values.shape[0] == num_frames(pcm.size)
    expected = animate_pcm(tiny_runtime, pcm).values
    np.testing.assert_allclose(values, expected, atol=2e-4)


def test_unreachable_websocket_source_names_the_url():
    with pytest.raises(SourceError, match=r"ws://127\.0\.0\.1:9/none: cannot connect"):
        asyncio.run(collect(websocket_source("ws://127.0.0.1:9/none")))


def test_websocket_viewer_leaving_mid_stream_does_not_disturb_others(tiny_runtime):
    pcm = tone(1.0)

    async def chunks():
        for i in range(0, pcm.size, 1600):
            yield pcm[i:i + 1600]
            await asyncio.sleep(0.01)

    async def go():
        sink = WebSocketBroadcastSink("127.0.0.1:0")
        animator = Animator(tiny_runtime)
        sink.open(animator.fps, "tiny", animator.latency_ms)
        await sink.start()
        url = f"ws://127.0.0.1:{sink.port}/"
        async with aiohttp.ClientSession() as http:
            stays = await http.ws_connect(url)
            leaves = await http.ws_connect(url)
            await stays.receive()
            await leaves.receive()

            async def leave_soon():
                await asyncio.sleep(0.2)
                await leaves.close()

            leaving = asyncio.create_task(leave_soon())
            await run_stream(chunks(), animator, [sink], realtime=False)
            await leaving
            sink.close()
            frames = [json.loads(m.data) async for m in stays]
            await stays.close()
        await sink.stop()
        return frames, len(sink.clients)

    frames, clients_left = asyncio.run(go())
    rows = sum(len(m["values"]) for m in frames)
    assert rows == num_frames(pcm.size) and clients_left == 0
