"""Pretrained speech encoders through `transformers`, loaded from a local folder.

Tiny random HuBERT / wav2vec2 / WavLM configs are saved to a temp folder and loaded
back by path, the same code path as a hub id. No network.
"""

import numpy as np
import pytest
import torch
from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig,
                          WavLMModel)

from talkmotion.checkpoint import load_checkpoint, save_checkpoint
from talkmotion.config import ConfigError, from_dict
from talkmotion.model import ModelDims, TalkModel, stream_timing
from talkmotion.postprocess import PostOptions
from talkmotion.runtime import make_runtime
from talkmotion.stream import Animator

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

TINY_SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
RAW = PostOptions(blinks="off", gaze="off", head_motion=0.0)


def stream(model, pcm, chunk):
    a = Animator(make_runtime(model), RAW)
    return np.concatenate([a.push(pcm[i:i + chunk]).values for i in range(0, pcm.size, chunk)]
                          + [a.flush().values])


@pytest.mark.parametrize("config,cls", [(HubertConfig, HubertModel), (Wav2Vec2Config, Wav2Vec2Model),
                                        (WavLMConfig, WavLMModel)])
def test_pretrained_encoder_from_local_folder(tmp_path, config, cls):
    torch.manual_seed(0)
    cls(config(**TINY_SPEECH)).save_pretrained(tmp_path / "speech")
    dims = pretrained_dims(tmp_path / "speech")
    model = TalkModel(dims).eval()
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())   # frozen by default
    pcm = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    whole = stream(model, pcm, pcm.size)
    assert whole.shape == (30, dims.n_channels)
    np.testing.assert_allclose(stream(model, pcm, 500), whole, atol=1e-4)   # chunking invariance
    save_checkpoint(tmp_path / "m.safetensors", model)
    reloaded = load_checkpoint(tmp_path / "m.safetensors")                        # needs only the file
    np.testing.assert_allclose(stream(reloaded, pcm, 4000), whole, atol=1e-4)


def pretrained_dims(folder, **encoder):
    return from_dict(ModelDims, {"encoder": {"kind": "pretrained", "model": str(folder), **encoder}, "d_model": 32,
                                 "n_heads": 2, "d_ff": 64, "self_window": 8, "audio_window": 12, "dropout": 0.0})


def test_pretrained_latency_includes_its_block():
    dims = from_dict(ModelDims, {"encoder": {"kind": "pretrained", "model": "org/unused", "block": 5}})
    assert stream_timing(dims).latency_ms == pytest.approx(stream_timing(ModelDims()).latency_ms + 100)


def test_the_encoder_timing_derives_from_the_feature_extractor():
    from talkmotion.encoders import pretrained

    timing = pretrained.feature_timing(pretrained.Config(model="org/unused"))
    assert (timing.hop, timing.first_need) == (320, 400)     # wav2vec2's 20 ms hop and 25 ms receptive field


@pytest.mark.parametrize("folder, message", [("./missing-model", "is not a folder holding a transformers model"),
                                             ("", "must name a transformers speech model")])
def test_a_bad_pretrained_path_is_refused_when_the_config_is_built(folder, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelDims, {"encoder": {"kind": "pretrained", "model": folder}})


def test_onnx_backend_refuses_a_pretrained_encoder_in_one_line(tmp_path, capsys):
    from talkmotion.audio import write_wav
    from talkmotion.cli import main

    torch.manual_seed(0)
    HubertModel(HubertConfig(**TINY_SPEECH)).save_pretrained(tmp_path / "speech")
    save_checkpoint(tmp_path / "m.safetensors", TalkModel(pretrained_dims(tmp_path / "speech")).eval())
    write_wav(tmp_path / "a.wav", np.zeros(8000, np.float32) + 0.01)
    assert main(["animate", str(tmp_path / "a.wav"), "--model", str(tmp_path / "m.safetensors"),
                 "--backend", "onnx", "-o", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert "ONNX export supports the mel encoder" in err and "--backend torch" in err and "Traceback" not in err
    assert not (tmp_path / "a.json").exists()
