"""Streaming: `Animator(model).push(pcm) -> Frames`, `flush()`, `reset()`.

Any chunk size gives the same frames. A frame is emitted as soon as the audio up to
its end plus the model's look-ahead has arrived; `latency_ms` states that bound.
Per-frame cost is constant in stream length: the encoder keeps only its conv
history, the decoder a fixed-size KV cache, and the audio features a bounded window.

Runtimes do the arithmetic (PyTorch here, ONNX Runtime in onnx_export.py); the
Animator does the bookkeeping and is the same for both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import labels
from .audio import MelStream, check_pcm, num_frames
from .frames import Frames
from .model import FEATURE_HOP, TalkModel
from .postprocess import PostOptions, PostProcessor


class EncoderStep(nn.Module):
    """Mel encoder over new mel frames, with its conv history as explicit state; returns
    each new feature already projected to every decoder layer's cross keys/values."""

    def __init__(self, model: TalkModel):
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoder

    def forward(self, mel, *state):
        feats, new_state = self.encoder(mel, list(state))
        return (self.decoder.memory_kv(feats), *new_state)


class DecoderStep(nn.Module):
    """One output frame from the previous one: normalise → decoder step → untrained channels to rest."""

    def __init__(self, model: TalkModel):
        super().__init__()
        self.model = model

    def forward(self, prev, window, window_valid, cache, cache_valid):
        out, cache = self.model.decoder.step(self.model.normalise(prev), window, window_valid, cache, cache_valid)
        return self.model.finish(out), cache


class TorchRuntime:
    """The model's streaming steps in eager PyTorch, batch 1."""

    def __init__(self, model: TalkModel):
        self.model = model.eval()
        self.dims = model.dims
        self.encoder_step = EncoderStep(model)
        self.decoder_step = DecoderStep(model)

    def encoder_state(self):
        return [s.numpy() for s in self.model.encoder.initial_state(1)] if self.dims.encoder == "mel" else []

    def encode_mel(self, mel: np.ndarray, state):
        with torch.inference_mode():
            out = self.encoder_step(torch.from_numpy(mel[None]), *map(torch.from_numpy, state))
        return out[0][0].numpy(), [s.numpy() for s in out[1:]]

    def encode_block(self, pcm: np.ndarray, block: int, offset: int) -> np.ndarray:
        with torch.inference_mode():
            feats = self.model.encoder.block_features(torch.from_numpy(pcm[None]), block, offset)
            return self.model.decoder.memory_kv(feats)[0].numpy()

    def decode(self, prev, window, window_valid, cache, cache_valid):
        with torch.inference_mode():
            out, cache = self.decoder_step(torch.from_numpy(prev[None, None]), torch.from_numpy(window[None]),
                                           torch.from_numpy(window_valid[None]), torch.from_numpy(cache),
                                           torch.from_numpy(cache_valid[None]))
        return out[0, 0].numpy(), cache.numpy()


def kv_shape(dims) -> tuple[int, int, int]:
    """Shape of one audio feature's cross keys/values: (layers, heads, 2 * head_dim)."""
    return dims.n_layers, dims.n_heads, 2 * dims.d_model // dims.n_heads


