"""The talkmotion model: audio encoder → autoregressive Transformer decoder → ARKit frames.

Read top to bottom:
  ModelDims       every size: plain data saved inside the checkpoint, the encoder's config nested
  Attention       our own multi-head attention over given keys/values, with an additive bias
  Decoder         causal self-attention over previous output frames + cross-attention to a
                  bounded window of audio features, split output heads
  TalkModel       encoder (one of the kinds in encoders/) + decoder + label normalisation:
                    forward    every frame at once, teacher forced (training's parallel mode)
                    step       k frames of a batch of streams with bounded caches: the one decode
                               path of streaming, the autoregressive training mode and validation
                    free_run   frame after frame through `step`, fed back its own output (or the truth)

Timing (timing.StreamTiming, from the encoder kind and the dims): output frame i may hear
audio features up to `timing.last_feature(i)`, i.e. the audio up to the end of its own
interval plus `lookahead_ms`. It attends to the `audio_window` newest of those and to the
`self_window` newest output frames (itself included). Both windows are bounded, so a step
costs the same at minute one and at hour ten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import encoders, labels
from .config import ConfigError
from .encoders import EncoderConfig
from .timing import FPS, SUPPORTED_FPS, StreamTiming


@dataclass(frozen=True)
class ModelDims:
    encoder: EncoderConfig = field(default_factory=encoders.mel.Config)   # the audio encoder: kind and sizes
    lookahead_ms: float = 60.0    # audio after a frame's end that the frame may hear
    audio_window: int = 40        # audio features a frame attends to (40 = 0.8 s)
    d_model: int = 128            # decoder width (the encoder's features are projected to it)
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    self_window: int = 24         # output frames a frame attends to, itself included
    dropout: float = 0.1
    fps: int = FPS                # output frames per second
    n_channels: int = labels.NUM_CHANNELS
    spec: str = labels.SPEC_ID    # the label spec the outputs follow

    def __post_init__(self):
        if not (math.isfinite(self.lookahead_ms) and self.lookahead_ms >= 0):
            raise ConfigError(f"model.lookahead_ms must be 0 or more, got {self.lookahead_ms}")
        for name in ("audio_window", "d_model", "n_layers", "n_heads", "d_ff", "self_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.fps not in SUPPORTED_FPS:
            raise ConfigError(f"model.fps must be one of {', '.join(map(str, SUPPORTED_FPS))}, got {self.fps}")
        if self.n_channels != labels.NUM_CHANNELS or self.spec != labels.SPEC_ID:
            raise ConfigError(f"model.spec {self.spec!r} with {self.n_channels} channels is not this talkmotion's "
                              f"{labels.SPEC_ID!r} ({labels.NUM_CHANNELS})")


def stream_timing(dims: ModelDims) -> StreamTiming:
    return StreamTiming(encoders.feature_timing(dims.encoder), dims.fps, dims.lookahead_ms)


# --- attention ---------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head attention of queries over given keys/values, with an additive bias
    (relative position + mask). Keys and values are projected by the caller with
    `project_kv`, so streaming projects each audio feature and each frame once."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d // n_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, H, T, d/H); rows (B, d) of one frame each → (B, H, 1, d/H)."""
        if x.dim() == 2:
            return x.reshape(x.shape[0], self.n_heads, 1, -1)
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, d) → keys and values side by side, (B, H, S, 2*dh)."""
        return self.heads(self.kv(x))

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) queries, or (B, d) for one frame; kv (B, H, S, 2*dh); bias (B or 1, H, T, S)
        → x's shape.

        Plain matmul-softmax-matmul: at a few frames per call this exports to fewer ONNX
        nodes than fused attention.
        """
        q = self.heads(self.q(x) * self.scale)
        k, v = kv[..., :self.head_dim], kv[..., self.head_dim:]   # constant slices: no shape ops in ONNX
        weights = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)  # (B, H, T, S)
        y = weights @ v                                                   # (B, H, T, dh)
        y = y.reshape(x.shape) if x.dim() == 2 else y.transpose(1, 2).flatten(2)
        return self.out(y)


