"""Load test for `talkmotion serve`: N concurrent clients, each streaming speech in real time.

Starts `talkmotion serve` in its own process on loopback, then runs N WebSocket
clients in this one. Each client sends 100 ms of PCM every 100 ms (like a
microphone) and records when each frame comes back. A frame's lag is its arrival
time minus the moment the audio it covers had finished being sent; it includes
the model's look-ahead, the 100 ms chunking, queueing and compute. A client is
real time when its lag does not grow over the stream (last second vs first) and
every frame arrived.

    .venv/bin/python bench/bench_serve.py --clients 1 2 4 8 --seconds 10 [--model PATH] [--backend onnx]

Prints one JSON line per N and a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkmotion.audio import SAMPLE_RATE, load_audio, num_frames  # noqa: E402

CHUNK_SECONDS = 0.1
# A stream keeps real time when its lag in the last second is within this of the first second's.
DRIFT_TOLERANCE_S = 0.1


def speech(seconds: float) -> np.ndarray:
    from talkmotion.assets import SAMPLE_SPEECH

    base = load_audio(SAMPLE_SPEECH)
    reps = int(np.ceil(seconds * SAMPLE_RATE / base.size))
    return np.tile(base, reps)[: int(seconds * SAMPLE_RATE)]


def start_server(model: str | None, max_sessions: int, backend: str = "torch") -> tuple[subprocess.Popen, str]:
    # every client here comes from 127.0.0.1, so the per-address share is the whole server
    extra = ["--max-sessions", str(max_sessions), "--max-sessions-per-client", str(max_sessions), "--backend", backend]
    return serve_process(extra + (["--model", model] if model else []))


def serve_process(extra: list[str], start_timeout_s: float = 180) -> tuple[subprocess.Popen, str]:
    """`talkmotion serve` with `extra` flags on a free loopback port, once it answers /api/info."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile("w+")          # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen([sys.executable, "-m", "talkmotion.cli", "serve", "--port", str(port), *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/api/info", timeout=2):
                return proc, url
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                raise SystemExit(f"serve did not start: {log.read()[-2000:]}")
            time.sleep(0.2)


async def client(ws_url: str, pcm: np.ndarray, fps: float) -> dict:
    import aiohttp

    step = int(CHUNK_SECONDS * SAMPLE_RATE)
    sent_at: list[float] = []       # time each chunk finished being sent
    arrivals: dict[int, float] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        await ws.receive()  # hello
        done = asyncio.Event()

        async def receive():
            async for msg in ws:
                obj = json.loads(msg.data)
                now = time.monotonic()
                if obj["type"] == "frames":
                    for k in range(len(obj["values"])):
                        arrivals[obj["start"] + k] = now
                elif obj["type"] == "end":
                    break
                elif obj["type"] == "error":
                    raise RuntimeError(obj["message"])
            done.set()

        reader = asyncio.create_task(receive())
        t0 = time.monotonic()
        for k, i in enumerate(range(0, pcm.size, step)):
            await asyncio.sleep(max(0.0, t0 + k * CHUNK_SECONDS - time.monotonic()))
            await ws.send_bytes(pcm[i:i + step].astype("<f4").tobytes())
            sent_at.append(time.monotonic())
        await ws.send_str(json.dumps({"type": "end"}))
        await reader
    expected = num_frames(pcm.size, fps)
    lags = []
    for index, arrived in sorted(arrivals.items()):
        end_sample = min(pcm.size, int(round((index + 1) * SAMPLE_RATE / fps)))
        chunk = min(len(sent_at) - 1, max(0, (end_sample - 1) // step))
        lags.append((index / fps, arrived - sent_at[chunk]))
    lags = np.array(lags)
    first = lags[lags[:, 0] < 1.0, 1]
    last = lags[lags[:, 0] > lags[-1, 0] - 1.0, 1]
    return {"frames": len(arrivals), "expected": expected, "lag": lags[:, 1],
            "drift": float(np.median(last) - np.median(first)),
            "real_time": len(arrivals) == expected
            and float(np.median(last) - np.median(first)) < DRIFT_TOLERANCE_S}


async def run_clients(url: str, n: int, pcm: np.ndarray, fps: float) -> list[dict]:
    ws_url = url.replace("http", "ws", 1) + "/ws"
    return await asyncio.gather(*(client(ws_url, pcm, fps) for _ in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", help="checkpoint; default: the embedded model")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="the server's runtime")
    args = parser.parse_args()
    pcm = speech(args.seconds)
    proc, url = start_server(args.model, max(args.clients), args.backend)
    try:
        with urllib.request.urlopen(url + "/api/info") as resp:
            info = json.load(resp)
        rows = []
        for n in args.clients:
            results = asyncio.run(run_clients(url, n, pcm, info["fps"]))
            lag = np.concatenate([r["lag"] for r in results]) * 1000
            row = {"clients": n, "seconds": args.seconds, "model": info["model"],
                   "latency_ms": round(info["latency_ms"], 1),
                   "lag_p50_ms": round(float(np.percentile(lag, 50)), 1),
                   "lag_p95_ms": round(float(np.percentile(lag, 95)), 1),
                   "lag_max_ms": round(float(lag.max()), 1),
                   "worst_drift_ms": round(max(r["drift"] for r in results) * 1000, 1),
                   "all_real_time": all(r["real_time"] for r in results),
                   "frames_ok": all(r["frames"] == r["expected"] for r in results)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"backend {args.backend}; "
          f"{args.seconds:g} s of speech per client, {CHUNK_SECONDS * 1000:.0f} ms chunks in real time\n")
    print("| clients | frame lag p50 (ms) | p95 (ms) | max (ms) | worst drift (ms) | all real time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['lag_p50_ms']} | {r['lag_p95_ms']} | {r['lag_max_ms']} | "
              f"{r['worst_drift_ms']} | {'yes' if r['all_real_time'] else 'no'} |")


if __name__ == "__main__":
    main()
