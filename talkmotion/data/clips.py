"""The clip: one training example, the same whatever made it (video extraction or TTS).

A clip is one safetensors file holding
  audio   (N,)     int16, 16 kHz mono
  labels  (T, C)   float32, C = labels.NUM_CHANNELS, T = num_frames(N, fps)
  mask    (T, C)   uint8, 1 where the label is valid
and a JSON header (safetensors metadata key "talkmotion") with the clip id, fps,
label spec id, optional phoneme timings [[phone, start_s, end_s, stress], ...]
and free-form metadata (source, voice, rate, text, split, quality report...).

A dataset is a folder of clips plus manifest files (`manifest*.json`) that record
every clip's status, so long jobs resume and shards never write the same file.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import labels
from ..audio import FPS, SAMPLE_RATE, num_frames
from ..errors import TalkmotionError
from ..files import atomic_path
from . import jobs
from .phonemes import check_phone, phone_track

CLIP_SUFFIX = ".clip.safetensors"
MANIFEST_FORMAT = "talkmotion.dataset"


class ClipError(TalkmotionError, ValueError):
    """A clip file that cannot be used; the message names the file."""


@dataclass
class Phoneme:
    phone: str      # ARPAbet-style lower-case symbol ("aa", "p", "sil", ...)
    start: float    # seconds
    end: float      # seconds
    stress: int = 0  # 0 none, 1 primary, 2 secondary


@dataclass
class Clip:
    id: str
    audio: np.ndarray            # (N,) float32 in [-1, 1]
    labels: np.ndarray           # (T, C) float32
    mask: np.ndarray             # (T, C) bool
    fps: int = FPS
    phonemes: list[Phoneme] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.audio = np.asarray(self.audio, np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, np.float32)
        self.mask = np.asarray(self.mask, bool)
        self.validate()

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @cached_property
    def phone_track(self) -> np.ndarray | None:
        """The phone class per 10 ms (data.phonemes.phone_track), None without timings."""
        return None if self.phonemes is None else phone_track(self.phonemes, self.audio.size)

    def validate(self, source: str | None = None) -> None:
        where = source or f"clip {self.id}"
        want = num_frames(self.audio.size, self.fps)
        if self.labels.ndim != 2 or self.labels.shape[1] != labels.NUM_CHANNELS:
            raise ClipError(f"{where}: labels shape {self.labels.shape}, want (T, {labels.NUM_CHANNELS})")
        if self.labels.shape[0] != want:
            raise ClipError(f"{where}: {self.labels.shape[0]} label frames for {self.audio.size} samples "
                            f"at {self.fps} fps (want {want})")
        if self.mask.shape != self.labels.shape:
            raise ClipError(f"{where}: mask shape {self.mask.shape} differs from labels {self.labels.shape}")
        if not np.isfinite(self.labels[self.mask]).all():
            raise ClipError(f"{where}: labels contain NaN or inf where the mask says valid")


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def as_stored(audio: np.ndarray) -> np.ndarray:
    """`audio` as a saved clip holds it (16-bit), as float32: what a loaded clip gives back."""
    return _int16(audio).astype(np.float32) / 32767.0


def save_clip(path: str | Path, clip: Clip) -> None:
    """Write a clip atomically."""
    from safetensors.numpy import save_file

    header = {
        "id": clip.id, "fps": clip.fps, "sample_rate": SAMPLE_RATE, "spec": labels.SPEC_ID,
        "channels": list(labels.CHANNELS),
        "phonemes": None if clip.phonemes is None else
        [[p.phone, round(p.start, 5), round(p.end, 5), p.stress] for p in clip.phonemes],
        "meta": clip.meta,
    }
    tensors = {
        "audio": _int16(clip.audio),
        "labels": np.nan_to_num(clip.labels).astype(np.float32),
        "mask": clip.mask.astype(np.uint8),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"talkmotion": json.dumps(header)})


def load_clip(path: str | Path) -> Clip:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = json.loads((f.metadata() or {}).get("talkmotion", "null"))
        tensors = load_file(str(path))
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise ClipError(f"{path}: not a readable clip ({err})") from err
    if not isinstance(header, dict):
        raise ClipError(f"{path}: missing talkmotion header")
    if header.get("spec") != labels.SPEC_ID:
        raise ClipError(f"{path}: label spec {header.get('spec')!r} differs from {labels.SPEC_ID!r}")
    try:
        phonemes = header.get("phonemes")
        phonemes = None if phonemes is None else [Phoneme(*p) for p in phonemes]
        for p in phonemes or ():
            check_phone(p.phone)
            if not all(isinstance(t, (int, float)) for t in (p.start, p.end)):
                raise ValueError(f"phone {p.phone!r} has start {p.start!r} and end {p.end!r}; both must be seconds")
    except (ValueError, TypeError) as err:
        raise ClipError(f"{path}: bad phoneme timings ({err})") from err
    clip = Clip(
        id=header["id"], audio=tensors["audio"].astype(np.float32) / 32767.0,
        labels=tensors["labels"], mask=tensors["mask"].astype(bool), fps=header["fps"],
        phonemes=phonemes, meta=header.get("meta", {}),
    )
    clip.validate(str(path))
    return clip


def finished_clip(path: str | Path) -> Clip | None:
    """The clip at `path` if a whole, readable one is there (a killed run may have made it without
    recording it), else None: it is to be made (again)."""
    if not Path(path).is_file():
        return None
    try:
        return load_clip(path)
    except ClipError:
        return None


# --- dataset manifests ----------------------------------------------------------

class Manifest(jobs.Manifest):
    """Status of every clip a job made or tried (root/manifest*.json), saved atomically.

    entries: {clip_id: {"status": "ok" | "failed" | "skipped", "file": relative path,
              "error": str, "duration": s, ...metadata}}
    """

    FORMAT = MANIFEST_FORMAT
    SECTION = "clips"
    Error = ClipError

    def __init__(self, root: str | Path, name: str = "manifest.json", info: dict | None = None):
        self.root = Path(root)
        super().__init__(self.root / name, info)

    def done(self, clip_id: str) -> bool:
        """True when the clip was made and its file is still there."""
        entry = self.entries.get(clip_id)
        return bool(entry) and entry["status"] == "ok" and (self.root / entry["file"]).exists()


def read_dataset(root: str | Path) -> dict[str, dict]:
    """Every ok clip of a dataset folder (all its manifests merged), {id: entry}."""
    root = Path(root)
    if not root.is_dir():
        raise ClipError(f"{root}: not a dataset folder")
    manifests = sorted(root.glob("manifest*.json"))
    if not manifests:
        raise ClipError(f"{root}: no manifest*.json; make one with `talkmotion corpus synth` or `extract`")
    merged: dict[str, dict] = {}
    for m in manifests:
        man = Manifest(root, m.name)
        for clip_id, entry in man.entries.items():
            if entry["status"] == "ok":
                merged[clip_id] = {**entry, "path": str(root / entry["file"])}
    return merged


def clip_path(root: str | Path, clip_id: str) -> Path:
    return Path(root) / "clips" / f"{clip_id}{CLIP_SUFFIX}"


def clip_entry(clip: Clip, root: str | Path, drop: Collection[str] = ()) -> dict:
    """The manifest entry of a clip saved under `root`: its metadata less the keys in `drop`
    (per-word or per-frame parts a manifest need not repeat), its file and its length."""
    root = Path(root)
    return {**{k: v for k, v in clip.meta.items() if k not in drop},
            "file": clip_path(root, clip.id).relative_to(root).as_posix(), "duration": round(clip.duration, 4)}


# --- batches that make one clip per job ----------------------------------------------------------

class ClipBatch(jobs.Batch):
    """Parent side of a batch whose every job makes one clip, `root/clips/<job.id>.clip.safetensors`
    (corpus synth, align, teach). A subclass says when a clip already made is this job's (`made`)."""

    unit = "clip"
    meta_only: tuple[str, ...] = ()     # clip metadata the manifest entry leaves out (e.g. word timings)

    def __init__(self, root: str | Path, manifest: Manifest):
        super().__init__(manifest)
        self.root = Path(root)

    def made(self, fields: dict, job) -> bool:
        """True when a clip with these manifest fields (or this header metadata) is what `job` makes."""
        raise NotImplementedError

    def entry(self, clip: Clip) -> dict:
        """The manifest entry of a finished clip found on disk."""
        return clip_entry(clip, self.root, drop=self.meta_only)

    def key(self, job) -> str:
        return job.id

    def remaining(self, job):
        if self.manifest.done(job.id) and self.made(self.manifest.entries[job.id], job):
            return None
        clip = finished_clip(clip_path(self.root, job.id))
        if clip is not None and self.made(clip.meta, job):     # made, then the run was killed
            self.manifest.record(job.id, "ok", save=False, **self.entry(clip))
            self.report.tally["recognised"] += 1
            return None
        return job

    def output_folders(self) -> list[Path]:
        return [clip_path(self.root, "x").parent]

    def owner(self, target: Path) -> str:
        return target.name.removesuffix(CLIP_SUFFIX)

    def on_done(self, job, entry: dict) -> None:
        self.manifest.record(job.id, "ok", save=False, **entry)
        self.report.tally["audio_s"] += entry["duration"]