class DecoderLayer(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        d = dims.d_model
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, dims.n_heads)
        self.cross_attn = Attention(d, dims.n_heads)
        self.mlp = nn.Sequential(nn.Linear(d, dims.d_ff), nn.GELU(), nn.Linear(dims.d_ff, d))
        self.drop = nn.Dropout(dims.dropout)

    def forward(self, x, past_kv, self_bias, cross_kv, cross_bias):
        """x (B, T, d), or (B, d) for one frame; past_kv (B, H, P, 2*dh) self keys/values of earlier
        frames, or None;
        cross_kv (B, H, S, 2*dh) of the audio features. Returns x and the T frames' own
        self keys/values (B, H, T, 2*dh), for the caller's cache."""
        h = self.norm1(x)
        new_kv = self.self_attn.project_kv(h)
        kv = new_kv if past_kv is None else torch.cat([past_kv, new_kv], dim=2)
        x = x + self.drop(self.self_attn(h, kv, self_bias))
        x = x + self.drop(self.cross_attn(self.norm2(x), cross_kv, cross_bias))
        x = x + self.drop(self.mlp(self.norm3(x)))
        return x, new_kv


class Decoder(nn.Module):
    """Previous output frames + audio window → next frames (blendshapes in [0,1], head bounded)."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.inp = nn.Linear(dims.n_channels, dims.d_model)
        self.layers = nn.ModuleList(DecoderLayer(dims) for _ in range(dims.n_layers))
        self.norm = nn.LayerNorm(dims.d_model)
        self.blend_head = nn.Linear(dims.d_model, labels.NUM_BLENDSHAPES)
        self.head_head = nn.Linear(dims.d_model, labels.NUM_HEAD)
        # Learned bias per head and distance: index 0 = the newest key.
        self.self_pos = nn.Parameter(torch.zeros(dims.n_layers, dims.n_heads, dims.self_window))
        self.cross_pos = nn.Parameter(torch.zeros(dims.n_layers, dims.n_heads, dims.audio_window))

    def outputs(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        blend = torch.sigmoid(self.blend_head(h))
        head = torch.tanh(self.head_head(h)) * labels.HEAD_LIMIT_DEG
        return torch.cat([blend, head], dim=-1)

    def memory_kv(self, memory: torch.Tensor) -> torch.Tensor:
        """Audio features (B, S, d) → every layer's cross-attention keys/values (L, B, H, S, 2*dh)."""
        return torch.stack([layer.cross_attn.project_kv(memory) for layer in self.layers])

    def forward(self, prev: torch.Tensor, memory_kv: torch.Tensor, last_feature: torch.Tensor) -> torch.Tensor:
        """Whole sequences (training, offline).

        prev (B, T, C) normalised previous frames; memory_kv (L, B, H, J, 2*dh) from `memory_kv`;
        last_feature (T,) newest feature index each frame may use. Returns (B, T, C).
        """
        t, j = prev.shape[1], memory_kv.shape[3]
        dist_self = torch.arange(t)[:, None] - torch.arange(t)[None, :]              # (T, T)
        dist_cross = last_feature[:, None] - torch.arange(j)[None, :]               # (T, J)
        x = self.inp(prev)
        for n, layer in enumerate(self.layers):
            x, _ = layer(x, None, _band_bias(self.self_pos[n], dist_self),
                         memory_kv[n], _band_bias(self.cross_pos[n], dist_cross))
        return self.outputs(x)

    def step(self, prev, new_kv, window_kv, window_valid, cache, cache_valid, hidden=None):
        """k frames for a batch of streams, with bounded caches (see TalkModel.step)."""
        width, keep = self.dims.audio_window, self.dims.self_window - 1
        k = prev.shape[1]
        window_kv = torch.cat([window_kv, new_kv], dim=3)
        # Sized from new_kv.shape, not ones_like(...): the ONNX exporter folds ones_like of a
        # traced tensor into a constant of the example's length.
        window_valid = torch.cat([window_valid, torch.ones(prev.shape[0], new_kv.shape[3], dtype=torch.bool)], dim=1)
        if hidden is None:          # every frame of the step hears every new feature: keep the newest W
            window_kv, window_valid = window_kv[:, :, :, -width:], window_valid[:, -width:]
            dist_cross = torch.arange(width - 1, -1, -1).expand(k, width)                 # (k, W)
        else:                       # frame q hears all but the newest hidden[q] (their ages, oldest first)
            dist_cross = (window_valid.shape[1] - 1 - hidden)[:, None] - torch.arange(window_valid.shape[1])
        # Self keys: the cached frames, then the step's own k frames, oldest first.
        dist_self = (keep + torch.arange(k))[:, None] - torch.arange(keep + k)[None, :]  # (k, keep+k)
        self_valid = torch.cat([cache_valid, torch.ones(prev.shape[0], k, dtype=torch.bool)], dim=1)
        # One frame per stream runs on (B, d) rows: every Linear is then a plain matrix product plus
        # bias, which ONNX Runtime fuses into one Gemm (on (B, 1, d) it would add reshapes instead).
        x = self.inp(prev[:, 0] if k == 1 else prev)
        new_cache = []
        for n, layer in enumerate(self.layers):
            x, kv = layer(x, cache[n], _masked_bias(self.self_pos[n], dist_self, self_valid),
                          window_kv[n], _masked_bias(self.cross_pos[n], dist_cross, window_valid))
            new_cache.append(_newest(torch.cat([cache[n], kv], dim=2), keep, dim=2))
        if hidden is not None:
            window_kv, window_valid = window_kv[:, :, :, -width:], window_valid[:, -width:]
        out = self.outputs(x)
        return (out[:, None] if k == 1 else out, window_kv, window_valid, torch.stack(new_cache),
                _newest(self_valid, keep, dim=1))


