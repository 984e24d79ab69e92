"""Pretrained speech encoders through `transformers`, loaded from a local folder.

Tiny random HuBERT / wav2vec2 / WavLM configs are saved to a temp folder and loaded
back by path, the same code path as a hub id. No network.
"""

import numpy as np
import pytest
import torch
from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig,
                          WavLMModel)

from talkmotion.checkpoint import load_model, save_model
from talkmotion.model import ModelDims, TalkModel
from talkmotion.postprocess import PostOptions
from talkmotion.stream import Animator

TINY_SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
RAW = PostOptions(blinks="off", gaze="off", head_motion=0.0)


def stream(model, pcm, chunk):
    a = Animator(model, RAW)
    return np.concatenate([a.push(pcm[i:i + chunk]).values for i in range(0, pcm.size, chunk)]
                          + [a.flush().values])


@pytest.mark.parametrize("config,cls", [(HubertConfig, HubertModel), (Wav2Vec2Config, Wav2Vec2Model),
                                        (WavLMConfig, WavLMModel)])
def test_pretrained_encoder_from_local_folder(tmp_path, config, cls):
    torch.manual_seed(0)
    cls(config(**TINY_SPEECH)).save_pretrained(tmp_path / "speech")
    dims = ModelDims(encoder="pretrained", pretrained=str(tmp_path / "speech"), d_model=32, n_heads=2, d_ff=64,
                     self_window=8, audio_window=12, dropout=0.0)
    model = TalkModel(dims).eval()
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())   # frozen by default
    pcm = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    whole = stream(model, pcm, pcm.size)
    assert whole.shape == (30, dims.n_channels)
    np.testing.assert_allclose(stream(model, pcm, 500), whole, atol=1e-4)   # chunking invariance
    save_model(tmp_path / "m.safetensors", model)
    reloaded = load_model(tmp_path / "m.safetensors")                        # needs only the file
    np.testing.assert_allclose(stream(reloaded, pcm, 4000), whole, atol=1e-4)


def test_pretrained_latency_includes_its_block():
    dims = ModelDims(encoder="pretrained", pretrained="unused", pretrained_block=5)
    assert dims.latency_ms == pytest.approx(ModelDims().latency_ms + 100)


def test_onnx_backend_refuses_a_pretrained_encoder_in_one_line(tmp_path, capsys):
    from talkmotion.audio import write_wav
    from talkmotion.cli import main

    torch.manual_seed(0)
    HubertModel(HubertConfig(**TINY_SPEECH)).save_pretrained(tmp_path / "speech")
    dims = ModelDims(encoder="pretrained", pretrained=str(tmp_path / "speech"), d_model=32, n_heads=2, d_ff=64,
                     self_window=8, audio_window=12, dropout=0.0)
    save_model(tmp_path / "m.safetensors", TalkModel(dims).eval())
    write_wav(tmp_path / "a.wav", np.zeros(8000, np.float32) + 0.01)
    assert main(["animate", str(tmp_path / "a.wav"), "--model", str(tmp_path / "m.safetensors"),
                 "--backend", "onnx", "-o", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert "ONNX export supports the mel encoder" in err and "--backend torch" in err and "Traceback" not in err
    assert not (tmp_path / "a.json").exists()
