"""Streaming: `Animator(model).push(pcm) -> Frames`, `flush()`, `reset()`.

Any chunk size gives the same frames. A frame is emitted as soon as the audio up to
its end plus the model's look-ahead has arrived; `latency_ms` states that bound.
Per-frame cost is constant in stream length: the encoder keeps only its conv
history, the decoder a fixed-size KV cache, and the audio features a bounded window.

Runtimes do the arithmetic, one `FrameStep` call per output frame (PyTorch here,
ONNX Runtime in onnx_export.py); the Animator decides when a frame is due and which
audio it adds, and is the same for both.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from . import labels
from .audio import MelStream, check_pcm, frame_levels_db, frame_to_sample, num_frames
from .frames import Frames
from .model import FEATURE_HOP, TalkModel
from .postprocess import PostOptions, PostProcessor
from .style import StyleLayer


class FrameStep(nn.Module):
    """One output frame per call, with every piece of streaming state explicit.

    Inputs, in order (`state_names` names all but the first):
      source        the audio this frame adds: mel frames (1, 2m, n_mels) for the mel encoder,
                    or encoder features (1, m, d_model) for a pretrained one
      prev          (1, 1, C) the previous output frame
      window_kv     (L, 1, H, W, 2*dh) cross keys/values of the newest W audio features, oldest first
      window_valid  (1, W) bool
      cache         (L, 1, H, S-1, 2*dh) self keys/values of the previous S-1 frames, oldest first
      cache_valid   (1, S-1) bool
      state_mel, state_block0..  the mel encoder's conv history (mel encoder only)
    Outputs: the frame (1, 1, C), which is the next `prev`, then the next value of every
    other state input. Encoding, the window update and the decoder step are one call, so
    ONNX Runtime runs one graph per frame and no per-frame arithmetic is left in Python.
    """

    def __init__(self, model: TalkModel):
        super().__init__()
        self.model = model
        self.mel = model.dims.encoder == "mel"

    def state_names(self) -> list[str]:
        names = ["prev", "window_kv", "window_valid", "cache", "cache_valid"]
        if self.mel:
            names += ["state_mel"] + [f"state_block{k}" for k in range(len(self.model.encoder.blocks))]
        return names

    def initial_state(self) -> list[torch.Tensor]:
        d = self.model.dims
        dh2 = 2 * d.d_model // d.n_heads
        state = [torch.zeros(1, 1, d.n_channels),
                 torch.zeros(d.n_layers, 1, d.n_heads, d.audio_window, dh2),
                 torch.zeros(1, d.audio_window, dtype=torch.bool),
                 torch.zeros(d.n_layers, 1, d.n_heads, d.self_window - 1, dh2),
                 torch.zeros(1, d.self_window - 1, dtype=torch.bool)]
        return state + (self.model.encoder.initial_state(1) if self.mel else [])

    def forward(self, source, prev, window_kv, window_valid, cache, cache_valid, *encoder_state):
        model, width = self.model, self.model.dims.audio_window
        if self.mel:
            feats, encoder_state = model.encoder(source, list(encoder_state))
        else:
            feats = source
        new_kv = model.decoder.memory_kv(feats)                                        # (L, 1, H, m, 2*dh)
        window_kv = torch.cat([window_kv, new_kv], dim=3)[:, :, :, -width:]
        # Sized from feats.shape, not ones_like(...): the ONNX exporter folds ones_like of a
        # traced tensor into a constant of the example's length.
        arrived = torch.ones(1, feats.shape[1], dtype=torch.bool)                      # (1, m)
        window_valid = torch.cat([window_valid, arrived], dim=1)[:, -width:]
        out, cache = model.decoder.step(model.normalise(prev), window_kv, window_valid, cache, cache_valid)
        cache_valid = torch.cat([cache_valid[:, 1:], torch.ones_like(cache_valid[:, :1])], dim=1)
        return (model.finish(out), window_kv, window_valid, cache, cache_valid, *encoder_state)


class TorchRuntime:
    """The model's streaming step in PyTorch, batch 1. The state is opaque to callers.

    By default the step is traced once into a TorchScript graph: at a few frames per call
    eager PyTorch spends most of its time in Python between operators, and the traced
    graph runs the same operators ~2× faster (BENCHMARKS.md). `traced=False` runs eager.
    """

    def __init__(self, model: TalkModel, traced: bool = True):
        self.model = model.eval()
        self.dims = model.dims
        self.frame_step = FrameStep(model)
        self.run = self._trace() if traced else self.frame_step

    def _trace(self):
        d = self.dims
        width = d.n_mels if self.frame_step.mel else d.d_model
        example = torch.zeros(1, 4 if self.frame_step.mel else 2, width)
        with warnings.catch_warnings(), torch.inference_mode():
            # TorchScript is deprecated in favour of torch.compile, which needs a C++
            # toolchain and seconds of compiling; tracing is instant and exact here.
            warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
            traced = torch.jit.trace(self.frame_step, (example, *self.initial_state()), check_trace=False)
            return torch.jit.freeze(traced.eval())

    def initial_state(self) -> list[torch.Tensor]:
        return self.frame_step.initial_state()

    def step(self, source: np.ndarray, state):
        """source (m', F) for one frame → frame (C,) and the next state."""
        with torch.inference_mode():
            out = self.run(torch.from_numpy(source[None]), *state)
        return out[0][0, 0].numpy(), list(out)


BACKENDS = ("torch", "onnx")


def make_runtime(model: TalkModel, backend: str = "torch", threads: int = 1):
    """The runtime for `backend`: PyTorch (a traced step, any encoder) or ONNX Runtime
    (mel encoder; exported once into a cache folder). One runtime can serve many
    Animators: it holds no stream state."""
    if backend == "torch":
        return TorchRuntime(model)
    if backend == "onnx":
        from .onnx_export import onnx_runtime

        return onnx_runtime(model, threads=threads)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def add_backend_argument(parser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="run the model in PyTorch (a traced step) or ONNX Runtime (about twice as fast; "
                             "mel-encoder models)")


class MelSource:
    """Audio → mel frames waiting for the encoder; each audio feature takes two.

    The mel is computed when a frame is due, not on every push: 20 ms pushes then
    cost a list append, and the mel runs ~30 times a second on a few frames at once.
    """

    def __init__(self, dims):
        self.mel = MelStream()
        self.unread: list[np.ndarray] = []
        self.pending = np.zeros((0, dims.n_mels), np.float32)

    def push(self, pcm: np.ndarray) -> None:
        self.unread.append(pcm)

    def available(self) -> int:
        """Features whose mel frames are ready, computing the mel of what was pushed since."""
        if self.unread:
            pcm = self.unread[0] if len(self.unread) == 1 else np.concatenate(self.unread)
            self.unread = []
            self.pending = np.concatenate([self.pending, self.mel.push(pcm)])
        return self.pending.shape[0] // 2

    def take(self, count: int) -> np.ndarray:
        """The mel frames of the next `count` features, (2*count, n_mels)."""
        out, self.pending = self.pending[:2 * count], self.pending[2 * count:]
        return out


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


class PretrainedSource:
    """Audio → pretrained-encoder features, computed in fixed blocks over a bounded history."""

    def __init__(self, model: TalkModel):
        self.encoder = model.encoder
        self.dims = model.dims
        self.history = np.zeros(0, np.float32)   # the newest samples, bounded
        self.history_start = 0                    # absolute index of history[0]
        self.block = 0
        self.ready = np.zeros((0, self.dims.d_model), np.float32)
        self.keep = self.encoder.context + (self.dims.pretrained_block + 1) * FEATURE_HOP + 400

    def push(self, pcm: np.ndarray) -> None:
        self.history = np.concatenate([self.history, pcm])

    def available(self) -> int:
        """Features ready, running the encoder on every block whose audio has arrived."""
        n = self.dims.pretrained_block
        while self.dims.feature_need(n * (self.block + 1) - 1) <= self.history_start + self.history.size:
            with torch.inference_mode():
                feats = self.encoder.block_features(torch.from_numpy(self.history[None]), self.block,
                                                    self.history_start)
            self.ready = np.concatenate([self.ready, feats[0].numpy()])
            self.block += 1
        drop = max(0, self.history.size - self.keep)
        self.history, self.history_start = self.history[drop:], self.history_start + drop
        return len(self.ready)

    def take(self, count: int) -> np.ndarray:
        out, self.ready = self.ready[:count], self.ready[count:]
        return out


class Animator:
    """Streaming speech → frames for one stream. Not thread-safe; one per stream."""

    def __init__(self, model: TalkModel, options: PostOptions | None = None, runtime=None,
                 style: StyleLayer | None = None):
        self.model = model
        self.dims = model.dims
        self.runtime = runtime or TorchRuntime(model)
        self.fps = self.dims.fps
        self.latency_ms = self.dims.latency_ms
        self.name = getattr(model, "name", "talkmotion")
        header = getattr(model, "header", None)
        predicted = set(header["predicted"]) if header else {
            c for c, t in zip(labels.CHANNELS, model.trained.tolist()) if t}
        self.post = PostProcessor(options, predicted)
        self.style = style or StyleLayer(self.fps)   # emotions, after post-processing (style.py)
        self.reset()

    def reset(self) -> None:
        self.samples = 0            # real samples pushed
        self.padded = 0             # samples including flush padding
        self.next_frame = 0
        self.state = self.runtime.initial_state()
        self.audio = MelSource(self.dims) if self.dims.encoder == "mel" else PretrainedSource(self.model)
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
        need = self.dims.samples_for_frame(total - 1) if total else 0
        pad = np.zeros(max(0, need - self.padded), np.float32)
        frames = self._advance(pad, limit=total)
        self.reset()
        return frames

    def _advance(self, pcm: np.ndarray, limit: int | None) -> Frames:
        self.padded += pcm.size
        self.audio.push(pcm)
        self.levels.push(pcm)
        start = self.next_frame
        rows = []
        while limit is None or self.next_frame < limit:
            row = self._frame(self.next_frame)
            if row is None:
                break
            rows.append(row)
            self.next_frame += 1
        values = np.stack(rows) if rows else np.zeros((0, self.dims.n_channels), np.float32)
        if rows:
            values = self.post(values, start, self.fps, self.levels.take(len(values)))
            values = self.style(values, start)
        return Frames(values, fps=self.fps, start=start, latency_ms=self.latency_ms, model=self.name)

    def _frame(self, i: int) -> np.ndarray | None:
        """Frame i if its audio has arrived: one runtime step with the features it adds."""
        if self.padded < self.dims.frame_need(i):
            return None
        d = self.dims
        given = d.last_feature_for_frame(i - 1) + 1 if i else 0     # features earlier frames took
        count = d.last_feature_for_frame(i) + 1 - given
        if self.audio.available() < count:
            return None
        frame, self.state = self.runtime.step(self.audio.take(count), self.state)
        return frame
