"""The talkmotion model: audio encoder → Transformer decoder → ARKit frames.

Read top to bottom:
  ModelDims       every size: plain data saved inside the checkpoint, the encoder's config nested
  Attention       our own multi-head attention over given keys/values, with an additive bias
  Decoder         per output frame, a query from the newest audio feature it may hear; causal
                  self-attention over earlier frames' states + cross-attention to a bounded
                  window of audio features; split output heads
  TalkModel       encoder (one of the kinds in encoders/) + decoder + label normalisation:
                    step       k frames of a batch of streams with bounded caches: the one decode
                               path of streaming, training and validation
                    step_frame `step` for one frame that hears every new feature, with constant
                               shapes: live streaming's fast path, equal to `step` (tested)
                    forward    every frame of whole sequences: `step` once, from the empty state

The decoder never hears its own output: each frame is computed from the audio and the
decoder's states of earlier frames, so frames can be computed k at a time (a second of
audio in one call when animating a file), training needs no scheduled sampling, and no
error can feed on itself (an autoregressive head drifted to a fixed pose and froze there).

Timing (timing.StreamTiming, from the encoder kind and the dims): output frame i may hear
audio features up to `timing.last_feature(i)`, i.e. the audio up to the end of its own
interval plus `lookahead_ms`. It attends to the `audio_window` newest of those and to the
`self_window` newest frames (itself included). Both windows are bounded, so a step costs
the same at minute one and at hour ten.
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
        # The scale goes into the weights, where an export folds it: one operator fewer per attention.
        q = self.heads(nn.functional.linear(x, self.q.weight * self.scale, self.q.bias * self.scale))
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
    """Audio features → frames (blendshapes in [0,1], head bounded), k frames per step."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.inp = nn.Linear(dims.d_model, dims.d_model)     # a frame's query from its newest feature
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

    def encode_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio features (B, m, d) → the decoder's view of them: every layer's cross-attention
        keys/values (L, B, H, m, 2*dh) and each feature's frame query (B, m, d)."""
        # One product for every layer's keys/values and the queries (fewer, larger operators);
        # the weights are concatenated here, so checkpoints keep one Linear per use.
        weight = torch.cat([layer.cross_attn.kv.weight for layer in self.layers] + [self.inp.weight])
        bias = torch.cat([layer.cross_attn.kv.bias for layer in self.layers] + [self.inp.bias])
        out = nn.functional.linear(features, weight, bias)                     # (B, m, L*2d + d)
        split = len(self.layers) * 2 * self.dims.d_model
        kv = out[..., :split].unflatten(-1, (len(self.layers), self.dims.n_heads, -1)).permute(2, 0, 3, 1, 4)
        return kv, out[..., split:]

    def step(self, new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q):
        """k frames for a batch of streams, with bounded caches (see TalkModel.step)."""
        width, keep = self.dims.audio_window, self.dims.self_window - 1
        k, m = hidden.shape[0], new_q.shape[1]
        window_kv = torch.cat([window_kv, new_kv], dim=3)
        # Sized from new_q.shape, not ones_like(...): the ONNX exporter folds ones_like of a
        # traced tensor into a constant of the example's length.
        window_valid = torch.cat([window_valid, torch.ones(new_q.shape[0], m, dtype=torch.bool)], dim=1)
        # Frame q hears all but the newest hidden[q] features: their ages, oldest first.
        dist_cross = (window_valid.shape[1] - 1 - hidden)[:, None] - torch.arange(window_valid.shape[1])
        # Its query: the newest feature it hears (from before this step when it hears none of the new).
        queries = torch.cat([newest_q, new_q], dim=1)[:, m - hidden]                 # (B, k, d)
        # Self keys: the cached frames, then the step's own k frames, oldest first.
        dist_self = (keep + torch.arange(k))[:, None] - torch.arange(keep + k)[None, :]  # (k, keep+k)
        self_valid = torch.cat([cache_valid, torch.ones(new_q.shape[0], k, dtype=torch.bool)], dim=1)
        x, new_cache = queries, []
        for n, layer in enumerate(self.layers):
            x, kv = layer(x, cache[n], _masked_bias(self.self_pos[n], dist_self, self_valid),
                          window_kv[n], _masked_bias(self.cross_pos[n], dist_cross, window_valid))
            new_cache.append(_newest(torch.cat([cache[n], kv], dim=2), keep, dim=2))
        return (self.outputs(x), window_kv[:, :, :, -width:], window_valid[:, -width:], torch.stack(new_cache),
                _newest(self_valid, keep, dim=1), torch.cat([newest_q, new_q], dim=1)[:, -1:])

    def step_frame(self, new_kv, new_q, window_kv, window_valid, cache, cache_valid):
        """`step` for one frame that hears all of the m >= 1 new features (k = 1, hidden = [0]):
        what a live stream's 20 ms pushes ask for. The same arithmetic with every shape but
        m's constant: the frame's keys are exactly the next window and cache, so its
        position biases are the tables reversed, with no distance arithmetic (a third fewer
        ONNX operators). Returns what `step` returns."""
        width, keep = self.dims.audio_window, self.dims.self_window - 1
        window_kv = torch.cat([window_kv, new_kv], dim=3)[:, :, :, -width:]
        window_valid = torch.cat([window_valid, torch.ones_like(new_q[:, :, 0], dtype=torch.bool)], dim=1)[:, -width:]
        query = new_q[:, -1:]                                                          # (B, 1, d)
        self_valid = torch.cat([cache_valid, torch.ones_like(cache_valid[:, :1])], dim=1)   # (B, keep+1)
        x, new_cache = query[:, 0], []
        for n, layer in enumerate(self.layers):
            # Key s of `keep + 1` (or `width`) is keep - s (width - 1 - s) frames (features) old.
            x, kv = layer(x, cache[n], _valid_bias(self.self_pos[n].flip(-1), self_valid),
                          window_kv[n], _valid_bias(self.cross_pos[n].flip(-1), window_valid))
            new_cache.append(_newest(torch.cat([cache[n], kv], dim=2), keep, dim=2))
        return (self.outputs(x)[:, None], window_kv, window_valid, torch.stack(new_cache),
                _newest(self_valid, keep, dim=1), query)


