"""The live path: 20 ms pushes into an Animator on the default model, and where the time goes.

    taskset -c 1 .venv/bin/python bench/bench_live.py [--model M] [--backend onnx] [--seconds 10] [--repeat 7] [--sweep-mb 8]

Pushes the speech sample (looped to --seconds) 20 ms at a time, as a microphone callback
does, and reports per audio second, best of --repeat, in this thread's CPU time (on a
shared machine other jobs add wall time; the wall clock is printed beside it):
  whole        the Animator as `talkmotion stream` runs it (default post-processing)
  model calls  the runtime's steps alone, replayed on the inputs the whole run gave them
  python       the Animator with a runtime that does no arithmetic: mel, timing,
               levels, post-processing, style
  model calls, N MB swept   the replay again, reading N MB of other memory before each
               call: what the model costs when its weights have left the caches
whole is more than the other two added: each evicts the other's data from the caches.
The three are measured in turn, round after round, so a slow spell of the machine
touches each alike.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import time

import numpy as np

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE
from talkmotion.bench import speech
from talkmotion.runtime import load_model
from talkmotion.stream import Animator

CHUNK = SAMPLE_RATE // 50      # 20 ms


class NullRuntime:
    """The runtime's interface with no model: zeros for every frame, the state unchanged."""

    def __init__(self, runtime):
        self.runtime = runtime

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def step(self, source, added, state):
        return np.zeros((len(added), labels.NUM_CHANNELS), np.float32), state


class RecordingRuntime(NullRuntime):
    """The real runtime, keeping each step's inputs for a replay."""

    def __init__(self, runtime):
        super().__init__(runtime)
        self.steps = []

    def step(self, source, added, state):
        self.steps.append((source, added))
        return self.runtime.step(source, added, state)


def timed(run) -> tuple[float, float]:
    cpu, wall = time.thread_time(), time.perf_counter()
    run()
    return time.thread_time() - cpu, time.perf_counter() - wall


def push_all(animator: Animator, chunks: list[np.ndarray]) -> None:
    animator.reset()
    for chunk in chunks:
        animator.push(chunk)


def replay(runtime, steps, sweep: np.ndarray | None = None) -> None:
    state = runtime.initial_state()
    for source, added in steps:
        if sweep is not None:
            sweep.sum()
        _, state = runtime.step(source, added, state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint or exported folder (default: the embedded model)")
    parser.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sweep-mb", type=float, default=0.0, help="also replay with this much memory read between calls")
    args = parser.parse_args()

    runtime = load_model(args.model, args.backend, threads=1)
    pcm = speech(args.seconds)
    chunks = [pcm[k:k + CHUNK] for k in range(0, pcm.size - CHUNK + 1, CHUNK)]
    recorder = RecordingRuntime(runtime)
    push_all(Animator(recorder), chunks)
    whole, null = Animator(runtime), Animator(NullRuntime(runtime))
    parts = {"whole": lambda: push_all(whole, chunks), "model calls": lambda: replay(runtime, recorder.steps),
             "python": lambda: push_all(null, chunks)}
    if args.sweep_mb > 0:
        sweep = np.ones(int(args.sweep_mb * 2 ** 20) // 4, np.float32)
        parts[f"model calls, {args.sweep_mb:g} MB swept"] = lambda: replay(runtime, recorder.steps, sweep)
    best = {name: (np.inf, np.inf) for name in parts}
    for _ in range(args.repeat):
        for name, run in parts.items():
            cpu, wall = timed(run)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    seconds = len(chunks) * CHUNK / SAMPLE_RATE
    print(f"live 20 ms pushes, {runtime.name}, backend {args.backend}, {seconds:.0f} s of speech, "
          f"best of {args.repeat}, one thread")
    for name, (cpu, wall) in best.items():
        print(f"  {name:24s} {1000 * cpu / seconds:6.1f} ms CPU per audio second ({seconds / cpu:5.1f}x real time), "
              f"wall {1000 * wall / seconds:6.1f} ms ({seconds / wall:5.1f}x)")


if __name__ == "__main__":
    main()
