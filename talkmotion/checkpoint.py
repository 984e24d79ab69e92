"""Model checkpoints and training state: safetensors + JSON. Loading never unpickles.

Model (`save_checkpoint` / `load_checkpoint`), header under the metadata key "talkmotion":
  {"format": "talkmotion.model", "version": 2, "name": str, "dims": {ModelDims, encoder nested},
   "spec": labels.SPEC_ID, "channels": [names], "predicted": [names the model was trained on],
   "training": {record}, ...the encoder kind's own fields (encoder.header())}
Version 1 (ModelDims flat, the shipped model v3) is read too. `load_checkpoint(path)` needs
nothing but the file.

Training state (`save_training_state` / `load_training_state`): named groups of tensors,
stored as "<group>/<key>", and a JSON record under "talkmotion.train".

Weights that are not finite are refused both ways, naming the tensor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from . import encoders, labels
from .config import ConfigError, from_dict
from .errors import TalkmotionError
from .files import atomic_path
from .model import ModelDims, TalkModel

FORMAT = "talkmotion.model"
VERSION = 2
READS = (1, 2)
TRAIN_KEY = "talkmotion.train"


class CheckpointError(TalkmotionError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def header_of(model: TalkModel, training: dict | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "name": model.name, "dims": dataclasses.asdict(model.dims),
            "spec": labels.SPEC_ID, "channels": list(labels.CHANNELS), "predicted": model.predicted(),
            "training": training or {}, **model.encoder.header()}


def save_checkpoint(path: str | Path, model: TalkModel, training: dict | None = None,
                    dtype: torch.dtype | None = None) -> None:
    """Write weights + header atomically. `dtype=torch.float16` halves the file."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    check_finite(tensors, path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"talkmotion": json.dumps(header_of(model, training))})


def check_finite(tensors: dict[str, torch.Tensor], path) -> None:
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values")


def read_header(path: str | Path) -> dict:
    """The checkpoint's header, in the current format whichever it was written in."""
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
    if header.get("format") != FORMAT or header.get("version") not in READS:
        raise CheckpointError(f"{path}: not a talkmotion model v{VERSION} "
                              f"(format={header.get('format')!r}, version={header.get('version')!r})")
    if header.get("spec") != labels.SPEC_ID or header.get("channels") != list(labels.CHANNELS):
        raise CheckpointError(f"{path}: trained for label spec {header.get('spec')!r}; this talkmotion uses "
                              f"{labels.SPEC_ID!r}")
    return _upgrade(header, path)


def _upgrade(header: dict, path: Path) -> dict:
    """A version-1 header as version 2: the encoder's fields nested, in `dims` and in the
    training record's model config."""
    if header["version"] == 1:
        try:
            header["dims"] = encoders.from_flat_v1(header["dims"])
            config = header.get("training", {}).get("config", {})
            if "model" in config:
                config["model"] = encoders.from_flat_v1(config["model"])
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from err
        header["version"] = VERSION
    return header


def load_checkpoint(path: str | Path | None = None, device: str = "cpu") -> TalkModel:
    """A model in eval mode from a checkpoint, or an embedded model's by name ("default",
    "quality"); None loads the default model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .assets import checkpoint_path

    path = checkpoint_path(path)
    header = read_header(path)
    try:
        dims = from_dict(ModelDims, header["dims"], f"{path}: dims")
    except ConfigError as err:
        raise CheckpointError(str(err)) from err
    model = TalkModel(dims, name=header.get("name", path.stem), header=header)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: weights cannot be read ({err})") from err
    check_finite(state, path)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise CheckpointError(f"{path}: weights do not match the dims in its header ({str(err)[:300]})") from err
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the dims in its header "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


# --- training state ------------------------------------------------------------------------------

def save_training_state(path: str | Path, groups: dict[str, dict[str, torch.Tensor]], record: dict) -> None:
    """Named groups of tensors (e.g. "model", "ema", "optim") and a JSON record, atomically."""
    from safetensors.torch import save_file

    tensors = {f"{group}/{key}": value.detach().cpu().contiguous()
               for group, members in groups.items() for key, value in members.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={TRAIN_KEY: json.dumps(record)})


def load_training_state(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(groups, record) as `save_training_state` wrote them."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            record = json.loads((f.metadata() or {})[TRAIN_KEY])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable training state ({err})") from err
    if any("/" not in key for key in tensors):
        raise CheckpointError(f"{path}: a training state from an older talkmotion; start a new out_dir")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        group, name = key.split("/", 1)
        groups.setdefault(group, {})[name] = value
    return groups, record


def optimizer_tensors(state: dict) -> dict[str, torch.Tensor]:
    """An optimizer's state_dict()["state"] as flat tensors "<param>.<name>"."""
    return {f"{i}.{name}": torch.as_tensor(value) for i, st in state.items() for name, value in st.items()}


def optimizer_state(tensors: dict[str, torch.Tensor]) -> dict:
    """The inverse of `optimizer_tensors`."""
    state: dict = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    return state
