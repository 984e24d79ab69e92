"""Training batches from clip datasets (TTS corpus, extracted video, or both, weighted).

Batch `step` for process `rank` is a pure function of (seed, step, rank): resuming
at a step reproduces the data exactly, and data-parallel processes never see the
same crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import encoders, labels
from ..audio import num_frames, frame_to_sample
from ..config import ConfigError
from ..model import ModelDims, stream_timing
from .augment import AugmentConfig, augment
from .clips import Clip, ClipError, load_clip, read_dataset
from .phonemes import NO_PHONE, track_at
from .teacher import TeacherConfig, load_track, track_path
from .teacher import track_at as teacher_track_at


@dataclass(frozen=True)
class SourceConfig:
    path: str                 # dataset folder (made by `corpus synth` or `extract`)
    weight: float = 1.0       # share of batches drawn from this source

    def __post_init__(self):
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"data.sources: {self.path}: weight must be a finite number, 0 or more, "
                              f"got {self.weight}")


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[SourceConfig, ...] = ()
    crop_seconds: float = 4.0           # training crop; shorter clips are padded and masked
    train_split: str = "train"
    val_split: str = "val"
    max_val_clips: int = 64             # validation clips (0: no validation)
    ignore_channels: tuple[str, ...] = ("eyeBlinkLeft", "eyeBlinkRight")  # left to procedural blinks
    workers: int = 1                    # processes preparing batches ahead (0 = in the training process)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if not (math.isfinite(self.crop_seconds) and self.crop_seconds > 0):
            raise ConfigError(f"data.crop_seconds must be above 0, got {self.crop_seconds}")
        if self.sources and not sum(s.weight for s in self.sources) > 0:
            raise ConfigError("data.sources: at least one source needs a weight above 0")
        for name in ("max_val_clips", "workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be 0 or more, got {getattr(self, name)}")
        unknown = [c for c in self.ignore_channels if c not in labels.CHANNELS]
        if unknown:
            raise ConfigError(f"data.ignore_channels: {', '.join(unknown)} not channel names")


def has_split(cfg: DataConfig, split: str) -> bool:
    """Whether any source lists clips of `split` (a dataset without a validation split is fine;
    a listed clip that cannot be read is an error when the set is loaded)."""
    return any(entry.get("split", "train") == split for src in cfg.sources
               for entry in read_dataset(src.path).values())


class ClipSet:
    """Clips of several sources held in memory (audio as int16), sampled by source weight."""

    def __init__(self, cfg: DataConfig, split: str, limit: int | None = None, teacher: TeacherConfig | None = None,
                 teacher_is_encoder: bool = False):
        """`teacher`: also give every example its clip's teacher track (distillation targets),
        computing and caching the tracks that are missing. `teacher_is_encoder`: the tracks are
        the model's own frozen encoder output (train.cached_encoder), so batches carry them as
        "encoder_hidden" in place of the encoder's inputs, which are then never computed."""
        if teacher_is_encoder and teacher is None:
            raise ValueError("teacher_is_encoder needs a teacher")
        self.teacher_is_encoder = teacher_is_encoder
        if not cfg.sources:
            raise ClipError("data.sources is empty: name at least one dataset folder")
        self.cfg = cfg
        self.ignore = labels.indices(cfg.ignore_channels)
        self.sources: list[list[Clip]] = []
        self.tracks: list[list[list[np.ndarray]]] = []    # per source, clip and hearing, with a teacher
        # a cached encoder's degraded hearings are cached: crops then only change timing
        self.augment = cfg.augment.retiming_only() if teacher_is_encoder else cfg.augment
        weights = []
        for src in cfg.sources:
            entries = [e for e in read_dataset(src.path).values() if e.get("split", "train") == split]
            entries.sort(key=lambda e: e["path"])
            clips = [load_clip(e["path"]) for e in entries[:limit]]
            if clips:
                self.sources.append(clips)
                weights.append(src.weight)
                if teacher is not None:
                    self.tracks.append(teacher_tracks(src.path, clips, teacher))
        if not self.sources:
            raise ClipError(f"no clips with split {split!r} in {', '.join(s.path for s in cfg.sources)}")
        self.weights = np.asarray(weights) / np.sum(weights)

    @property
    def clips(self) -> list[Clip]:
        return [c for clips in self.sources for c in clips]

    def label_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masked per-channel mean, std, and which channels have any valid label."""
        lab = np.concatenate([c.labels for c in self.clips])
        msk = np.concatenate([c.mask for c in self.clips])
        msk[:, self.ignore] = False
        count = msk.sum(0)
        mean = np.where(count > 0, (lab * msk).sum(0) / np.maximum(count, 1), 0.0)
        var = np.where(count > 0, (((lab - mean) ** 2) * msk).sum(0) / np.maximum(count, 1), 1.0)
        return mean.astype(np.float32), np.sqrt(var).astype(np.float32), count > 0

    def batch(self, step: int, rank: int, size: int, dims: ModelDims, seed: int, train: bool = True):
        rng = np.random.default_rng([seed, step, rank, int(train)])
        items = [self._example(rng, dims, train) for _ in range(size)]
        return collate(items, dims, self.teacher_is_encoder)

    def _example(self, rng, dims: ModelDims, train: bool) -> dict:
        s = rng.choice(len(self.sources), p=self.weights)
        k = rng.integers(len(self.sources[s]))
        clip = self.sources[s][k]
        audio, lab, msk, phones, played = clip.audio, clip.labels, clip.mask.copy(), clip.phone_track, 1.0
        if train:
            audio, lab, msk, phones, played = augment(audio, lab, msk, rng, self.augment, phones)
        msk[:, self.ignore] = False
        example = crop(audio, lab, msk, rng, dims, self.cfg.crop_seconds, phones)
        if self.tracks:     # read where each crop feature sits: the clean clip's, or one hearing of it
            heard = self.tracks[s][k]
            track = heard[int(rng.integers(len(heard)))] if len(heard) > 1 and train else heard[0]
            times = (example["first_sample"] + example["feature_centres"]) * played
            example["teacher"], example["teacher_valid"] = teacher_track_at(track, times)
        return example


class StepBatches(torch.utils.data.IterableDataset):
    """Batches for steps [first, last) in order; with several loader workers, worker k
    makes the steps with step % workers == k and the loader interleaves them back in order."""

    def __init__(self, clips: ClipSet, first: int, last: int, rank: int, size: int, dims: ModelDims, seed: int):
        super().__init__()
        self.clips, self.first, self.last = clips, first, last
        self.rank, self.size, self.dims, self.seed = rank, size, dims, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.first + k, self.last, n):
            yield self.clips.batch(step, self.rank, self.size, self.dims, self.seed)


def crop(audio, lab, msk, rng, dims: ModelDims, seconds: float, phones=None) -> dict:
    """A crop of `seconds` starting on a random frame, with the audio its last frame needs.

    Returns {"audio": padded to the frames' need, "labels" (T, C), "mask" (T, C), "phones":
    phone class per audio feature (J,), "first_sample": where the crop starts in `audio`,
    "feature_centres": (J,) sample of each feature's centre within the crop}, T and J fixed;
    `phones` is the clip's phone track (or None).
    """
    t = int(round(seconds * dims.fps))
    total = lab.shape[0]
    f0 = int(rng.integers(0, max(1, total - t + 1)))
    lab, msk = lab[f0:f0 + t], msk[f0:f0 + t]
    if lab.shape[0] < t:  # short clip: pad with rest pose, masked out
        pad = t - lab.shape[0]
        lab = np.concatenate([lab, np.zeros((pad, lab.shape[1]), np.float32)])
        msk = np.concatenate([msk, np.zeros((pad, msk.shape[1]), bool)])
    s0 = frame_to_sample(f0, dims.fps)
    need = stream_timing(dims).samples_for_frame(t - 1)
    segment = audio[s0:s0 + need]
    segment = np.concatenate([segment, np.zeros(need - segment.size, np.float32)])
    features = stream_timing(dims).features
    return {"audio": segment, "labels": lab, "mask": msk, "phones": feature_phones(phones, s0, need, dims),
            "first_sample": s0, "feature_centres": features.centre(np.arange(features.count(need)))}


def feature_phones(track, first_sample: int, num_samples: int, dims: ModelDims) -> np.ndarray:
    """The phone class at the centre of each audio feature of `num_samples` of audio that
    start at `first_sample` of the track's clip; NO_PHONE past the track."""
    features = stream_timing(dims).features
    count = features.count(num_samples)
    if track is None:
        return np.full(count, NO_PHONE, np.int64)
    return track_at(track, first_sample + features.centre(np.arange(count)))


def collate(items: list[dict], dims: ModelDims, teacher_is_encoder: bool = False) -> dict:
    """Crops → a batch: "pcm" (B, N), what the encoder reads besides (e.g. "mel"), "labels"
    and "mask" (B, T, C), "phones" (B, J), and with a teacher "teacher" (B, J, width) float16
    and "teacher_valid" (B, J). With `teacher_is_encoder`, the teacher features are the
    encoder's frozen output instead: "encoder_hidden" (B, J, width) float32 replaces both the
    teacher and the encoder's inputs."""
    audio = np.stack([i["audio"] for i in items])
    batch = {"pcm": torch.from_numpy(audio)}
    for key in ("labels", "mask", "phones", "teacher", "teacher_valid"):
        if key in items[0]:
            batch[key] = torch.from_numpy(np.stack([i[key] for i in items]))
    if teacher_is_encoder:
        batch["encoder_hidden"] = batch.pop("teacher").float()
        del batch["teacher_valid"]
    else:
        batch.update(encoders.batch_inputs(dims.encoder, audio))
    return batch


def whole_clip_batch(clip: Clip, dims: ModelDims):
    """One clip, all of it, padded for its last frame's look-ahead (validation)."""
    t = num_frames(clip.audio.size, dims.fps)
    need = stream_timing(dims).samples_for_frame(t - 1)
    audio = np.concatenate([clip.audio, np.zeros(max(0, need - clip.audio.size), np.float32)])[:need]
    return collate([{"audio": audio, "labels": clip.labels, "mask": clip.mask,
                     "phones": feature_phones(clip.phone_track, 0, need, dims)}], dims)


def teacher_tracks(root: str, clips: list[Clip], cfg: TeacherConfig) -> list[list[np.ndarray]]:
    """Every clip's teacher tracks, the clean one then its `cfg.hearings` degraded ones,
    computing (with a progress bar) those not cached yet."""
    from tqdm import tqdm

    heard = range(1 + cfg.hearings)
    missing = [(c, n) for c in clips for n in heard if not track_path(root, c.id, cfg, n).exists()]
    for clip, n in tqdm(missing, desc=f"teacher {cfg.name}: {root}", unit="track", disable=not missing):
        load_track(root, clip, cfg, n)
    return [[load_track(root, c, cfg, n) for n in heard] for c in clips]