def _newest(x: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """The last `count` entries along `dim`, as a constant slice (none for 0, where x[-0:]
    would be all of them)."""
    return x[(slice(None),) * dim + (slice(-count, None) if count else slice(0, 0),)]


def _band_bias(table: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """table (H, W) by distance; dist (T, S) → (1, H, T, S), -inf outside [0, W)."""
    valid = (dist >= 0) & (dist < table.shape[1])
    bias = table[:, dist.clamp(0, table.shape[1] - 1)]                                # (H, T, S)
    return bias.masked_fill(~valid, float("-inf")).unsqueeze(0)


def _masked_bias(table: torch.Tensor, dist: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """_band_bias, also -inf where valid (B, S) is False: (B, H, T, S)."""
    return _band_bias(table, dist).masked_fill(~valid[:, None, None, :], float("-inf"))


# --- the whole model ------------------------------------------------------------------------

class TalkModel(nn.Module):
    def __init__(self, dims: ModelDims, name: str = "talkmotion", header: dict | None = None, backbone=None):
        """`header`: a checkpoint's, for encoders that rebuild themselves from it; `backbone`:
        an already loaded pretrained model (tests)."""
        super().__init__()
        self.dims, self.name = dims, name
        self.timing = stream_timing(dims)
        self.encoder = encoders.build(dims.encoder, dims.d_model, header, backbone)
        self.decoder = Decoder(dims)
        # Label normalisation (from the training data) for the fed-back frames and the loss,
        # and which channels the model was trained on (the rest are left to post-processing).
        self.register_buffer("label_mean", torch.zeros(dims.n_channels))
        self.register_buffer("label_std", torch.ones(dims.n_channels))
        self.register_buffer("trained", torch.ones(dims.n_channels, dtype=torch.bool))

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames - self.label_mean) / self.label_std

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """Untrained channels rest at 0 instead of whatever an untrained head says."""
        return torch.where(self.trained, out, torch.zeros_like(out))

    def predicted(self) -> list[str]:
        """The channels the model was trained on, by name."""
        return [c for c, t in zip(labels.CHANNELS, self.trained.tolist()) if t]

    def features(self, batch: dict) -> torch.Tensor:
        """A batch (see data.dataset.collate) → audio features (B, J, d_model)."""
        return self.encoder.offline(batch)

    def forward(self, prev: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Teacher-forced / scheduled-sampling pass: prev (B, T, C) raw previous frames,
        memory (B, J, d_model) audio features → (B, T, C)."""
        last = torch.as_tensor(self.timing.last_feature(np.arange(prev.shape[1])))
        return self.finish(self.decoder(self.normalise(prev), self.decoder.memory_kv(memory), last))

    # --- the cached step ---
    def initial_decode_state(self, batch: int = 1) -> list[torch.Tensor]:
        """window_kv, window_valid, cache, cache_valid of streams that have heard nothing."""
        d = self.dims
        dh2 = 2 * d.d_model // d.n_heads
        device = self.label_mean.device
        return [torch.zeros(d.n_layers, batch, d.n_heads, d.audio_window, dh2, device=device),
                torch.zeros(batch, d.audio_window, dtype=torch.bool, device=device),
                torch.zeros(d.n_layers, batch, d.n_heads, d.self_window - 1, dh2, device=device),
                torch.zeros(batch, d.self_window - 1, dtype=torch.bool, device=device)]

    def step(self, prev, new_kv, window_kv, window_valid, cache, cache_valid, hidden=None):
        """k output frames for a batch of B streams, every piece of state explicit.

        prev (B, k, C) raw previous frames: frame q's input is frame q-1's output (fed back,
        so k = 1 per call when free running) or the truth (teacher forced, any k).
        new_kv (L, B, H, m, 2*dh): cross keys/values (`decoder.memory_kv`) of the m audio
        features these frames bring. hidden (k,) int, or None when every frame hears all m:
        how many of the newest features frame q must not hear yet.
        window_kv (L, B, H, W, 2*dh) and window_valid (B, W): the newest W features heard so
        far, oldest first; cache (L, B, H, S-1, 2*dh) and cache_valid (B, S-1): self
        keys/values of the S-1 previous frames, oldest first.
        Returns frames (B, k, C), then the next window_kv, window_valid, cache, cache_valid.
        """
        out, *state = self.decoder.step(self.normalise(prev), new_kv, window_kv, window_valid, cache,
                                        cache_valid, hidden)
        return (self.finish(out), *state)

    def free_run(self, memory: torch.Tensor, frames: int, targets: torch.Tensor | None = None,
                 p_teacher: float = 0.0, gen: torch.Generator | None = None) -> torch.Tensor:
        """Frames 0..frames-1 one at a time through `step`, as streaming computes them.

        memory (B, J, d_model) audio features covering every frame's look-ahead. Each frame
        is fed the previous output, or with probability `p_teacher` (per stream and frame,
        drawn from `gen`) the previous `targets` (B, T, C) frame. Returns (B, frames, C).
        """
        kv = self.decoder.memory_kv(memory)                                   # (L, B, H, J, 2*dh)
        batch = memory.shape[0]
        state = self.initial_decode_state(batch)
        prev = memory.new_zeros(batch, 1, self.dims.n_channels)
        added = self.timing.features_added(0, frames)
        start, outputs = 0, []
        for i in range(frames):
            end = start + int(added[i])
            out, *state = self.step(prev, kv[:, :, :, start:end], *state)
            start = end
            outputs.append(out)
            prev = out
            if p_teacher > 0:
                use_truth = torch.rand(batch, 1, 1, generator=gen) < p_teacher
                prev = torch.where(use_truth, targets[:, i:i + 1], out)
        return torch.cat(outputs, dim=1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def shift_previous(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C) targets → previous-frame inputs: a neutral row, then frames[:-1]."""
    start = torch.zeros_like(frames[:, :1])
    return torch.cat([start, frames[:, :-1]], dim=1)
