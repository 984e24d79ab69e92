"""The talkmotion model: audio encoder → autoregressive Transformer decoder → ARKit frames.

Read top to bottom:
  ModelDims       every size, saved inside the checkpoint
  MelEncoder      log-mel → causal conv stack, 50 features per second (default)
  PretrainedEncoder  HuBERT / wav2vec2 / WavLM via `transformers`, frozen, 50 features/s
  Attention       our own multi-head attention with relative-position bias and a KV cache
  Decoder         causal self-attention over previous output frames + cross-attention to a
                  bounded window of audio features, split output heads
  TalkModel       both, plus the label normalisation and the offline (training) forward

Timing. Audio feature j (50 per second) is ready once `feature_need(j)` samples have
arrived. Output frame i (30 per second) is computed once `frame_need(i)` samples have
arrived: the end of its own interval plus `lookahead_ms`. It attends to the
`audio_window` newest features that are ready by then and to the `self_window` newest
output frames (itself included). Both windows are bounded, so a streaming step costs
the same at minute one and at hour ten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import labels
from .audio import FPS, SAMPLE_RATE, MelSpec, frame_to_sample

FEATURE_HOP = 320  # samples between audio features: 20 ms, the rate of HuBERT-style encoders too


@dataclass(frozen=True)
class ModelDims:
    # audio encoder
    encoder: str = "mel"          # "mel" (trained from scratch) or "pretrained" (transformers model)
    pretrained: str = ""          # hub id or local directory when encoder == "pretrained"
    pretrained_layer: int = -1    # which hidden layer of the pretrained model to use
    pretrained_context_s: float = 2.0  # audio context the pretrained encoder sees per block
    pretrained_block: int = 5     # features computed per pretrained-encoder call (5 = 100 ms)
    freeze_encoder: bool = True   # pretrained weights stay frozen unless False
    n_mels: int = 80
    d_audio: int = 128            # width of the conv encoder
    encoder_layers: int = 4       # dilated causal conv blocks after the strided input conv
    encoder_kernel: int = 3
    lookahead_ms: float = 60.0    # audio after a frame's end that the frame may hear
    audio_window: int = 40        # audio features a frame attends to (40 = 0.8 s)
    # decoder
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    self_window: int = 24         # output frames a frame attends to, itself included
    dropout: float = 0.1
    # output
    fps: int = FPS
    n_channels: int = labels.NUM_CHANNELS
    spec: str = labels.SPEC_ID

    @property
    def lookahead_samples(self) -> int:
        return int(round(self.lookahead_ms * SAMPLE_RATE / 1000))

    @property
    def first_feature_need(self) -> int:
        """Samples needed for feature 0: mel frames 0..1 (mel) or one 25 ms window (pretrained)."""
        mel = MelSpec()
        return mel.hop + mel.n_fft if self.encoder == "mel" else 400

    def feature_need(self, j: int) -> int:
        return FEATURE_HOP * j + self.first_feature_need

    def feature_centre(self, j):
        """Sample at the middle of the audio feature j is computed from (int or array).

        A mel feature reads mel frames 2j-2 .. 2j+1 (three hops and one window); a
        pretrained encoder's feature reads one 25 ms window.
        """
        mel = MelSpec()
        span = 3 * mel.hop + mel.n_fft if self.encoder == "mel" else 400
        return FEATURE_HOP * np.asarray(j) + self.first_feature_need - span // 2

    def frame_need(self, i: int) -> int:
        return frame_to_sample(i + 1, self.fps) + self.lookahead_samples

    def last_feature_for_frame(self, i):
        """Index of the newest audio feature frame i may use (int or array of ints).

        Never below 0: the first frames wait for feature 0 if the look-ahead is tiny.
        """
        if isinstance(i, (int, np.integer)):
            return max(0, (self.frame_need(int(i)) - self.first_feature_need) // FEATURE_HOP)
        need = np.round((np.asarray(i) + 1) * SAMPLE_RATE / self.fps).astype(np.int64) + self.lookahead_samples
        return np.maximum(0, (need - self.first_feature_need) // FEATURE_HOP)

    def samples_for_frame(self, i: int) -> int:
        """Samples a stream must hold before frame i can be computed (pretrained encoders
        work in whole blocks, so they may need a little more than `frame_need`)."""
        need = self.frame_need(i)
        if self.encoder == "pretrained":
            n = self.pretrained_block
            block_end = (self.last_feature_for_frame(i) // n + 1) * n - 1
            need = max(need, self.feature_need(block_end))
        return need

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: look-ahead plus one frame (plus a block for pretrained encoders)."""
        block = self.pretrained_block * FEATURE_HOP / SAMPLE_RATE * 1000 if self.encoder == "pretrained" else 0
        return self.lookahead_ms + 1000 / self.fps + block


