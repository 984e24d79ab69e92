"""The "mel" encoder kind: log-mel (100/s) → a causal conv stack → features (50/s), trained from scratch.

Everything about this kind is here: its config, its feature timing, the network, its
streaming state (named, so it becomes inputs and outputs of the exported graph) and
what the streaming side feeds it (log-mel frames, computed in numpy by
`runtime.sources.MelSource`).

Feature j reads mel frames 2j-2 .. 2j+1 (TAPS frames ending at its own STRIDE frames)
and never later ones, so it is ready once mel frame 2j+1 is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import MelSpec, log_mel
from ..config import ConfigError
from ..timing import MEL_HOP, MEL_WINDOW, N_MELS, FeatureTiming

STRIDE = 2   # mel frames per feature: 100 mel frames per second → 50 features per second
TAPS = 4     # mel frames one feature reads: its own STRIDE frames and the two before


@dataclass(frozen=True)
class Config:
    kind: Literal["mel"] = "mel"
    n_mels: int = N_MELS          # mel bands in
    width: int = 128              # channels of the conv stack
    layers: int = 4               # dilated causal conv blocks after the strided input conv
    kernel: int = 3               # taps of each dilated conv

    def __post_init__(self):
        for name in ("n_mels", "width", "layers", "kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.encoder.{name} must be at least 1, got {getattr(self, name)}")


# Before checkpoint format 2, ModelDims held the encoder's fields flat, under these names.
FLAT_V1_NAMES = {"n_mels": "n_mels", "d_audio": "width", "encoder_layers": "layers", "encoder_kernel": "kernel"}


def feature_timing(cfg: Config) -> FeatureTiming:
    return FeatureTiming(hop=STRIDE * MEL_HOP,
                         first_need=(STRIDE - 1) * MEL_HOP + MEL_WINDOW,   # mel frame STRIDE-1 complete
                         span=(TAPS - 1) * MEL_HOP + MEL_WINDOW)


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
    """Log-mel frames → features. Streaming state: the last TAPS-STRIDE mel frames (normalised)
    and each block's past inputs."""

    export_refusal = None   # exports to ONNX

    def __init__(self, cfg: Config, d_model: int):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        # Feature j from mel frames 2j-2 .. 2j+1: a stride-2, kernel-4 conv as one Linear.
        self.inp = nn.Linear(TAPS * cfg.n_mels, cfg.width)
        self.blocks = nn.ModuleList(CausalConvBlock(cfg.width, cfg.kernel, 2 ** k) for k in range(cfg.layers))
        self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, d_model))
        self.silence = math.log(MelSpec().floor)

    # --- streaming ---
    def state_names(self) -> list[str]:
        return ["state_mel"] + [f"state_block{k}" for k in range(len(self.blocks))]

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Mel history (normalised silence), then each block's past inputs (zeros)."""
        mel_pad = ((self.silence - self.mel_mean) / self.mel_std).expand(batch, TAPS - STRIDE, -1)
        return [mel_pad.clone()] + [torch.zeros(batch, b.context, self.cfg.width, device=mel_pad.device)
                                    for b in self.blocks]

    def source_spec(self) -> dict:
        """What the streaming side feeds `step`: STRIDE log-mel frames per feature."""
        return {"type": "logmel", "mel": dataclasses.asdict(MelSpec(n_mels=self.cfg.n_mels)),
                "frames_per_feature": STRIDE}

    def make_source(self):
        from ..runtime.sources import source_from_spec

        return source_from_spec(self.source_spec())

    def step(self, mel: torch.Tensor, *state: torch.Tensor):
        """mel (B, STRIDE*m, n_mels) raw log-mel → features (B, m, d_model), then the new state."""
        x = torch.cat([state[0], (mel - self.mel_mean) / self.mel_std], dim=1)    # (B, 2m+2, n_mels)
        # Feature j's input: mel rows 2j .. 2j+3 of x side by side (strided slices, no reshape,
        # so an ONNX export with a dynamic m needs no shape arithmetic).
        taps = torch.cat([x[:, 0:-2:2], x[:, 1:-1:2], x[:, 2::2], x[:, 3::2]], dim=-1)  # (B, m, 4*n_mels)
        h = F.gelu(self.inp(taps))                                                   # (B, m, width)
        new_state = [x[:, -(TAPS - STRIDE):]]
        for block, past in zip(self.blocks, state[1:]):
            h, past = block(h, past)
            new_state.append(past)
        return (self.out(h), *new_state)

    # --- whole sequences (training, validation) ---
    def offline(self, batch: dict) -> torch.Tensor:
        """A batch's log-mel (B, T_mel, n_mels) → (B, T_mel // STRIDE, d_model)."""
        mel = batch["mel"]
        mel = mel[:, : mel.shape[1] // STRIDE * STRIDE]
        return self.step(mel, *self.initial_state(mel.shape[0]))[0]

    @torch.no_grad()
    def fit_to(self, clips) -> None:
        """Normalise the mel by the training clips' statistics (a new model, before training)."""
        mels = np.concatenate([log_mel(c.audio) for c in clips[:200]])
        self.mel_mean.copy_(torch.from_numpy(mels.mean(0)))
        self.mel_std.copy_(torch.from_numpy(mels.std(0) + 1e-3))

    def header(self) -> dict:
        return {}


def batch_inputs(audio: np.ndarray) -> dict:
    """What `MelEncoder.offline` reads, computed where batches are made: audio (B, N) → log-mel."""
    return {"mel": torch.from_numpy(np.stack([log_mel(a) for a in audio]))}


def build(cfg: Config, d_model: int, header: dict | None = None, backbone=None) -> MelEncoder:
    return MelEncoder(cfg, d_model)
