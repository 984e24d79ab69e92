"""Our Whisper encoder module: weights read from CTranslate2's file match CTranslate2's own
output; the transformers path loads the same module; streaming equals offline; bad files."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkmotion import whisper
from talkmotion.assets import WHISPER_TINY_EN
from talkmotion.audio import load_audio
from talkmotion.assets import SAMPLE_SPEECH

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

# CTranslate2 4.8.5's encoder output (float16) for the first 3 s of the sample speech, from
# transformers' WhisperFeatureExtractor log-mel padded to 30 s: features 0..99 of 1500.
REFERENCE = "tests/data/whisper_tiny_en_ct2_encoder.npz"

needs_weights = pytest.mark.skipif(not WHISPER_TINY_EN.path.is_file(), reason="set-up installs Whisper tiny.en")


def exact_whisper(encoder: whisper.WhisperEncoder, mel: torch.Tensor) -> torch.Tensor:
    """Whisper's own encoder arithmetic (centred convs, full attention) with our module's weights."""
    x = F.gelu(F.conv1d(mel.transpose(1, 2), encoder.conv1.weight, encoder.conv1.bias, padding=1))
    x = F.gelu(F.conv1d(x, encoder.conv2.weight, encoder.conv2.bias, stride=2, padding=1)).transpose(1, 2)
    x = x + encoder.positions[:x.shape[1]]
    d = encoder.dims
    empty = x.new_zeros(1, 2, d.heads, 0, d.width // d.heads)
    for block in encoder.blocks:
        x, _ = block(x, empty, x.new_zeros(1, 1, 1, x.shape[1]))
    return x


@needs_weights
def test_weights_from_ctranslate2_give_ctranslate2s_output():
    from transformers import WhisperFeatureExtractor

    pcm = load_audio(SAMPLE_SPEECH)[:48000]
    mel = WhisperFeatureExtractor(feature_size=80)(pcm, sampling_rate=16000, return_tensors="np").input_features
    encoder = whisper.WhisperEncoder.from_ctranslate2(WHISPER_TINY_EN.path, whisper.WhisperDims(layers=4))
    final = whisper.read_ctranslate2(WHISPER_TINY_EN.path)
    with torch.no_grad():
        out = exact_whisper(encoder, torch.from_numpy(mel).transpose(1, 2))
        out = F.layer_norm(out, (384,), torch.from_numpy(final["layer_norm/gamma"].astype(np.float32)),
                           torch.from_numpy(final["layer_norm/beta"].astype(np.float32)))
    reference = np.load(REFERENCE)["features"].astype(np.float32)
    assert np.abs(out[0, :100].numpy() - reference).max() < 0.02     # float16 reference, |values| ~ 1
    assert np.abs(out[0, :100].numpy() - reference).mean() < 1e-3


def test_filterbank_is_whispers():
    from transformers.audio_utils import mel_filter_bank

    from talkmotion.audio import WHISPER_MEL, mel_filterbank

    theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                             sampling_rate=16000, norm="slaney", mel_scale="slaney")
    assert np.abs(mel_filterbank(WHISPER_MEL) - theirs).max() < 1e-6


def test_transformers_checkpoint_loads_into_the_same_module(tmp_path):
    """The hub-loading path, on a tiny random Whisper saved locally (no network here). It has three
    blocks: transformers reports the last one after the final layer norm, which we do not use."""
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=3, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=1500, vocab_size=100, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    model = WhisperModel(config).eval()
    model.save_pretrained(tmp_path / "tiny-whisper")
    ours = whisper.WhisperEncoder.from_transformers(str(tmp_path / "tiny-whisper"), whisper.WhisperDims(layers=2))
    assert (ours.dims.width, ours.dims.heads) == (32, 2)
    mel = torch.randn(1, 3000, 80)
    with torch.no_grad():
        hidden = model.encoder(mel.transpose(1, 2), output_hidden_states=True).hidden_states[2]
        mine = exact_whisper(ours, mel)
    assert torch.allclose(hidden, mine, atol=1e-4)


def test_streaming_in_any_chunks_equals_offline():
    torch.manual_seed(1)
    encoder = whisper.WhisperEncoder(whisper.WhisperDims(width=32, heads=2, layers=2, window=9))
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0, 0.2)
        encoder.positions.normal_(0, 0.5)
    pcm = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    from talkmotion.audio import WHISPER_MEL, MelStream

    stream = MelStream(WHISPER_MEL)
    mel_parts = [stream.push(pcm[a:a + 1234]) for a in range(0, pcm.size, 1234)]
    mel = np.concatenate(mel_parts)
    assert np.allclose(mel, whisper.whisper_log_mel(pcm), atol=1e-5)
    mel = torch.from_numpy(mel)[None]
    with torch.no_grad():
        whole = encoder.encode(mel)
        state, parts, start = encoder.initial_state(), [], 0
        for size in (2, 6, 2, 40, 10, 4, 200):
            features, state = encoder(mel[:, start:start + size], state)
            parts.append(features)
            start += size
    streamed = torch.cat(parts, dim=1)
    assert whole.shape[1] == mel.shape[1] // 2 and streamed.shape[1] > 90
    assert torch.allclose(whole[:, :streamed.shape[1]], streamed, atol=1e-5)
    # a feature only hears the past window: changing the audio 2 s earlier changes nothing now
    later = mel.clone()
    later[:, :4] += 1.0
    with torch.no_grad():
        assert torch.allclose(encoder.encode(later)[:, 20:], whole[:, 20:], atol=1e-5)
        assert not torch.allclose(encoder.encode(later)[:, :2], whole[:, :2])


def test_timing_constants_agree_with_the_streaming_arithmetic():
    # feature j reads mel frames 2j-2 .. 2j+1; frame m covers samples [160m, 160m + 400)
    j = np.arange(5)
    last_mel = 2 * j + 1
    assert np.array_equal(whisper.feature_need(j), last_mel * 160 + 400)
    assert np.array_equal(whisper.feature_centre(j), (2 * j - 1) * 160 + 200)


def test_bad_weight_files_are_one_line_errors(tmp_path):
    with pytest.raises(whisper.WhisperError, match="cannot read Whisper weights"):
        whisper.read_ctranslate2(tmp_path / "missing.bin")
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x06\x00\x00")
    with pytest.raises(whisper.WhisperError, match="truncated"):
        whisper.read_ctranslate2(short)
    other = tmp_path / "other.bin"
    other.write_bytes((7).to_bytes(4, "little") + b"\x00" * 16)
    with pytest.raises(whisper.WhisperError, match="binary version 7"):
        whisper.read_ctranslate2(other)
    if WHISPER_TINY_EN.path.is_file():
        cut = tmp_path / "cut.bin"
        cut.write_bytes(WHISPER_TINY_EN.path.read_bytes()[:200_000])
        with pytest.raises(whisper.WhisperError, match="cut.bin: truncated"):
            whisper.read_ctranslate2(cut)


# --- the "whisper" encoder kind ------------------------------------------------------------

def tiny_whisper_model(seed: int = 0):
    """A TalkModel whose encoder kind is "whisper", with a small random trunk (tests: no asset)."""
    from conftest import TINY
    from talkmotion.encoders.whisper import Config
    from talkmotion.model import ModelDims, TalkModel

    torch.manual_seed(seed)
    trunk = whisper.WhisperEncoder(whisper.WhisperDims(width=32, heads=2, layers=2, window=16))
    with torch.no_grad():
        for p in trunk.parameters():
            p.normal_(0, 0.2)
        trunk.positions.normal_(0, 0.5)
    dims = ModelDims(**{**TINY, "encoder": Config(layers=2, window=16)})
    return TalkModel(dims, name="tiny-whisper", backbone=trunk).eval(), trunk


def test_the_whisper_kind_streams_as_it_trains_and_exports(tmp_path):
    from talkmotion.runtime import make_runtime
    from talkmotion.runtime.export import compare_runtimes
    from talkmotion.stream import Animator
    from talkmotion.timing import num_frames
    from talkmotion.postprocess import PostOptions
    from talkmotion import encoders

    model, _ = tiny_whisper_model()
    pcm = (np.random.default_rng(3).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    t = num_frames(pcm.size)
    need = model.timing.samples_for_frame(t - 1)
    padded = np.concatenate([pcm, np.zeros(need - pcm.size, np.float32)])[None]
    with torch.no_grad():
        offline = model(model.features({"pcm": torch.from_numpy(padded),
                                        **encoders.batch_inputs(model.dims.encoder, padded)}), t)[0].numpy()
    raw = PostOptions(blinks="off", gaze="off", jaw_gate_db=0, head_motion=0.0)
    animator = Animator(make_runtime(model, "torch"), raw)
    streamed = np.concatenate([animator.push(pcm[a:a + 2345]).values for a in range(0, pcm.size, 2345)]
                              + [animator.flush().values])
    np.testing.assert_allclose(streamed, offline, atol=1e-4)
    onnx = make_runtime(model, "onnx")
    assert compare_runtimes(model, onnx, pcm, chunk=1111) < 1e-4
    assert compare_runtimes(model, onnx, pcm, chunk=320) < 1e-4    # live pushes: the one-frame graph


def test_a_whisper_checkpoint_holds_no_whisper_weights(tmp_path):
    from talkmotion.checkpoint import save_checkpoint

    model, trunk = tiny_whisper_model()
    assert not any(k.startswith("encoder.trunk") for k in model.state_dict())
    assert set(k.split(".")[1] for k in model.state_dict() if k.startswith("encoder.")) == {"out"}
    before = trunk.conv1.weight.clone()
    model.train()
    assert not trunk.training and not trunk.conv1.weight.requires_grad
    assert torch.equal(trunk.conv1.weight, before)
    save_checkpoint(tmp_path / "m.safetensors", model)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert not any("trunk" in k or "conv1" in k for k in f.keys())


# --- training on cached Whisper output (train.cached_encoder) -------------------------------

def cached_encoder_config(tmp_path, augment: dict | None = None, **extra):
    import json

    from conftest import TINY, make_dataset
    from talkmotion.config import load
    from talkmotion.train import TrainConfig

    data = make_dataset(tmp_path / "d", count=2, seconds=1.0, val=1)     # one training clip
    cfg = {"out_dir": str(tmp_path / "run"), "cached_encoder": True,
           "model": {**TINY, "encoder": {"kind": "whisper", "layers": 2, "window": 64}},
           "data": {"sources": [{"path": str(data)}], "crop_seconds": 1.5, "augment": augment or {"enabled": False},
                    "workers": 0, "max_val_clips": 0},
           "optim": {"steps": 2, "batch_size": 2}, **extra}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    return load(TrainConfig, tmp_path / "c.json")


@needs_weights
def test_cached_whisper_output_gives_the_features_the_encoder_computes_from_audio(tmp_path):
    """A crop that starts where its clip does: the model's features from the cache are those
    it computes from the audio (up to the cache's float16), so training on the cache teaches
    the model what it will hear when it runs."""
    from talkmotion.data.dataset import whole_clip_batch
    from talkmotion.train import Trainer

    trainer = Trainer(cached_encoder_config(tmp_path))
    batch = trainer.train_set.batch(0, 0, 2, trainer.model.dims, 0)
    assert "encoder_hidden" in batch and "whisper_mel" not in batch and "teacher" not in batch
    clip = trainer.train_set.clips[0]
    model = trainer.model.eval()
    with torch.no_grad():
        cached = model.features(batch)[0]
        heard = model.features(whole_clip_batch(clip, model.dims))[0]
    inside = clip.audio.size // whisper.FEATURE_HOP - 1          # features wholly inside the clip
    assert inside > 20
    scale = heard[:inside].abs().mean()
    assert (cached[:inside] - heard[:inside]).abs().max() < 0.02 * scale
    assert (cached[1:inside] - heard[:inside - 1]).abs().mean() > 0.1 * scale   # one feature off is not


@pytest.mark.parametrize("extra, message", [
    ({"model": {"encoder": {"kind": "mel"}}}, "cached_encoder needs model.encoder.kind"),
    ({"model": {"encoder": {"kind": "whisper", "weights": "/nowhere"}}}, "got kind 'whisper' with weights '/nowhere'"),
    ({"loss": {"distill_weight": 0.5}}, "cached_encoder and loss.distill_weight"),
])
def test_cached_encoder_is_refused_where_there_is_no_whisper_output_to_cache(tmp_path, extra, message):
    from talkmotion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        cached_encoder_config(tmp_path, **extra)


HEARD = {"enabled": True, "speed_prob": 0.0, "noise_prob": 1.0, "noise_snr_db": [5.0, 10.0], "reverb_prob": 0.5,
         "eq_prob": 0.0, "band_limit_prob": 0.0, "telephone_prob": 0.5}


@needs_weights
def test_cached_hearings_give_the_features_of_degraded_copies_and_crops_read_them_all(tmp_path):
    """cached_hearings = 2: each clip's encoder output is cached for the clean clip and two
    degraded hearings of it (seeded by the clip: a rerun reads the same files), each the
    encoder's output for that hearing's audio; training crops draw from all three and
    validation from the clean one."""
    from talkmotion.data import teacher
    from talkmotion.train import Trainer

    cfg = cached_encoder_config(tmp_path, HEARD, cached_hearings=2)
    trainer = Trainer(cfg)
    clip, spec = trainer.train_set.clips[0], cfg.encoder_cache()
    clean, *hearings = trainer.train_set.tracks[0][0]
    assert len(hearings) == 2
    for n, track in enumerate(hearings, start=1):
        path = teacher.track_path(cfg.data.sources[0].path, clip.id, spec, n)
        assert path.parent.name.startswith("heard-") and path.is_file()
        want = teacher.compute_track(teacher.heard_audio(clip, spec, n), spec)
        np.testing.assert_array_equal(np.asarray(track), want)            # the degraded audio's features
        assert np.abs(np.asarray(track, np.float32) - np.asarray(clean, np.float32)).mean() > 0.05
    np.testing.assert_array_equal(teacher.heard_audio(clip, spec, 1), teacher.heard_audio(clip, spec, 1))
    assert not np.allclose(teacher.heard_audio(clip, spec, 1), teacher.heard_audio(clip, spec, 2))
    other = TeacherConfig_with(spec, noise_snr_db=(20.0, 30.0))
    assert other.hearing_folder != spec.hearing_folder                     # other settings, other caches
    first = {}
    for step in range(12):
        hidden = trainer.train_set.batch(step, 0, 2, trainer.model.dims, 0)["encoder_hidden"]
        for row in hidden[:, 5]:                                           # a feature inside every crop
            first[min(range(3), key=lambda n: nearest_feature(row, (clean, *hearings)[n]))] = True
    assert set(first) == {0, 1, 2}
    val = trainer.train_set.batch(0, 0, 2, trainer.model.dims, 0, train=False)["encoder_hidden"]
    assert all(nearest_feature(row, clean) < 1e-3 for row in val[:, 5])


def TeacherConfig_with(spec, **augment_changes):
    return dataclasses.replace(spec, hearing=dataclasses.replace(spec.hearing, **augment_changes))


def nearest_feature(row: torch.Tensor, track) -> float:
    """How far `row` is from the closest feature of `track` (mean absolute difference)."""
    return float(torch.from_numpy(np.asarray(track, np.float32)).sub(row).abs().mean(1).min())


@pytest.mark.parametrize("extra, message", [
    ({"cached_hearings": 2, "cached_encoder": False}, "cached_hearings needs cached_encoder"),
    ({"cached_hearings": 2}, "cached_hearings needs cached_encoder and data.augment settings"),
    ({"cached_hearings": -1}, "cached_hearings must be 0 or more"),
    ({"augment": {"noise_prob": 0.5, "speed_prob": 0.8}}, "reach the model only through cached_hearings"),
])
def test_hearings_that_could_not_reach_the_model_are_refused(tmp_path, extra, message):
    from talkmotion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        cached_encoder_config(tmp_path, **extra)