# --- audio encoders -------------------------------------------------------------------

class CausalConvBlock(nn.Module):
    """x + W(gelu(dilated causal conv(LN(x)))). Streaming keeps the conv's last inputs.

    The conv is written as taps gathered along channels and one Linear: for the few
    frames of a streaming step that is several times cheaper than conv1d on a CPU.
    """

    def __init__(self, dim: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Linear(kernel * dim, dim)   # taps oldest first
        self.proj = nn.Linear(dim, dim)
        self.kernel, self.dilation = kernel, dilation
        self.context = (kernel - 1) * dilation      # past frames the conv needs

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), past (B, context, C) normalised inputs → (B, T, C), new past."""
        h = torch.cat([past, self.norm(x)], dim=1)                        # (B, context+T, C)
        # Tap k is h[k*dilation : k*dilation + T], written with a constant end so an ONNX
        # export with a dynamic T needs no shape arithmetic.
        ends = [(self.kernel - 1 - k) * self.dilation for k in range(self.kernel)]
        taps = torch.cat([h[:, k * self.dilation: -e] if e else h[:, k * self.dilation:]
                          for k, e in enumerate(ends)], dim=-1)
        return x + self.proj(F.gelu(self.conv(taps))), h[:, -self.context:] if self.context else h[:, :0]


class MelEncoder(nn.Module):
    """Log-mel (100/s) → features (50/s). Feature j sees mel frames up to 2j+1 and never later."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.register_buffer("mel_mean", torch.zeros(dims.n_mels))
        self.register_buffer("mel_std", torch.ones(dims.n_mels))
        # Feature j from mel frames 2j-2 .. 2j+1: a stride-2, kernel-4 conv as one Linear.
        self.inp = nn.Linear(4 * dims.n_mels, dims.d_audio)
        self.blocks = nn.ModuleList(
            CausalConvBlock(dims.d_audio, dims.encoder_kernel, 2 ** k) for k in range(dims.encoder_layers))
        self.out = nn.Sequential(nn.LayerNorm(dims.d_audio), nn.Linear(dims.d_audio, dims.d_model))
        self.silence = math.log(MelSpec().floor)
        self.d_audio = dims.d_audio

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Mel history (2 frames of normalised silence), then each block's past inputs (zeros)."""
        mel_pad = ((self.silence - self.mel_mean) / self.mel_std).expand(batch, 2, -1)
        return [mel_pad.clone()] + [torch.zeros(batch, b.context, self.d_audio, device=mel_pad.device)
                                    for b in self.blocks]

    def forward(self, mel: torch.Tensor, state: list[torch.Tensor]):
        """mel (B, 2m, n_mels) raw log-mel → features (B, m, d_model), new state."""
        x = torch.cat([state[0], (mel - self.mel_mean) / self.mel_std], dim=1)    # (B, 2m+2, n_mels)
        # Feature j's input: mel rows 2j .. 2j+3 of x side by side (strided slices, no reshape,
        # so an ONNX export with a dynamic m needs no shape arithmetic).
        taps = torch.cat([x[:, 0:-2:2], x[:, 1:-1:2], x[:, 2::2], x[:, 3::2]], dim=-1)  # (B, m, 4*n_mels)
        h = F.gelu(self.inp(taps))                                                   # (B, m, d_audio)
        new_state = [x[:, -2:]]
        for block, past in zip(self.blocks, state[1:]):
            h, past = block(h, past)
            new_state.append(past)
        return self.out(h), new_state

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Whole sequence at once: (B, T_mel, n_mels) → (B, T_mel // 2, d_model)."""
        mel = mel[:, : mel.shape[1] // 2 * 2]
        return self(mel, self.initial_state(mel.shape[0]))[0]


class PretrainedEncoder(nn.Module):
    """A `transformers` speech encoder (HuBERT, wav2vec2, WavLM), frozen by default.

    These encoders attend both ways over their input, so features are computed in
    fixed blocks of `pretrained_block` features, each from the block's audio plus
    `pretrained_context_s` of history: offline and streaming use the same blocks and
    give the same features, and the cost per block is bounded.
    """

    def __init__(self, dims: ModelDims, model=None):
        super().__init__()
        from transformers import AutoModel

        self.dims = dims
        self.backbone = model if model is not None else AutoModel.from_pretrained(dims.pretrained)
        if dims.freeze_encoder:
            self.backbone.requires_grad_(False)
        width = self.backbone.config.hidden_size
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dims.d_model))
        self.context = int(dims.pretrained_context_s * SAMPLE_RATE) // FEATURE_HOP * FEATURE_HOP

    def block_features(self, pcm: torch.Tensor, block: int, offset: int = 0) -> torch.Tensor:
        """Features [block*n, (block+1)*n) → (B, n, d_model); pcm (B, N) starts at sample `offset`."""
        n = self.dims.pretrained_block
        end = self.dims.feature_need(n * (block + 1) - 1)
        start = max(0, end - self.context - n * FEATURE_HOP - 80)
        audio = pcm[:, start - offset:end - offset]
        audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-5)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.dims.freeze_encoder):
            hidden = self.backbone(audio, output_hidden_states=True).hidden_states[self.dims.pretrained_layer]
        return self.out(hidden[:, hidden.shape[1] - n:])

    def encode_pcm(self, pcm: torch.Tensor) -> torch.Tensor:
        """(B, N) padded audio → (B, J, d_model), every complete block."""
        n = self.dims.pretrained_block
        blocks = [b for b in range(pcm.shape[1]) if self.dims.feature_need(n * (b + 1) - 1) <= pcm.shape[1]]
        return torch.cat([self.block_features(pcm, b) for b in blocks], dim=1)


