"""Streaming: `Animator(model).push(pcm) -> Frames`, `flush()`, `reset()`.

Any chunk size gives the same frames. A frame is emitted as soon as the audio up to
its end plus the model's look-ahead has arrived; `latency_ms` states that bound.
Per-frame cost is constant in stream length: the runtime keeps a bounded encoder
history, a fixed-size window of audio features and a fixed-size decoder cache.

The model is a runtime (talkmotion.runtime: ONNX Runtime or PyTorch). On each push the
Animator works out, with array arithmetic, which frames became due and how many audio
features each brings, hands them to the runtime in one call and post-processes the
result; it never touches the model's arithmetic. numpy only: no torch here.
"""

from __future__ import annotations

import numpy as np

from . import labels
from .audio import check_pcm, frame_levels_db, frame_to_sample, num_frames
from .frames import Frames
from .postprocess import PostOptions, PostProcessor
from .style import StyleLayer


class FrameLevels:
    """The level (dBFS) of each output frame's own audio, for the jaw gate."""

    def __init__(self, fps: int):
        self.fps = fps
        self.frame = 0                                  # the next frame to measure
        self.pending = np.zeros(0, np.float32)          # samples from that frame's first on

    def push(self, pcm: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, pcm])

    def take(self, count: int) -> np.ndarray:
        """(count,) levels of the next `count` frames, whose audio has arrived."""
        levels = frame_levels_db(self.pending, count, self.fps, self.frame)
        used = frame_to_sample(self.frame + count, self.fps) - frame_to_sample(self.frame, self.fps)
        self.pending, self.frame = self.pending[used:], self.frame + count
        return levels


class Animator:
    """Streaming speech → frames for one stream. Not thread-safe; one per stream."""

    def __init__(self, model, options: PostOptions | None = None, style: StyleLayer | None = None,
                 raw: bool = False):
        """model: a runtime (`talkmotion.load_model()`, `runtime.make_runtime(talk_model)`);
        options: post-processing, by default the model's own defaults; style: emotions (style.py);
        `raw`: the model's own frames, neither post-processed nor styled (what its training
        targets look like; channels it does not predict stay 0)."""
        self.runtime = model
        self.raw = raw
        self.timing = model.timing
        self.fps = self.timing.fps
        self.latency_ms = self.timing.latency_ms
        self.name = model.name
        self.post = PostProcessor(options if options is not None else model.post_defaults, model.predicted)
        self.style = style or StyleLayer(self.fps)   # emotions, after post-processing (style.py)
        self.reset()

    def reset(self) -> None:
        self.samples = 0            # real samples pushed
        self.padded = 0             # samples including flush padding
        self.next_frame = 0
        self.state = self.runtime.initial_state()
        self.source = self.runtime.new_source()
        self.levels = FrameLevels(self.fps)
        self.post.reset()
        self.style.reset()

    @property
    def options(self) -> PostOptions:
        return self.post.options

    def set_options(self, options: PostOptions) -> None:
        """Change the post-processing mid-stream. Gains, limits and smoothing apply from the
        next frame; which procedural effects run (blinks, gaze) and the seed apply after reset()."""
        self.post.options = options

    def set_style(self, emotions: dict[str, float], attack_s: float | None = None,
                  release_s: float | None = None) -> None:
        """Emotions {name: intensity 0..1} from the next frame on, ramping over attack/release
        seconds (style.py); unlisted emotions fade out. They outlast reset() and flush()."""
        self.style.set(emotions, attack_s, release_s)

    def push(self, pcm: np.ndarray) -> Frames:
        """Feed 16 kHz mono float samples (any count); get the frames that became ready."""
        pcm = check_pcm(pcm, "audio stream")
        self.samples += pcm.size
        return self._advance(pcm, limit=None)

    def flush(self) -> Frames:
        """End of stream: pad silence for the look-ahead, emit the remaining frames, reset."""
        total = num_frames(self.samples, self.fps)
        need = self.timing.samples_for_frame(total - 1) if total else 0
        pad = np.zeros(max(0, need - self.padded), np.float32)
        frames = self._advance(pad, limit=total)
        self.reset()
        return frames

    def _advance(self, pcm: np.ndarray, limit: int | None) -> Frames:
        self.padded += pcm.size
        self.source.push(pcm)
        self.levels.push(pcm)
        start = self.next_frame
        due = self.timing.frames_ready(self.padded) - start
        if limit is not None:
            due = min(due, limit - start)
        values = self._step(start, due) if due > 0 else np.zeros((0, labels.NUM_CHANNELS), np.float32)
        if len(values):
            self.next_frame += len(values)
            levels = self.levels.take(len(values))
            if not self.raw:
                values = self.style(self.post(values, start, self.fps, levels), start)
        return Frames(values, fps=self.fps, start=start, latency_ms=self.latency_ms, model=self.name)

    def _step(self, start: int, due: int) -> np.ndarray:
        """Frames start..start+due-1, or as many of them as the source has features for
        (an encoder that works in blocks may still be waiting)."""
        added = self.timing.features_added(start, due)
        needed = np.cumsum(added)                          # features frames start..start+q need
        ready = int(np.searchsorted(needed, self.source.available(), side="right"))
        if ready == 0:
            return np.zeros((0, labels.NUM_CHANNELS), np.float32)
        values, self.state = self.runtime.step(self.source.take(int(needed[ready - 1])), added[:ready], self.state)
        return values
