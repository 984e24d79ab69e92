"""Model checkpoints: safetensors weights + a JSON header. Loading never unpickles.

Header (safetensors metadata key "talkmotion"):
  {"format": "talkmotion.model", "version": 1, "name": str, "dims": {ModelDims},
   "spec": labels.SPEC_ID, "channels": [names], "predicted": [names the model was trained on],
   "encoder_config": {transformers config, pretrained encoders only}, "training": {record}}
`load_model(path)` needs nothing but the file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from . import labels
from .config import ConfigError, from_dict
from .errors import TalkmotionError
from .files import atomic_path
from .model import ModelDims, TalkModel

FORMAT = "talkmotion.model"
VERSION = 1


class CheckpointError(TalkmotionError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def header_of(model: TalkModel, name: str = "", training: dict | None = None) -> dict:
    header = {
        "format": FORMAT, "version": VERSION, "name": name or "talkmotion", "dims": dataclasses.asdict(model.dims),
        "spec": labels.SPEC_ID, "channels": list(labels.CHANNELS),
        "predicted": [c for c, t in zip(labels.CHANNELS, model.trained.tolist()) if t],
        "training": training or {},
    }
    if model.dims.encoder == "pretrained":
        header["encoder_config"] = model.encoder.backbone.config.to_dict()
    return header


def save_model(path: str | Path, model: TalkModel, name: str = "", training: dict | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Write weights + header atomically. `dtype=torch.float16` halves the file."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"talkmotion": json.dumps(header_of(model, name, training))})


def read_header(path: str | Path) -> dict:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    try:
        header = json.loads(meta["talkmotion"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: safetensors file has no talkmotion header") from err
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a talkmotion model v{VERSION} "
                              f"(format={header.get('format')!r}, version={header.get('version')!r})")
    if header.get("spec") != labels.SPEC_ID or header.get("channels") != list(labels.CHANNELS):
        raise CheckpointError(f"{path}: trained for label spec {header.get('spec')!r}; this talkmotion uses "
                              f"{labels.SPEC_ID!r}")
    return header


def load_model(path: str | Path | None = None, device: str = "cpu") -> TalkModel:
    """A model in eval mode from a checkpoint; None loads the embedded default model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .assets import DEFAULT_MODEL

    path = Path(path) if path is not None else DEFAULT_MODEL
    header = read_header(path)
    try:
        dims = from_dict(ModelDims, header["dims"], f"{path}: dims")
    except ConfigError as err:
        raise CheckpointError(str(err)) from err
    backbone = _backbone_from_config(header["encoder_config"]) if dims.encoder == "pretrained" else None
    model = TalkModel(dims, pretrained_model=backbone)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: weights cannot be read ({err})") from err
    state = {k: v.to(model.state_dict()[k].dtype) if k in model.state_dict() else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise CheckpointError(f"{path}: weights do not match the dims in its header ({str(err)[:300]})") from err
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the dims in its header "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.name = header.get("name", path.stem)
    model.header = header
    return model.to(device).eval()


def _backbone_from_config(config: dict):
    """An untrained transformers model of the saved architecture; the checkpoint fills its weights."""
    from transformers import AutoConfig, AutoModel

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))
