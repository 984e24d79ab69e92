"""Shared fixtures: a tiny model and a tiny synthetic dataset (seconds to build).

The synthetic clips are "speech-like" bursts of harmonic noise whose loudness
drives jawOpen and whose silences close the mouth, so a model can learn them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkmotion import labels
from talkmotion.audio import SAMPLE_RATE, frame_to_sample, num_frames
from talkmotion.data.clips import Clip, Manifest, Phoneme, clip_path, save_clip
from talkmotion.config import from_dict
from talkmotion.model import ModelDims, TalkModel
from talkmotion.runtime import make_runtime

# A test module whose every test is slow starts a line with this (`pytestmark = [pytest.mark.slow, ...]`
# with other marks); `make test-fast` (-m "not slow") then does not even import it (its imports,
# such as a browser driver or MediaPipe, take seconds).
SLOW_MODULE_LINES = ("pytestmark = pytest.mark.slow", "pytestmark = [pytest.mark.slow")


def pytest_ignore_collect(collection_path, config):
    if config.getoption("markexpr") == "not slow" and collection_path.suffix == ".py" \
            and collection_path.name.startswith("test_"):
        lines = collection_path.read_text(encoding="utf-8").splitlines()
        return any(line.startswith(SLOW_MODULE_LINES) for line in lines) or None
    return None


# The model section of a training config (and, through from_dict, ModelDims) for a model
# that builds and trains in seconds.
TINY = dict(encoder={"kind": "mel", "width": 32, "layers": 2}, d_model=32, n_layers=2, n_heads=2, d_ff=64,
            self_window=8, audio_window=12, dropout=0.0)


@pytest.fixture
def tiny_dims() -> ModelDims:
    return from_dict(ModelDims, TINY)


@pytest.fixture
def tiny_model(tiny_dims) -> TalkModel:
    torch.manual_seed(0)
    return TalkModel(tiny_dims, name="tiny-random").eval()


@pytest.fixture
def tiny_runtime(tiny_model):
    """The tiny model as `animate` runs a checkpoint: its steps traced in PyTorch."""
    return make_runtime(tiny_model)


def synthetic_clip(clip_id: str, seconds: float, seed: int) -> Clip:
    """Bursts of a buzzy tone separated by silences; jawOpen follows the burst envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.zeros(n, np.float32)
    phonemes, pos = [], 0.15
    while pos < seconds - 0.3:
        length = rng.uniform(0.15, 0.4)
        envelope[int(pos * SAMPLE_RATE):int((pos + length) * SAMPLE_RATE)] = rng.uniform(0.5, 1.0)
        phonemes.append(Phoneme("aa", pos, pos + length, 1))
        gap = rng.uniform(0.1, 0.3)
        phonemes.append(Phoneme("sil", pos + length, pos + length + gap, 0))
        pos += length + gap
    f0 = rng.uniform(100, 220)
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) + 0.2 * rng.standard_normal(n)
    audio = (0.2 * envelope * voice).astype(np.float32)
    frames = num_frames(n)
    values = np.zeros((frames, labels.NUM_CHANNELS), np.float32)
    for i in range(frames):
        seg = envelope[frame_to_sample(i):frame_to_sample(i + 1)]
        values[i, labels.index("jawOpen")] = 0.7 * float(seg.mean()) if seg.size else 0.0
    values[:, labels.index("mouthClose")] = 0.3 * (values[:, labels.index("jawOpen")] < 0.05)
    values[:, labels.index("pitch")] = 3.0 * np.sin(np.arange(frames) / 15.0)
    mask = np.ones_like(values, bool)
    mask[:, labels.index("tongueOut")] = False
    return Clip(clip_id, audio, values, mask, phonemes=phonemes, meta={"source": "synthetic"})


def make_dataset(root, count: int = 6, seconds: float = 2.0, val: int = 1):
    man = Manifest(root)
    for k in range(count):
        clip = synthetic_clip(f"syn{k:03d}", seconds, seed=k)
        path = clip_path(root, clip.id)
        save_clip(path, clip)
        man.record(clip.id, "ok", save=False, file=str(path.relative_to(root)), duration=clip.duration,
                   split="val" if k < val else "train", source="synthetic")
    man.save()
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    return make_dataset(tmp_path / "data")