class MelFeatures:
    """Audio → encoder features for the mel encoder (mel frames are paired: 2 per feature)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.mel = MelStream()
        self.pending = np.zeros((0, runtime.dims.n_mels), np.float32)
        self.state = runtime.encoder_state()

    def push(self, pcm: np.ndarray) -> None:
        """Take audio; the mel is computed now, the encoder runs later, once per frame batch."""
        self.pending = np.concatenate([self.pending, self.mel.push(pcm)])

    def features(self) -> np.ndarray:
        """Encode every complete pair of pending mel frames: (m, d_model)."""
        usable = self.pending.shape[0] // 2 * 2
        if usable == 0:
            return np.zeros((0, *kv_shape(self.runtime.dims)), np.float32)
        feats, self.state = self.runtime.encode_mel(self.pending[:usable], self.state)
        self.pending = self.pending[usable:]
        return feats


class PretrainedFeatures:
    """Audio → features for a pretrained encoder, in fixed blocks over a bounded history."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.dims = runtime.dims
        self.history = np.zeros(0, np.float32)   # the newest samples, bounded
        self.history_start = 0                    # absolute index of history[0]
        self.block = 0
        self.keep = runtime.model.encoder.context + (self.dims.pretrained_block + 1) * FEATURE_HOP + 400

    def push(self, pcm: np.ndarray) -> None:
        self.history = np.concatenate([self.history, pcm])

    def features(self) -> np.ndarray:
        n, out = self.dims.pretrained_block, []
        while self.dims.feature_need(n * (self.block + 1) - 1) <= self.history_start + self.history.size:
            out.append(self.runtime.encode_block(self.history, self.block, self.history_start))
            self.block += 1
        drop = max(0, self.history.size - self.keep)
        self.history, self.history_start = self.history[drop:], self.history_start + drop
        return np.concatenate(out) if out else np.zeros((0, *kv_shape(self.dims)), np.float32)


class Animator:
    """Streaming speech → frames for one stream. Not thread-safe; one per stream."""

    def __init__(self, model: TalkModel, options: PostOptions | None = None, runtime=None):
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
        self.reset()

    def reset(self) -> None:
        d = self.dims
        self.samples = 0            # real samples pushed
        self.padded = 0             # samples including flush padding
        self.features = np.zeros((0, *kv_shape(d)), np.float32)   # cross keys/values per feature
        self.feature_start = 0      # absolute index of self.features[0]
        self.next_frame = 0
        self.prev = np.zeros(d.n_channels, np.float32)
        dh2 = 2 * d.d_model // d.n_heads
        self.cache = np.zeros((d.n_layers, 1, d.n_heads, d.self_window - 1, dh2), np.float32)
        self.cache_valid = np.zeros(d.self_window - 1, bool)
        self.audio = MelFeatures(self.runtime) if d.encoder == "mel" else PretrainedFeatures(self.runtime)
        self.post.reset()

    @property
    def options(self) -> PostOptions:
        return self.post.options

    def set_options(self, options: PostOptions) -> None:
        """Change the post-processing mid-stream. Gains, limits and smoothing apply from the
        next frame; which procedural effects run (blinks, gaze) and the seed apply after reset()."""
        self.post.options = options

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
        if self.padded >= self.dims.frame_need(self.next_frame):   # a frame is due: encode what came
            feats = self.audio.features()
            if len(feats):
                self.features = np.concatenate([self.features, feats])
        start = self.next_frame
        rows = []
        while limit is None or self.next_frame < limit:
            row = self._frame(self.next_frame)
            if row is None:
                break
            rows.append(row)
            self.next_frame += 1
        values = np.stack(rows) if rows else np.zeros((0, self.dims.n_channels), np.float32)
        values = self.post(values, start, self.fps)
        return Frames(values, fps=self.fps, start=start, latency_ms=self.latency_ms, model=self.name)

    def _frame(self, i: int) -> np.ndarray | None:
        d = self.dims
        last = d.last_feature_for_frame(i)
        if self.padded < d.frame_need(i) or last >= self.feature_start + len(self.features):
            return None
        first = last - d.audio_window + 1
        lo = max(first, 0)
        window = np.zeros((d.audio_window, *kv_shape(d)), np.float32)
        window[lo - first:] = self.features[lo - self.feature_start: last + 1 - self.feature_start]
        valid = np.arange(first, last + 1) >= 0
        out, self.cache = self.runtime.decode(self.prev, window, valid, self.cache, self.cache_valid)
        self.cache_valid = np.append(self.cache_valid[1:], True)
        self.prev = out
        self._trim(first + 1)
        return out

    def _trim(self, keep_from: int) -> None:
        """Drop features no later frame can reach."""
        drop = keep_from - self.feature_start
        if drop > 0:
            self.features = self.features[drop:]
            self.feature_start += drop
