"""A real `talkmotion serve` process on loopback under hostile clients (issue 13, server items).

Each attack runs against the server as users start it, with short timeouts so that every
loop here ends by itself within seconds: a WAV header that lies about its sample rate,
clients that hold sessions and connections without using them, a Host header from a
rebinding DNS name, and malformed options and JSON. Attackers connect from 127.0.0.2 or
127.0.0.3 (Linux routes all of 127/8 to loopback) so that the per-address limits can be
told apart from the honest client on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from talkmotion.audio import SAMPLE_RATE, num_frames

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
HONEST, ATTACKER, FLOODER = "127.0.0.1", "127.0.0.2", "127.0.0.3"
LIMITS = {"--max-sessions": 4, "--max-sessions-per-client": 2, "--idle-timeout": 2, "--header-timeout": 1.5,
          "--read-timeout": 1, "--body-timeout": 4, "--max-audio-seconds": 60}
EXTRA_HOST = "talk.example"
WAIT_S = 15           # the longest any single wait below may take before the test fails
MAX_GROWTH_MB = 100   # what one hostile upload may add to the server's peak memory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """`talkmotion serve` with the default model and short limits; yields (url, pid, log lines)."""
    port = free_port()
    cmd = [sys.executable, "-m", "talkmotion.cli", "serve", "--port", str(port), "--allow-host", EXTRA_HOST]
    for flag, value in LIMITS.items():
        cmd += [flag, str(value)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/api/info", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"serve did not start: {proc.stderr.read()}") from None
            time.sleep(0.2)
    yield url, proc.pid
    proc.terminate()
    proc.wait(10)


def info(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/info", timeout=5) as resp:
        return json.load(resp)


def wait_until(condition, what: str, seconds: float = WAIT_S):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def speech_like(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def wav_bytes(pcm: np.ndarray, claimed_rate: int | None = None) -> bytes:
    """A 16 kHz 16-bit WAV; with `claimed_rate` its header states that rate instead (a lie)."""
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if claimed_rate is not None:
        fmt = data.find(b"fmt ")
        struct.pack_into("<II", data, fmt + 12, claimed_rate, claimed_rate * 2)   # rate, bytes per second
    return bytes(data)


def session(local: str = HONEST) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local, 0), force_close=True),
                                 timeout=aiohttp.ClientTimeout(total=2 * WAIT_S))


async def post_file(url: str, data: bytes, name: str = "x.wav", options: str | None = None, local: str = HONEST):
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="audio/wav")
    if options is not None:
        form.add_field("options", options)
    async with session(local) as http, http.post(url + "/api/animate", data=form) as resp:
        return resp.status, await resp.json()


async def stream_ok(url: str, seconds: float = 1.0, local: str = HONEST) -> int:
    """An honest WebSocket client: frames for `seconds` of audio; returns the frame count."""
    pcm = speech_like(seconds)
    async with session(local) as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        hello = json.loads((await ws.receive(timeout=WAIT_S)).data)
        assert hello["type"] == "hello", hello
        await ws.send_bytes(pcm.astype("<f4").tobytes())
        await ws.send_str(json.dumps({"type": "end"}))
        count = 0
        while True:
            msg = json.loads((await ws.receive(timeout=WAIT_S)).data)
            if msg["type"] == "frames":
                count += len(msg["values"])
            elif msg["type"] == "end":
                return count
            else:
                raise AssertionError(msg)


# --- 1. memory: a header that lies ------------------------------------------------------------

def test_a_lying_sample_rate_is_refused_before_decoding(server):
    """6 s of 16 kHz audio whose header says 8 Hz claims 3.3 hours: 768 MB once resampled."""
    url, pid = server
    before = peak_rss_mb(pid)
    status, reply = asyncio.run(post_file(url, wav_bytes(speech_like(6.0), claimed_rate=8), "liar.wav"))
    assert status == 400
    assert reply["error"].startswith("liar.wav:") and "sample rate 8 Hz" in reply["error"]
    assert peak_rss_mb(pid) - before < MAX_GROWTH_MB
    assert asyncio.run(stream_ok(url)) == num_frames(SAMPLE_RATE)   # and it still serves


def test_a_header_declaring_too_much_audio_is_refused_before_decoding(server):
    """A plausible rate (4 kHz) on 16 kHz samples: 100 s declared, over the 60 s limit."""
    url, pid = server
    before = peak_rss_mb(pid)
    status, reply = asyncio.run(post_file(url, wav_bytes(speech_like(25.0), claimed_rate=4000), "long.wav"))
    assert status == 413 and "long.wav: its header declares 100 s" in reply["error"]
    assert "over the limit of 60 s" in reply["error"]
    assert peak_rss_mb(pid) - before < MAX_GROWTH_MB


# --- 2. lock-out ------------------------------------------------------------------------------

async def hold_idle_websockets(url: str, count: int, local: str) -> list:
    """Open `count` WebSockets that never send anything; the replies each one got."""
    http = session(local)
    sockets, replies = [], []
    for _ in range(count):
        ws = await http.ws_connect(url.replace("http", "ws") + "/ws")
        replies.append(json.loads((await ws.receive(timeout=WAIT_S)).data))
        sockets.append(ws)
    return http, sockets, replies


def stalled_upload(port: int, local: str) -> socket.socket:
    """An upload that announces 100 kB, sends 4 bytes and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(local, 0))
    sock.sendall(b"POST /api/animate?name=x.wav HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                 b"Content-Length: 100000\r\n\r\nRIFF")
    return sock


def slow_headers(port: int, local: str) -> socket.socket:
    """A request whose headers never finish (slowloris)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(local, 0))
    sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: ")
    return sock


def reply_of(sock: socket.socket) -> bytes:
    """Whatever the server sends before it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass   # closed with a reset: what came before it is the reply
    return data


@pytest.mark.slow
def test_one_client_cannot_lock_everyone_out(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])

    async def attack_and_serve():
        http, sockets, replies = await hold_idle_websockets(url, 8, ATTACKER)
        try:
            held = sum(r["type"] == "hello" for r in replies)
            # an honest client is served at once, while the attacker still holds its share
            frames = await stream_ok(url, 1.0, HONEST)
            # the idle sockets are closed by the server, with a reason
            closes = [await ws.receive(timeout=WAIT_S) for ws, r in zip(sockets, replies) if r["type"] == "hello"]
            return held, replies, frames, closes
        finally:
            await http.close()

    held, replies, frames, closes = asyncio.run(attack_and_serve())
    assert held == LIMITS["--max-sessions-per-client"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(refused) == 8 - held and all("limit 2 per client" in r["message"] for r in refused)
    assert frames == num_frames(SAMPLE_RATE)
    assert all(c.type == aiohttp.WSMsgType.CLOSE and c.data == aiohttp.WSCloseCode.GOING_AWAY
               and "idle" in c.extra for c in closes)
    wait_until(lambda: info(url)["sessions"] == 0, "the idle sessions' slots come back")

    # uploads that stall after 4 bytes: refused with 408 once the read timeout passes
    stalled = [stalled_upload(port, ATTACKER) for _ in range(2)]
    assert asyncio.run(stream_ok(url, 1.0, HONEST)) == num_frames(SAMPLE_RATE)
    for sock in stalled:
        with sock:
            reply = reply_of(sock)
        assert reply.startswith(b"HTTP/1.1 408") and b"upload abandoned, nothing arrived for 1 s" in reply
    wait_until(lambda: info(url)["sessions"] == 0, "the stalled uploads' slots come back")

    # headers that never end: the connection is dropped once the header deadline passes
    slow = [slow_headers(port, ATTACKER) for _ in range(3)]
    for sock in slow:
        with sock:
            assert reply_of(sock) == b""
    assert asyncio.run(stream_ok(url, 1.0, HONEST)) == num_frames(SAMPLE_RATE)


@pytest.mark.slow
def test_a_trickled_upload_meets_the_body_deadline(server):
    """One byte every half second never trips the read timeout; the whole-body deadline ends it."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    sock = stalled_upload(port, ATTACKER)
    with sock:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            sock.sendall(b"\0")
            if select.select([sock], [], [], 0.5)[0]:   # the server has answered
                break
        reply = reply_of(sock)
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 4 s" in reply


def test_connections_per_address_are_capped(server):
    """A flood of bare connections from one address: the surplus is turned away at once,
    the rest closed at the header deadline, and other addresses are served throughout."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    flood = [socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(FLOODER, 0))
             for _ in range(40)]
    try:
        assert asyncio.run(stream_ok(url, 1.0, HONEST)) == num_frames(SAMPLE_RATE)
        replies = [reply_of(sock) for sock in flood]
    finally:
        for sock in flood:
            sock.close()
    turned_away = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
    assert len(turned_away) == 40 - 32 and all(b"too many connections" in r for r in turned_away)
    assert all(r == b"" for r in replies if r not in turned_away)    # closed at the deadline


