"""The "pretrained" encoder kind: a `transformers` speech model (HuBERT, wav2vec2, WavLM), frozen by default.

These models attend both ways over their input, so features are computed in fixed
blocks of `block` features, each from the block's audio plus `context_s` of history:
offline and streaming use the same blocks and give the same features, and the cost per
block is bounded. Streaming runs the backbone in PyTorch (`PretrainedSource`), so the
step the runtime calls takes finished features; this kind does not export to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from ..timing import SAMPLE_RATE, FeatureTiming

# The wav2vec2 family's convolutional feature extractor, which sets the features' timing.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
HOP = math.prod(CONV_STRIDES)                                                  # 320 samples: 50/s
RECEPTIVE_FIELD = 1 + sum((k - 1) * math.prod(CONV_STRIDES[:n]) for n, k in enumerate(CONV_KERNELS))  # 400


@dataclass(frozen=True)
class Config:
    kind: Literal["pretrained"] = "pretrained"
    model: str = ""               # hub id or local directory of the transformers speech model
    layer: int = -1               # which hidden layer of the pretrained model to use
    context_s: float = 2.0        # audio history the model hears with each block
    block: int = 5                # features computed per call (5 = 100 ms)
    freeze: bool = True           # pretrained weights stay frozen unless False

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model.encoder.model must name a transformers speech model (a hub id or a local folder)")
        local = Path(self.model).expanduser()
        if (self.model.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").is_file():
            raise ConfigError(f"model.encoder.model {self.model!r} is not a folder holding a transformers model "
                              f"(no config.json there)")
        if self.block < 1:
            raise ConfigError(f"model.encoder.block must be at least 1, got {self.block}")
        if not (math.isfinite(self.context_s) and self.context_s >= 0):
            raise ConfigError(f"model.encoder.context_s must be 0 or more seconds, got {self.context_s}")


# Before checkpoint format 2, ModelDims held the encoder's fields flat, under these names.
FLAT_V1_NAMES = {"pretrained": "model", "pretrained_layer": "layer", "pretrained_context_s": "context_s",
                 "pretrained_block": "block", "freeze_encoder": "freeze"}


def feature_timing(cfg: Config) -> FeatureTiming:
    return FeatureTiming(hop=HOP, first_need=RECEPTIVE_FIELD, span=RECEPTIVE_FIELD, block=cfg.block)


class PretrainedEncoder(nn.Module):
    export_refusal = ("uses a pretrained transformers encoder; ONNX export supports the mel encoder, "
                      "run it with --backend torch")

    def __init__(self, cfg: Config, d_model: int, backbone=None):
        super().__init__()
        from transformers import AutoModel

        self.cfg = cfg
        self.timing = feature_timing(cfg)
        if backbone is None:
            try:
                backbone = AutoModel.from_pretrained(cfg.model)
            except OSError as err:   # not a local folder, and not a hub id that can be fetched
                reason = " ".join(str(err).split())[:200]
                raise ConfigError(f"model.encoder.model {cfg.model!r} cannot be loaded ({reason})") from None
        self.backbone = backbone
        extractor = (tuple(self.backbone.config.conv_kernel), tuple(self.backbone.config.conv_stride))
        if extractor != (CONV_KERNELS, CONV_STRIDES):
            raise ConfigError(f"{cfg.model}: its feature extractor (kernels, strides) {extractor} is not the "
                              f"wav2vec2 family's {(CONV_KERNELS, CONV_STRIDES)}")
        if cfg.freeze:
            self.backbone.requires_grad_(False)
        width = self.backbone.config.hidden_size
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d_model))
        self.context = int(cfg.context_s * SAMPLE_RATE) // HOP * HOP

    def block_features(self, pcm: torch.Tensor, block: int, offset: int = 0) -> torch.Tensor:
        """Features [block*n, (block+1)*n) → (B, n, d_model); pcm (B, N) starts at sample `offset`."""
        n = self.cfg.block
        end = self.timing.need(n * (block + 1) - 1)
        start = max(0, end - self.context - n * HOP - (RECEPTIVE_FIELD - HOP))
        audio = pcm[:, start - offset:end - offset]
        audio = (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-5)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze):
            hidden = self.backbone(audio, output_hidden_states=True).hidden_states[self.cfg.layer]
        return self.out(hidden[:, hidden.shape[1] - n:])

    # --- whole sequences (training, validation) ---
    def offline(self, batch: dict) -> torch.Tensor:
        """A batch's padded audio (B, N) → (B, J, d_model), every complete block."""
        pcm, n = batch["pcm"], self.cfg.block
        blocks = [b for b in range(pcm.shape[1]) if self.timing.need(n * (b + 1) - 1) <= pcm.shape[1]]
        return torch.cat([self.block_features(pcm, b) for b in blocks], dim=1)

    def fit_to(self, clips) -> None:
        pass        # the backbone brings its own normalisation

    def header(self) -> dict:
        """The backbone's architecture, so a checkpoint loads without the original model folder."""
        return {"encoder_config": self.backbone.config.to_dict()}

    # --- streaming: the backbone runs in `PretrainedSource`; the step passes its features on ---
    def state_names(self) -> list[str]:
        return []

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        return []

    def step(self, features: torch.Tensor):
        """features (B, m, d_model) from the source → the same, and no state."""
        return (features,)

    def source_spec(self) -> None:
        return None   # the source runs the backbone in PyTorch: nothing a numpy runtime could rebuild

    def make_source(self) -> "PretrainedSource":
        return PretrainedSource(self)


class PretrainedSource:
    """Audio → pretrained-encoder features, computed in fixed blocks over a bounded history."""

    def __init__(self, encoder: PretrainedEncoder):
        self.encoder = encoder
        self.block_size = encoder.cfg.block
        self.timing = encoder.timing
        self.history = np.zeros(0, np.float32)   # the newest samples, bounded
        self.history_start = 0                    # absolute index of history[0]
        self.block = 0
        self.ready = np.zeros((0, encoder.out[1].out_features), np.float32)
        self.keep = encoder.context + (self.block_size + 1) * HOP + RECEPTIVE_FIELD

    def push(self, pcm: np.ndarray) -> None:
        self.history = np.concatenate([self.history, pcm])

    def available(self) -> int:
        """Features ready, running the encoder on every block whose audio has arrived."""
        n = self.block_size
        while self.timing.need(n * (self.block + 1) - 1) <= self.history_start + self.history.size:
            with torch.inference_mode():
                feats = self.encoder.block_features(torch.from_numpy(self.history[None]), self.block,
                                                    self.history_start)
            self.ready = np.concatenate([self.ready, feats[0].numpy()])
            self.block += 1
        drop = max(0, self.history.size - self.keep)
        self.history, self.history_start = self.history[drop:], self.history_start + drop
        return len(self.ready)

    def take(self, count: int) -> np.ndarray:
        """(1, count, d_model) the next features."""
        out, self.ready = self.ready[:count], self.ready[count:]
        return out[None]


def batch_inputs(audio: np.ndarray) -> dict:
    return {}   # the encoder reads the batch's audio itself


def build(cfg: Config, d_model: int, header: dict | None = None, backbone=None) -> PretrainedEncoder:
    """The encoder for `cfg`; from a checkpoint `header`, an untrained backbone of the saved
    architecture (the checkpoint fills its weights), so loading needs only the file."""
    if backbone is None and header is not None:
        from transformers import AutoConfig, AutoModel

        saved = dict(header["encoder_config"])
        backbone = AutoModel.from_config(AutoConfig.for_model(saved.pop("model_type"), **saved))
    return PretrainedEncoder(cfg, d_model, backbone)
