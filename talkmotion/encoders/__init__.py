"""Audio encoder kinds, by name. The only place that knows which kinds exist.

A kind is one module that owns everything about its encoder:
  Config                  frozen dataclass of its settings; `kind` names it (nested in ModelDims)
  FLAT_V1_NAMES           its fields' names in format-1 checkpoints, where ModelDims was flat
  feature_timing(cfg)     a timing.FeatureTiming: hop, what audio feature j needs, its centre
  batch_inputs(audio)     what the encoder reads from a batch besides its audio (B, N), made
                          where batches are made (in the data loader's workers)
  build(cfg, d_model, header=None, backbone=None)   its nn.Module, which provides
      offline(batch) -> (B, J, d_model)       whole sequences (training, validation)
      fit_to(clips)                           normalisation from training data (new models)
      state_names(), initial_state(batch)     named streaming state: inputs/outputs of the ONNX graph
      step(source, *state) -> (features, *state)   one streaming call
      make_source()                           a streaming source: audio → what step() reads
      source_spec() -> dict | None            that source as data an exported model keeps, so the
                                              numpy runtime rebuilds it (runtime.sources); None
                                              if it runs torch
      export_refusal                          None, or why it cannot export to ONNX
      header() -> dict                        extra checkpoint header fields build() reads back

Adding a kind is one module and one line in KINDS.
"""

from __future__ import annotations

import typing

from ..config import ConfigError
from . import mel, pretrained, whisper

KINDS = {
    "mel": mel,
    "pretrained": pretrained,
    "whisper": whisper,
}

# ModelDims.encoder holds one of these; config files choose one with `kind = "..."`.
EncoderConfig = typing.Union[tuple(module.Config for module in KINDS.values())]


def kind_of(cfg) -> typing.Any:
    """The module of `cfg`'s kind."""
    return KINDS[cfg.kind]


def config_types() -> dict[str, type]:
    return {name: module.Config for name, module in KINDS.items()}


def from_flat_v1(dims: dict) -> dict:
    """Format-1 ModelDims (encoder fields flat beside the decoder's) → format 2 (nested)."""
    flat = dict(dims)
    name = flat.pop("encoder", "mel")
    if name not in KINDS:
        raise ConfigError(f"encoder {name!r} is not one of {', '.join(KINDS)}")
    encoder = {"kind": name}
    for module in KINDS.values():
        for old, new in module.FLAT_V1_NAMES.items():
            if old in flat:
                value = flat.pop(old)
                if module is KINDS[name]:
                    encoder[new] = value
    flat["encoder"] = encoder
    return flat


def build(cfg, d_model: int, header: dict | None = None, backbone=None):
    return kind_of(cfg).build(cfg, d_model, header, backbone)


def feature_timing(cfg):
    return kind_of(cfg).feature_timing(cfg)


def batch_inputs(cfg, audio):
    return kind_of(cfg).batch_inputs(audio)