# --- attention ---------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head attention with an additive bias (relative position + mask).

    Self-attention takes (x, None) and projects q, k, v from x; cross-attention takes
    (x, memory) and projects k, v from memory.
    """

    def __init__(self, d: int, n_heads: int, cross: bool):
        super().__init__()
        self.n_heads, self.head_dim, self.cross = n_heads, d // n_heads, cross
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) → (B, H, T, d/H)
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, d) → keys and values side by side, (B, H, S, 2*dh)."""
        return self.heads(self.kv(x))

    def forward(self, x, memory, bias, cache=None, memory_kv=None):
        """x (B, T, d); memory (B, S, d) or None; bias (B or 1, H, T, S'); cache (B, H, P, 2*dh).

        Cross-attention may pass `memory_kv` (B, H, S, 2*dh) already projected instead of
        memory: streaming projects each audio feature once, not once per frame.
        Returns (B, T, d) and, for self-attention, the new keys/values (B, H, T, 2*dh)
        so the caller can append them to its cache. Plain matmul-softmax-matmul: at a
        few frames per call this exports to fewer ONNX nodes than fused attention.
        """
        q = self.heads(self.q(x) * self.scale)
        kv = memory_kv if memory_kv is not None else self.project_kv(x if memory is None else memory)
        new = kv if memory is None and memory_kv is None else None
        if cache is not None:
            kv = torch.cat([cache, kv], dim=2)
        k, v = kv[..., :self.head_dim], kv[..., self.head_dim:]   # constant slices: no shape ops in ONNX
        weights = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)  # (B, H, T, S)
        y = (weights @ v).transpose(1, 2).flatten(2)                      # (B, T, d)
        return self.out(y), new


class DecoderLayer(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        d = dims.d_model
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, dims.n_heads, cross=False)
        self.cross_attn = Attention(d, dims.n_heads, cross=True)
        self.mlp = nn.Sequential(nn.Linear(d, dims.d_ff), nn.GELU(), nn.Linear(dims.d_ff, d))
        self.drop = nn.Dropout(dims.dropout)

    def forward(self, x, memory, self_bias, cross_bias, cache=None, memory_kv=None):
        h, new_kv = self.self_attn(self.norm1(x), None, self_bias, cache)
        x = x + self.drop(h)
        x = x + self.drop(self.cross_attn(self.norm2(x), memory, cross_bias, memory_kv=memory_kv)[0])
        x = x + self.drop(self.mlp(self.norm3(x)))
        return x, new_kv


