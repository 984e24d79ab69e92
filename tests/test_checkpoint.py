"""Checkpoints: safetensors + JSON header, exact round trip, clear errors on bad files."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from talkmotion import labels
from talkmotion.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from talkmotion.postprocess import PostOptions
from talkmotion.runtime import make_runtime
from talkmotion.stream import Animator


def frames_of(model):
    pcm = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    a = Animator(make_runtime(model), PostOptions(blinks="off", gaze="off"))
    return np.concatenate([a.push(pcm).values, a.flush().values])


@pytest.mark.slow
def test_round_trip_gives_identical_frames(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model, training={"steps": 3})
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(frames_of(loaded), frames_of(tiny_model))
    header = read_header(path)
    assert header["dims"]["d_model"] == tiny_model.dims.d_model and header["training"]["steps"] == 3


@pytest.mark.slow
def test_half_precision_export_is_close(tiny_model, tmp_path):
    path = tmp_path / "m16.safetensors"
    save_checkpoint(path, tiny_model, dtype=torch.float16)
    half, full = frames_of(load_checkpoint(path)), frames_of(tiny_model)
    shapes = labels.NUM_BLENDSHAPES                     # weights 0..1, then head angles in degrees
    np.testing.assert_allclose(half[:, :shapes], full[:, :shapes], atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(half[:, shapes:], full[:, shapes:], atol=0.1)


def test_other_label_spec_is_refused(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model)
    tensors = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    header = read_header(path)
    header["spec"] = "arkit51/v0"
    save_file(tensors, str(path), metadata={"talkmotion": json.dumps(header)})
    with pytest.raises(CheckpointError, match="label spec"):
        load_checkpoint(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_truncated_checkpoint(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_weights_not_matching_dims(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model)
    header = read_header(path)
    header["dims"]["n_layers"] = 3
    tensors = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(tensors, str(path), metadata={"talkmotion": json.dumps(header)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)