# --- 3. Host header ---------------------------------------------------------------------------

def raw_request(port: int, host: str, path: str = "/api/info", extra: str = "") -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        data = reply_of(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def test_rebinding_host_names_are_refused(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    evil = f"evil.example:{port}"
    status, body = raw_request(port, evil, extra=f"Origin: http://{evil}\r\n")
    assert status == 403 and "host 'evil.example' is not served here" in body and "--allow-host" in body
    ws_upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    assert raw_request(port, evil, "/ws", extra=ws_upgrade + f"Origin: http://{evil}\r\n")[0] == 403
    assert raw_request(port, evil, "/static/viewer.js")[0] == 403
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{EXTRA_HOST}:{port}",
                 f"127.0.0.5:{port}"):
        assert raw_request(port, good)[0] == 200, good
    assert raw_request(port, f"{EXTRA_HOST}:{port}", extra=f"Origin: http://{EXTRA_HOST}:{port}\r\n")[0] == 200


# --- 4. replies that say what was wrong -------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ("{not json", "upload options: must be JSON"),
    ('{"seed": -1}', "--seed must be a finite number within 0..4294967295, got -1"),
    ('{"mouth_gain": 1e308}', "--mouth-gain must be a finite number within 0..10"),
    ("[" * 100_000 + "]" * 100_000, "over the limit of 65536 bytes"),
    ("[" * 30_000 + "]" * 30_000, "upload options: JSON nested too deeply"),
])
def test_bad_upload_options_get_a_4xx_that_says_why(server, options, expected):
    url, _ = server
    status, reply = asyncio.run(post_file(url, wav_bytes(speech_like(0.5)), options=options))
    assert 400 <= status < 500 and expected in reply["error"]