class Decoder(nn.Module):
    """Previous output frame + audio window → next frame (blendshapes in [0,1], head bounded)."""

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

    def forward(self, prev: torch.Tensor, memory: torch.Tensor, last_feature: torch.Tensor) -> torch.Tensor:
        """Whole sequences (training, offline).

        prev (B, T, C) normalised previous frames; memory (B, J, d) audio features;
        last_feature (T,) newest feature index each frame may use. Returns (B, T, C).
        """
        t, j = prev.shape[1], memory.shape[1]
        dist_self = torch.arange(t)[:, None] - torch.arange(t)[None, :]              # (T, T)
        dist_cross = last_feature[:, None] - torch.arange(j)[None, :]               # (T, J)
        x = self.inp(prev)
        for n, layer in enumerate(self.layers):
            sb = _band_bias(self.self_pos[n], dist_self)
            cb = _band_bias(self.cross_pos[n], dist_cross)
            x, _ = layer(x, memory, sb, cb)
        return self.outputs(x)

    def memory_kv(self, memory: torch.Tensor) -> torch.Tensor:
        """Audio features (B, S, d) → every layer's cross-attention keys/values (L, B, H, S, 2*dh)."""
        return torch.stack([layer.cross_attn.project_kv(memory) for layer in self.layers])

    def step(self, prev, window_kv, window_valid, cache, cache_valid):
        """One frame for a batch of streams (the streaming and ONNX path).

        prev (B, 1, C) normalised previous frame; window_kv (L, B, H, W, 2*dh) cross keys and
        values of the newest audio features (oldest first, from `memory_kv`) with window_valid
        (B, W) bool; cache (L, B, H, S-1, 2*dh) self keys/values of the S-1 previous frames
        (oldest first) with cache_valid (B, S-1) bool.
        Returns frame (B, 1, C) and the new cache (the oldest entry dropped).
        """
        x = self.inp(prev)
        ones = torch.ones_like(cache_valid[:, :1])
        self_valid = torch.cat([cache_valid, ones], dim=1)                          # (B, S)
        new_cache = []
        for n, layer in enumerate(self.layers):
            sb = _step_bias(self.self_pos[n], self_valid)
            cb = _step_bias(self.cross_pos[n], window_valid)
            x, kv = layer(x, None, sb, cb, cache[n], memory_kv=window_kv[n])
            new_cache.append(torch.cat([cache[n][:, :, 1:], kv], dim=2))
        return self.outputs(x), torch.stack(new_cache)


def _band_bias(table: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """table (H, W) by distance; dist (T, S) → (1, H, T, S), -inf outside [0, W)."""
    valid = (dist >= 0) & (dist < table.shape[1])
    bias = table[:, dist.clamp(0, table.shape[1] - 1)]                                # (H, T, S)
    return bias.masked_fill(~valid, float("-inf")).unsqueeze(0)


def _step_bias(table: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bias for one query over a window ordered oldest first: (B, H, 1, W)."""
    bias = table.flip(-1)[None, :, None, :]                                          # (1, H, 1, W)
    return bias.masked_fill(~valid[:, None, None, :], float("-inf"))


# --- the whole model ------------------------------------------------------------------------

class TalkModel(nn.Module):
    def __init__(self, dims: ModelDims, pretrained_model=None):
        super().__init__()
        self.dims = dims
        if dims.encoder == "mel":
            self.encoder = MelEncoder(dims)
        elif dims.encoder == "pretrained":
            self.encoder = PretrainedEncoder(dims, pretrained_model)
        else:
            raise ValueError(f"unknown encoder {dims.encoder!r}; use 'mel' or 'pretrained'")
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

    def audio_features(self, pcm: torch.Tensor, mel: torch.Tensor | None) -> torch.Tensor:
        """Padded audio (B, N) and its log-mel (B, T_mel, n_mels) → (B, J, d_model)."""
        if self.dims.encoder == "mel":
            return self.encoder.encode(mel)
        return self.encoder.encode_pcm(pcm)

    def forward(self, prev: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Teacher-forced / scheduled-sampling pass: prev (B, T, C) raw previous frames."""
        last = torch.as_tensor(self.dims.last_feature_for_frame(np.arange(prev.shape[1])))
        return self.finish(self.decoder(self.normalise(prev), memory, last))

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def shift_previous(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C) targets → previous-frame inputs: a neutral row, then frames[:-1]."""
    start = torch.zeros_like(frames[:, :1])
    return torch.cat([start, frames[:, :-1]], dim=1)
