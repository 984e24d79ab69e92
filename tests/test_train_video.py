"""Train and fine-tune on clips extracted from video, mixed with another source by weight."""

import json

import pytest

from conftest import TINY, make_dataset
from face_videos import rotating_face_video
from talkmotion.checkpoint import load_checkpoint, read_header
from talkmotion.cli import main
from talkmotion.config import load
from talkmotion.train import TrainConfig, train

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py


def config(path, sources, out, **extra):
    cfg = {"out_dir": str(out), "log_every": 2, "eval_every": 1000, "checkpoint_every": 1000, "model": TINY,
           "data": {"sources": sources, "crop_seconds": 1.5, "workers": 0, "augment": {"enabled": False}},
           "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 1}, **extra}
    path.write_text(json.dumps(cfg))
    return load(TrainConfig, path)


def test_fine_tune_on_extracted_video_learns_its_extra_channels(tmp_path):
    video = rotating_face_video(tmp_path / "me.mp4", seconds=2.0)
    assert main(["extract", str(video), "-o", str(tmp_path / "me"), "--split", "train", "--workers", "1",
                 "-q"]) == 0
    tts = make_dataset(tmp_path / "tts", count=3, val=0)
    # A base model that never saw eye squints (as the TTS default model), then fine-tuned on video.
    base = config(tmp_path / "base.json", [{"path": str(tts)}], tmp_path / "base")
    base = load(TrainConfig, tmp_path / "base.json",
                {"data.ignore_channels": ["eyeBlinkLeft", "eyeBlinkRight", "eyeSquintLeft", "eyeSquintRight"]})
    train(base)
    assert "eyeSquintLeft" not in read_header(tmp_path / "base" / "model.safetensors")["predicted"]
    tuned_cfg = config(tmp_path / "ft.json", [{"path": str(tmp_path / "me"), "weight": 3.0},
                                              {"path": str(tts), "weight": 1.0}], tmp_path / "ft",
                       init=str(tmp_path / "base" / "model.safetensors"))
    last = train(tuned_cfg)
    assert last["loss"] == last["loss"]          # finite, not NaN
    tuned = load_checkpoint(tmp_path / "ft" / "model.safetensors")
    header = read_header(tmp_path / "ft" / "model.safetensors")
    assert "eyeSquintLeft" in header["predicted"] and "eyeSquintLeft" in tuned.predicted()
    assert header["training"]["sources"] == [str(tmp_path / "me"), str(tts)]
