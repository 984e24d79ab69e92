"""`corpus teach`: recordings without transcripts labelled by a real teacher model (the embedded
quality model, as shipped), resumed, with bad files reported; a student trains on the result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, make_dataset
from test_train import losses
from talkmotion import labels
from talkmotion.animate import animate_pcm
from talkmotion.audio import write_wav
from talkmotion.cli import main
from talkmotion.data import tts_espeak
from talkmotion.data.clips import load_clip, read_dataset
from talkmotion.data.corpus_teach import split_of
from talkmotion.postprocess import PostOptions
from talkmotion.runtime import load_model
from talkmotion.stream import Animator

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

SPOKEN = {"ann/one": ("Maybe the baby will open both windows.", "en-us"),
          "ann/two": ("Put the blue boat by the pool.", "en-us"),
          "bob/one": ("A big brown bear ate my apple pie.", "en-gb-x-rp")}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two speakers' espeak-ng recordings in speaker folders, and one file that is no audio."""
    root = tmp_path_factory.mktemp("teach") / "speech"
    for name, (text, voice) in SPOKEN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_wav(root / f"{name}.wav", tts_espeak.synthesize(text, voice, 1.0, 1.0, timeout=20).audio)
    (root / "bob" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def teach(source, out, *extra) -> int:
    return main(["corpus", "teach", str(source), "-o", str(out), "--workers", "1", "--no-progress", *extra])


def test_teacher_frames_become_the_labels_of_recordings_without_transcripts(recordings, tmp_path, capsys):
    out = tmp_path / "taught"
    assert teach(recordings, out, "--val-share", "0.5") == 0
    printed = capsys.readouterr()
    assert "3 clips made by talkmotion-quality" in printed.out and "1 failed" in printed.out
    assert "broken.wav" in printed.err
    made = read_dataset(out)
    assert set(made) == {"ann-one", "ann-two", "bob-one"}
    teacher = load_model("quality")
    valid = sorted(set(teacher.predicted) & set(labels.BLENDSHAPES))
    for clip_id, entry in made.items():
        clip = load_clip(entry["path"])
        speaker = clip_id.split("-")[0]
        assert clip.meta["speaker"] == clip.meta["voice"] == speaker
        assert clip.meta["split"] == split_of(speaker, 0.5)
        assert clip.meta["labels"] == "teacher" and clip.meta["teacher"] == teacher.name
        assert clip.phonemes is None
        assert np.array_equal(clip.mask[0], np.isin(labels.CHANNELS, valid))
        assert not clip.mask[:, labels.HEAD_SLICE].any()
        own = animate_pcm(teacher, clip.audio, raw=True).values
        assert np.allclose(clip.labels, own, atol=1e-5)
        aperture = clip.labels[:, labels.index("jawOpen")] - clip.labels[:, labels.index("mouthClose")]
        assert aperture.max() > 0.15 and aperture.min() < 0.05     # the teacher opens and shuts the mouth
    failed = json.loads((out / "manifest.json").read_text())["clips"]["bob-broken"]
    assert failed["status"] == "failed" and "broken.wav" in failed["error"]


def test_teaching_resumes_and_a_new_teacher_relabels(recordings, tmp_path, capsys):
    out = tmp_path / "taught"
    assert teach(recordings, out) == 0
    path = out / read_dataset(out)["ann-one"]["file"]
    stamp = path.stat().st_mtime_ns
    capsys.readouterr()
    assert teach(recordings, out) == 0
    assert "0 clips made" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == stamp
    assert teach(recordings, out, "--model", "default") == 0
    assert "3 clips made by talkmotion-default" in capsys.readouterr().out
    assert load_clip(path).meta["teacher"].startswith("talkmotion-default")


def test_a_clip_set_keeps_its_audio_split_and_timings_with_new_labels(tmp_path):
    data = make_dataset(tmp_path / "rules", count=3, val=1)
    out = tmp_path / "taught"
    assert teach(data, out) == 0
    for clip_id, entry in read_dataset(data).items():
        old, new = load_clip(entry["path"]), load_clip(read_dataset(out)[clip_id]["path"])
        assert np.array_equal(old.audio, new.audio) and new.meta["split"] == entry["split"]
        assert [p.phone for p in new.phonemes] == [p.phone for p in old.phonemes]
        assert not np.allclose(new.labels, old.labels)


def test_raw_frames_skip_post_processing_and_fill_nothing(tiny_runtime):
    pcm = 0.1 * np.sin(np.linspace(0, 3000, 48_000)).astype(np.float32)
    raw = Animator(tiny_runtime, raw=True)
    raw_values = np.concatenate([raw.push(pcm[:17_000]).values, raw.push(pcm[17_000:]).values, raw.flush().values])
    cooked = animate_pcm(tiny_runtime, pcm).values
    assert raw_values.shape == cooked.shape
    unpredicted = [i for i, name in enumerate(labels.CHANNELS) if name not in tiny_runtime.predicted]
    assert not raw_values[:, unpredicted].any() and cooked[:, labels.index("eyeBlinkLeft")].any()
    halved = PostOptions(mouth_gain=0.5)
    assert np.allclose(raw_values, animate_pcm(tiny_runtime, pcm, halved, raw=True).values, atol=1e-6)
    jaw = labels.index("jawOpen")
    assert np.allclose(animate_pcm(tiny_runtime, pcm, halved).values[:, jaw], 0.5 * raw_values[:, jaw], atol=0.02)


def test_a_student_trains_on_taught_clips_beside_rule_labelled_ones(recordings, tmp_path):
    from talkmotion.config import load
    from talkmotion.train import TrainConfig, train

    taught = tmp_path / "taught"
    assert teach(recordings, taught, "--val-share", "0") == 0
    rules = make_dataset(tmp_path / "rules", count=3, val=1)
    cfg = {"out_dir": str(tmp_path / "run"), "log_every": 5, "eval_every": 1000, "checkpoint_every": 10,
           "model": TINY, "export": "",
           "data": {"sources": [{"path": str(rules)}, {"path": str(taught), "weight": 1.0}], "crop_seconds": 1.5,
                    "augment": {"enabled": False}, "workers": 0},
           "optim": {"steps": 20, "batch_size": 4, "warmup_steps": 2, "lr": 3e-3},
           "loss": {"phone_weight": 0.2}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    train(load(TrainConfig, tmp_path / "c.json"))
    history = losses(tmp_path / "run")
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