@pytest.mark.parametrize("message, expected", [
    ("[" * 30_000 + "]" * 30_000, "JSON nested too deeply"),
    ('{"type": "start", "options": {"seed": -1}}', "--seed must be a finite number within"),
    ('{"type": "start", "options": {"blinks": ["on"]}}', "'blinks' must be one of auto, on, off"),
    ('{"type": "options", "options": {"mouth_gain": 1e308}}', "--mouth-gain must be a finite number within"),
])
def test_bad_websocket_messages_close_with_a_reason(server, message, expected):
    url, _ = server

    async def go():
        async with session() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await ws.receive(timeout=WAIT_S)
            await ws.send_str(message)
            reply = json.loads((await ws.receive(timeout=WAIT_S)).data)
            return reply, await ws.receive(timeout=WAIT_S)

    reply, closing = asyncio.run(go())
    assert reply["type"] == "error" and expected in reply["message"]
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data != aiohttp.WSCloseCode.ABNORMAL_CLOSURE
    assert expected.split(" within")[0][:40] in closing.extra


def test_cancel_drops_queued_audio(server):
    """30 s of audio queued, then 'cancel': the answer comes before the old audio is computed,
    and the next utterance starts from frame 0."""
    url, _ = server

    async def go():
        async with session() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await ws.receive(timeout=WAIT_S)
            pcm = speech_like(30.0)
            for i in range(0, pcm.size, SAMPLE_RATE):
                await ws.send_bytes(pcm[i:i + SAMPLE_RATE].astype("<f4").tobytes())
            await ws.send_str(json.dumps({"type": "cancel"}))
            old_frames = 0
            while (msg := json.loads((await ws.receive(timeout=WAIT_S)).data))["type"] != "cancelled":
                assert msg["type"] == "frames", msg
                old_frames += len(msg["values"])
            await ws.send_bytes(speech_like(1.0).astype("<f4").tobytes())
            await ws.send_str(json.dumps({"type": "end"}))
            new = []
            while (msg := json.loads((await ws.receive(timeout=WAIT_S)).data))["type"] != "end":
                new.append(msg)
            return old_frames, new, msg

    old_frames, new, end = asyncio.run(go())
    assert old_frames < num_frames(30 * SAMPLE_RATE) / 2      # most of the old audio was never computed
    assert new[0]["start"] == 0 and end["frames"] == num_frames(SAMPLE_RATE)


# --- 12/13. the command line ------------------------------------------------------------------

def serve_error(*args: str) -> str:
    """Run `talkmotion serve ARGS`, expecting a one-line error; the line."""
    run = subprocess.run([sys.executable, "-m", "talkmotion.cli", "serve", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    return run.stderr.strip().splitlines()[-1]


def test_serve_flags_and_addresses_get_one_line_errors():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_error("--port", str(port))
    assert line.startswith(f"talkmotion serve: error: cannot listen on 127.0.0.1:{port}")
    assert "in use" in line
    assert "--port 70000: a port is 1..65535" in serve_error("--port", "70000")
    assert "--max-sessions -1: must be a positive number" in serve_error("--max-sessions", "-1")
    assert "--max-upload-mb -5.0: must be a positive number" in serve_error("--max-upload-mb", "-5")
    assert "cannot listen on no such host.invalid:8123" in serve_error("--host", "no such host.invalid", "--port", "8123")
