"""`talkmotion serve` under hostile clients: its memory peak and whether anyone is locked out.

Starts `talkmotion serve` (default model) in its own process on loopback, then:
  memory   POSTs WAV files whose headers lie (16 kHz samples with a header rate of 8 Hz or 1 Hz,
           claiming hours; 4 kHz, claiming more than the audio limit) and a legitimate upload,
           and reads the server's peak resident memory (VmHWM) before and after each, with
           the status and time of each reply;
  lock-out from 127.0.0.2 (Linux routes all of 127/8 to loopback) opens 8 idle WebSockets,
           8 uploads that stall after 4 bytes and 8 connections whose headers never end, while
           an honest client on 127.0.0.1 streams 2 s of audio; reports whether the honest
           client was served, how long its session took, and how long until the server had
           closed every attacker's session (idle / read / header timeouts, here shortened).

    .venv/bin/python bench/bench_serve_hostile.py [--idle 3 --read 2 --header 2]

Prints one JSON line per measurement and a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkmotion.audio import SAMPLE_RATE  # noqa: E402
from bench_serve import serve_process  # noqa: E402  (bench/ is this script's folder)

ATTACKER, HONEST = "127.0.0.2", "127.0.0.1"


def start_server(extra: list[str]) -> tuple[subprocess.Popen, str]:
    return serve_process(extra)


def peak_mb(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def speech(seconds: float) -> np.ndarray:
    from talkmotion.assets import SAMPLE_SPEECH
    from talkmotion.audio import load_audio

    base = load_audio(SAMPLE_SPEECH)
    return np.tile(base, int(np.ceil(seconds * SAMPLE_RATE / base.size)))[: int(seconds * SAMPLE_RATE)]


def wav(pcm: np.ndarray, claimed_rate: int | None = None) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if claimed_rate is not None:
        fmt = data.find(b"fmt ")
        struct.pack_into("<II", data, fmt + 12, claimed_rate, claimed_rate * 2)
    return bytes(data)


def post(url: str, data: bytes) -> tuple[int, float, str]:
    request = urllib.request.Request(url + "/api/animate?name=x.wav", data=data, method="POST",
                                     headers={"Content-Type": "audio/wav"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            resp.read()
            return resp.status, time.monotonic() - start, ""
    except urllib.error.HTTPError as err:
        return err.code, time.monotonic() - start, json.loads(err.read())["error"][:90]


def memory(url: str, pid: int) -> list[dict]:
    rows = []
    cases = [("6 s at 16 kHz, header says 8 Hz (claims 3.3 h)", wav(speech(6.0), 8)),
             ("6 s at 16 kHz, header says 1 Hz (claims 27 h)", wav(speech(6.0), 1)),
             ("25 s at 16 kHz, header says 4 kHz (claims 100 s; limit lowered to 60 s)", wav(speech(25.0), 4000)),
             ("honest upload: 60 s of speech", wav(speech(60.0)))]
    for name, data in cases:
        before = peak_mb(pid)
        status, took, message = post(url, data)
        rows.append({"upload": name, "bytes": len(data), "status": status, "reply_s": round(took, 2),
                     "peak_before_mb": round(before, 1), "peak_after_mb": round(peak_mb(pid), 1),
                     "message": message})
        print(json.dumps(rows[-1]), flush=True)
    return rows


async def honest_stream(url: str, seconds: float) -> tuple[int, float]:
    import aiohttp

    pcm = speech(seconds)
    start = time.monotonic()
    connector = aiohttp.TCPConnector(local_addr=(HONEST, 0))
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        hello = json.loads((await ws.receive(timeout=30)).data)
        if hello["type"] != "hello":
            return 0, time.monotonic() - start
        await ws.send_bytes(pcm.astype("<f4").tobytes())
        await ws.send_str(json.dumps({"type": "end"}))
        frames = 0
        while (msg := json.loads((await ws.receive(timeout=60)).data))["type"] != "end":
            frames += len(msg.get("values", []))
    return frames, time.monotonic() - start


async def lockout(url: str) -> dict:
    import aiohttp

    port = int(url.rsplit(":", 1)[1])
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ATTACKER, 0), limit=0))
    idle, held = [], 0
    for _ in range(8):
        ws = await http.ws_connect(url.replace("http", "ws") + "/ws")
        held += json.loads((await ws.receive(timeout=30)).data)["type"] == "hello"
        idle.append(ws)
    raw = []
    for k in range(16):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(ATTACKER, 0))
        sock.sendall(b"POST /api/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nRIFF" if k < 8
                     else b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: ")
        sock.setblocking(False)
        raw.append(sock)
    attack_start = time.monotonic()
    frames, took = await honest_stream(url, 2.0)
    closed_at = {}
    while len(closed_at) < len(idle) + len(raw) and time.monotonic() - attack_start < 300:
        for k, ws in enumerate(idle):
            if k not in closed_at and ws.closed:
                closed_at[k] = time.monotonic() - attack_start
        for k, sock in enumerate(raw):
            key = len(idle) + k
            if key in closed_at:
                continue
            try:
                if sock.recv(65536) == b"":
                    closed_at[key] = time.monotonic() - attack_start
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed_at[key] = time.monotonic() - attack_start
        for ws in idle:
            if not ws.closed:
                try:
                    await ws.receive(timeout=0.05)
                except asyncio.TimeoutError:
                    pass
        await asyncio.sleep(0.1)
    await http.close()
    for sock in raw:
        sock.close()
    with urllib.request.urlopen(url + "/api/info", timeout=10) as resp:
        sessions = json.load(resp)["sessions"]
    return {"attacker_sessions_held": held, "honest_frames": frames, "honest_session_s": round(took, 2),
            "all_attackers_closed_after_s": round(max(closed_at.values()), 1) if closed_at else None,
            "attacker_connections_closed": len(closed_at), "attacker_connections": len(idle) + len(raw),
            "sessions_after": sessions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=3.0, help="--idle-timeout for the lock-out run")
    parser.add_argument("--read", type=float, default=2.0, help="--read-timeout for the lock-out run")
    parser.add_argument("--header", type=float, default=2.0, help="--header-timeout for the lock-out run")
    args = parser.parse_args()
    proc, url = start_server(["--max-audio-seconds", "60"])
    try:
        idle_rss = rss_mb(proc.pid)
        rows = memory(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    proc, url = start_server(["--idle-timeout", str(args.idle), "--read-timeout", str(args.read),
                              "--header-timeout", str(args.header)])
    try:
        outcome = asyncio.run(lockout(url))
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps(outcome), flush=True)
    print(f"\nMachine: {platform.machine()}, {platform.python_version()}; server idle RSS {idle_rss:.0f} MB\n")
    print("| upload | bytes | reply | time | peak RSS before → after |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['upload']} | {r['bytes']:,} | {r['status']} | {r['reply_s']:.2f} s | "
              f"{r['peak_before_mb']:.0f} → {r['peak_after_mb']:.0f} MB |")
    print(f"\nLock-out (8 idle WebSockets + 8 stalled uploads + 8 endless headers from one address; "
          f"idle {args.idle:g} s, read {args.read:g} s, header {args.header:g} s): attacker held "
          f"{outcome['attacker_sessions_held']} sessions; honest client got {outcome['honest_frames']} frames "
          f"in {outcome['honest_session_s']} s; every attacker connection closed after "
          f"{outcome['all_attackers_closed_after_s']} s ({outcome['attacker_connections_closed']}/"
          f"{outcome['attacker_connections']}); sessions afterwards: {outcome['sessions_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