def _newest(x: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """The last `count` entries along `dim`, as a constant slice (none for 0, where x[-0:]
    would be all of them)."""
    return x[(slice(None),) * dim + (slice(-count, None) if count else slice(0, 0),)]


def _band_bias(table: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """table (H, W) by distance; dist (T, S) → (1, H, T, S), -inf outside [0, W)."""
    valid = (dist >= 0) & (dist < table.shape[1])
    bias = table[:, dist.clamp(0, table.shape[1] - 1)]                                # (H, T, S)
    return bias.masked_fill(~valid, float("-inf")).unsqueeze(0)


def _valid_bias(table: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """table (H, S) by key, -inf where valid (B, S) is False: (B, H, 1, S), for one query."""
    return table[None, :, None, :].masked_fill(~valid[:, None, None, :], float("-inf"))


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
        # Label statistics of the training data (the loss's scale per channel; a fine-tune keeps
        # them), and which channels the model was trained on (the rest are left to post-processing).
        self.register_buffer("label_mean", torch.zeros(dims.n_channels))
        self.register_buffer("label_std", torch.ones(dims.n_channels))
        self.register_buffer("trained", torch.ones(dims.n_channels, dtype=torch.bool))

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """Untrained channels rest at 0 instead of whatever an untrained head says."""
        return torch.where(self.trained, out, torch.zeros_like(out))

    def predicted(self) -> list[str]:
        """The channels the model was trained on, by name."""
        return [c for c, t in zip(labels.CHANNELS, self.trained.tolist()) if t]

    def features(self, batch: dict) -> torch.Tensor:
        """A batch (see data.dataset.collate) → audio features (B, J, d_model)."""
        return self.encoder.offline(batch)

    def forward(self, memory: torch.Tensor, frames: int) -> torch.Tensor:
        """Frames 0..frames-1 of whole sequences (training, validation, offline): audio features
        memory (B, J, d_model) covering every frame's look-ahead → (B, frames, C). One `step`
        from the empty state: the same arithmetic as streaming them in any chunks."""
        last = self.timing.last_feature(np.arange(frames))
        memory = memory[:, :int(last[-1]) + 1]
        hidden = torch.as_tensor(memory.shape[1] - 1 - last)
        new_kv, new_q = self.decoder.encode_features(memory)
        return self.step(new_kv, new_q, hidden, *self.initial_decode_state(memory.shape[0]))[0]

    # --- the cached step ---
    def initial_decode_state(self, batch: int = 1) -> list[torch.Tensor]:
        """window_kv, window_valid, cache, cache_valid, newest_q of streams that have heard nothing."""
        d = self.dims
        dh2 = 2 * d.d_model // d.n_heads
        device = self.label_mean.device
        return [torch.zeros(d.n_layers, batch, d.n_heads, d.audio_window, dh2, device=device),
                torch.zeros(batch, d.audio_window, dtype=torch.bool, device=device),
                torch.zeros(d.n_layers, batch, d.n_heads, d.self_window - 1, dh2, device=device),
                torch.zeros(batch, d.self_window - 1, dtype=torch.bool, device=device),
                torch.zeros(batch, 1, d.d_model, device=device)]

    def step(self, new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid, newest_q):
        """k output frames for a batch of B streams, every piece of state explicit.

        new_kv (L, B, H, m, 2*dh) and new_q (B, m, d): `decoder.encode_features` of the m audio
        features these frames bring. hidden (k,) int64: how many of the newest features frame q
        must not hear yet (m - 1 - hidden[q] is the newest it hears; -1: none of the new ones).
        window_kv (L, B, H, W, 2*dh) and window_valid (B, W): the newest W features heard so
        far, oldest first; cache (L, B, H, S-1, 2*dh) and cache_valid (B, S-1): the decoder's
        self keys/values of the S-1 previous frames, oldest first; newest_q (B, 1, d): the
        query of the newest feature heard so far.
        Returns frames (B, k, C), then the next window_kv, window_valid, cache, cache_valid, newest_q.
        """
        out, *state = self.decoder.step(new_kv, new_q, hidden, window_kv, window_valid, cache, cache_valid,
                                        newest_q)
        return (self.finish(out), *state)

    def step_frame(self, new_kv, new_q, window_kv, window_valid, cache, cache_valid):
        """`step` for one frame that hears all of the m >= 1 new features (hidden = [0]; the
        previous newest_q is then never read): see Decoder.step_frame."""
        out, *state = self.decoder.step_frame(new_kv, new_q, window_kv, window_valid, cache, cache_valid)
        return (self.finish(out), *state)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
