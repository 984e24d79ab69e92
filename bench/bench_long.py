"""A long input through `talkmotion animate`: speed and peak memory at 1 min and at 1 hour.

    .venv/bin/python bench/bench_long.py [--minutes 1 60] [--backend onnx]

Writes the bundled speech sample, looped, as FLAC files of each length, then
animates each in a fresh `talkmotion animate` process on one thread and prints the
real time factor, the process's peak RSS, and how much of that RSS the output frames
themselves account for (a whole-file JSON/CSV needs every frame; the model's
streaming state does not grow).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_speech(path: Path, seconds: float) -> None:
    """The speech sample looped to `seconds`, encoded as FLAC one second at a time."""
    import av

    from talkmotion.audio import SAMPLE_RATE
    from talkmotion.bench import speech

    base = speech(60.0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        for start in range(0, int(seconds), 1):
            offset = (start % 60) * SAMPLE_RATE
            frame = av.AudioFrame.from_ndarray(base[None, offset:offset + SAMPLE_RATE], format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def animate(path: Path, out: Path, backend: str) -> dict:
    """Run `talkmotion animate` (JSON and CSV out) in a fresh process; its wall time and peak RSS."""
    exe = Path(sys.executable).with_name("talkmotion")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([str(exe), "animate", str(path), "-o", f"{out}.json", "-o", f"{out}.csv", "--backend", backend],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("peak RSS of the child is not above an earlier child's; run lengths in rising order")
    return {"wall_s": wall, "peak_rss_mb": peak / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    args = parser.parse_args()
    from talkmotion import labels

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in sorted(args.minutes):
            seconds = minutes * 60
            audio = Path(tmp) / f"speech_{minutes:g}min.flac"
            write_speech(audio, seconds)
            run = animate(audio, Path(tmp) / f"out_{minutes:g}min", args.backend)
            frames_mb = seconds * 30 * labels.NUM_CHANNELS * 4 / 2 ** 20
            results.append({"minutes": minutes, "rtf": seconds / run["wall_s"], **run,
                            "frames_float32_mb": frames_mb})
            print(json.dumps({k: round(v, 2) for k, v in results[-1].items()}), flush=True)
    if len(results) > 1:
        growth = results[-1]["peak_rss_mb"] - results[0]["peak_rss_mb"]
        print(f"peak RSS grew {growth:.0f} MB from {results[0]['minutes']:g} to {results[-1]['minutes']:g} min; "
              f"the frames alone are {results[-1]['frames_float32_mb'] - results[0]['frames_float32_mb']:.0f} MB "
              f"of float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
