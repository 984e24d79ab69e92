"""Per-frame work around the model on a long input: the mel, the jaw gate's levels, post-processing, writers.

    taskset -c 1 .venv/bin/python bench/bench_frame_work.py [--seconds 310] [--repeat 3]

Times each stage alone, the way `animate` drives it (1 s chunks of audio, about 30
frames per post-processing call) and the way a live stream does (20 ms pushes, a
frame or two per call), on one thread, best of --repeat, in CPU time (the process's
own seconds: on a shared machine other jobs' load adds wall time, not this). The audio is the bundled
speech sample repeated to --seconds; the frames are a smooth random walk over every
channel (what a writer sees from the model), so no model runs here: the model's
own cost is `talkmotion bench`'s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from talkmotion import labels
from talkmotion.audio import FPS, SAMPLE_RATE, MelStream, frame_levels_db, frame_to_sample, load_audio
from talkmotion.frames import Frames
from talkmotion.postprocess import PostOptions, PostProcessor
from talkmotion.sinks import file_sink

SAMPLE = Path(__file__).resolve().parent.parent / "talkmotion" / "assets" / "samples" / "speech.wav"
OFFLINE_CHUNK_S = 1.0          # animate decodes and pushes 1 s at a time
LIVE_CHUNK_S = 0.02            # a microphone callback
WRITERS = ("json", "csv", "livelink.csv", "vrma", "glb")


def speech(seconds: float) -> np.ndarray:
    pcm = load_audio(SAMPLE)
    return np.resize(pcm, int(seconds * SAMPLE_RATE)).astype(np.float32)


def random_frames(count: int, seed: int = 0) -> np.ndarray:
    """(count, C) smooth random values: weights in [0, 1], head degrees within ±20."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.05, (count, labels.NUM_CHANNELS)), axis=0)
    values = 0.5 + 0.5 * np.sin(walk)
    values[:, labels.HEAD_SLICE] = 20 * np.sin(walk[:, labels.HEAD_SLICE])
    return values.astype(np.float32)


def options(**fields) -> PostOptions:
    """PostOptions with those of `fields` this version has (before the head motion layer, no head_motion)."""
    known = {f.name for f in dataclasses.fields(PostOptions)}
    return PostOptions(**{k: v for k, v in fields.items() if k in known})


def best(repeat: int, work) -> float:
    """Fastest of `repeat` runs of work(), CPU seconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def mel(pcm: np.ndarray, chunk_s: float) -> None:
    stream, step = MelStream(), int(chunk_s * SAMPLE_RATE)
    for i in range(0, pcm.size, step):
        stream.push(pcm[i:i + step])


def levels(pcm: np.ndarray, frames_per_call: int) -> None:
    total = len(pcm) * FPS // SAMPLE_RATE
    for first in range(0, total - frames_per_call + 1, frames_per_call):
        lo, hi = frame_to_sample(first), frame_to_sample(first + frames_per_call)
        frame_levels_db(pcm[lo:hi], frames_per_call, FPS, first)


def post(values: np.ndarray, levels_db: np.ndarray, options: PostOptions, frames_per_call: int) -> None:
    processor = PostProcessor(options, predicted=set(labels.CHANNELS))
    for start in range(0, len(values), frames_per_call):
        processor(values[start:start + frames_per_call], start, FPS, levels_db[start:start + frames_per_call])


def write(fmt: str, frames: Frames, folder: Path) -> None:
    sink = file_sink(folder / f"bench.{fmt}", fmt=fmt.split(".")[0] if fmt != "livelink.csv" else "livelink")
    sink.open(frames.fps, frames.model, frames.latency_ms)
    for start in range(0, len(frames), FPS):
        sink.write(Frames(frames.values[start:start + FPS], fps=frames.fps, start=start))
    sink.close(frames.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=310.0, help="input length (default 310)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the fastest counts")
    args = parser.parse_args()
    pcm = speech(args.seconds)
    count = int(args.seconds * FPS)
    values = random_frames(count)
    levels_db = frame_levels_db(pcm, count, FPS, 0)
    frames = Frames(values, fps=FPS, model="bench", duration=args.seconds)
    still = {"head_motion": 0.0}                       # head_motion.py's procedural layer, timed apart
    every = {"blinks": "on", "gaze": "on", "smoothing_ms": 60.0, **still}
    print(f"bench_frame_work: {args.seconds:g} s input, {count} frames at {FPS} fps, one thread, CPU time, "
          f"best of {args.repeat}; CPU: {os.cpu_count()} cores")
    rows = [
        ("mel, 1 s pushes (animate)", lambda: mel(pcm, OFFLINE_CHUNK_S)),
        ("mel, 20 ms pushes (live)", lambda: mel(pcm, LIVE_CHUNK_S)),
        ("jaw-gate levels, 30 frames a call", lambda: levels(pcm, FPS)),
        ("jaw-gate levels, 1 frame a call", lambda: levels(pcm, 1)),
        ("post, defaults, head motion off, 30 a call", lambda: post(values, levels_db, options(**still), FPS)),
        ("post, defaults, head motion off, 1 a call", lambda: post(values, levels_db, options(**still), 1)),
        ("post, every effect on, 30 frames a call", lambda: post(values, levels_db, options(**every), FPS)),
        ("post, every effect on, 1 frame a call", lambda: post(values, levels_db, options(**every), 1)),
        ("post, defaults (head motion on), 30 a call", lambda: post(values, levels_db, options(), FPS)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows += [(f"write .{fmt}", lambda fmt=fmt: write(fmt, frames, Path(tmp))) for fmt in WRITERS]
        for name, work in rows:
            seconds = best(args.repeat, work)
            print(f"  {name:<44} {seconds * 1000:8.1f} ms  {seconds / args.seconds * 1e3:6.2f} ms per audio s "
                  f"({seconds / count * 1e6:6.1f} µs per frame)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
