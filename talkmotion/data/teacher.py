"""Teacher tracks: what Whisper's encoder front hears in every training clip, for distillation.

A small causal encoder trained from scratch on a few hours of TTS learns those voices
rather than speech. Whisper's early layers, trained on real speech, describe what is said
whoever says it. Distillation asks the small encoder to predict them too (`loss.distill_weight`
in training), so it learns that description from all the audio it trains on, and learns it
in spite of every augmentation: the teacher hears the clean clip, the student the pitched,
filtered, noisy, reverberant one.

A clip's teacher track is the Whisper encoder's features over the clean clip (streamed as
`talkmotion.whisper` streams them: causal over `window` features, 50 per second), as
float16, cached beside the dataset in `teacher/<name>/<clip id>.npy` (written atomically;
a rerun computes only what is missing). `track_at` reads it at any sample times, as the
phone track is read (`phonemes.track_at`), so crops and speed changes line up.

The same caches hold a frozen Whisper encoder's own output where training reads it instead
of running Whisper (train.cached_encoder). Such a model should also hear degraded speech,
so `hearings` degraded copies of each clip can be cached too (`teacher/<name>/heard-<digest
of the degradation settings>/<clip id>.<n>.npy`): each clip heard through the timing-keeping
transforms of data/augment.py (`augment.hearing`: voice, room, microphone, line), seeded by
the clip's id and n, so every rerun hears the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_path
from .augment import AugmentConfig, hearing
from .clips import Clip


@dataclass(frozen=True)
class TeacherConfig:
    layers: int = 2               # Whisper tiny.en blocks the teacher runs (its layer 2 hears lips best)
    window: int = 64              # features each feature attends to (1.28 s), as in streaming
    hearings: int = 0             # degraded copies of each clip cached besides the clean one...
    hearing: AugmentConfig | None = None    # ...degraded by these settings' timing-keeping transforms

    def __post_init__(self):
        if self.hearings and (self.hearing is None or not self.hearing.changes_hearing):
            raise ValueError("degraded hearings need augment settings that change what is heard")

    @property
    def name(self) -> str:
        return f"whisper-tiny.en-L{self.layers}-w{self.window}"

    @property
    def hearing_folder(self) -> str:
        """Where the degraded copies go: named by the settings, so other settings never reuse them."""
        settings = json.dumps(dataclasses.asdict(self.hearing), sort_keys=True)
        return "heard-" + hashlib.sha256(settings.encode("utf-8")).hexdigest()[:12]


_encoders: dict = {}


def _encoder(cfg: TeacherConfig):
    key = (cfg.layers, cfg.window)
    if key not in _encoders:
        from ..assets import WHISPER_TINY_EN, check_asset
        from ..whisper import WhisperDims, WhisperEncoder

        _encoders[key] = WhisperEncoder.from_ctranslate2(check_asset(WHISPER_TINY_EN),
                                                         WhisperDims(layers=cfg.layers, window=cfg.window))
    return _encoders[key]


def compute_track(audio: np.ndarray, cfg: TeacherConfig) -> np.ndarray:
    """Teacher features of 16 kHz audio, (J, width) float16, feature j centred at `whisper.feature_centre(j)`."""
    import torch

    from ..audio import WHISPER_MEL, log_mel

    mel = torch.from_numpy(log_mel(audio, WHISPER_MEL))[None]
    with torch.inference_mode():
        return _encoder(cfg).encode(mel)[0].numpy().astype(np.float16)


def track_path(root: str | Path, clip_id: str, cfg: TeacherConfig, heard: int = 0) -> Path:
    """The cache of the clip's clean track (heard = 0) or of its degraded hearing `heard` (1..hearings)."""
    folder = Path(root) / "teacher" / cfg.name
    return folder / f"{clip_id}.npy" if heard == 0 else folder / cfg.hearing_folder / f"{clip_id}.{heard}.npy"


def heard_audio(clip: Clip, cfg: TeacherConfig, heard: int) -> np.ndarray:
    """The clip as its degraded hearing `heard` sounds (heard = 0: the clean clip)."""
    if heard == 0:
        return clip.audio
    rng = np.random.default_rng([zlib.crc32(clip.id.encode("utf-8")), heard])
    return hearing(clip.audio, rng, cfg.hearing)        # peak-normalised: within [-1, 1]


def load_track(root: str | Path, clip: Clip, cfg: TeacherConfig, heard: int = 0) -> np.ndarray:
    """The clip's cached teacher track (memory-mapped) for the clean clip or one of its degraded
    hearings, computing and caching it first if it is missing or unusable (unreadable, another
    shape than this clip's, not finite): a cache is rebuilt, never trusted blindly."""
    path = track_path(root, clip.id, cfg, heard)
    track = _cached(path, clip.audio.size) if path.exists() else None
    if track is None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, compute_track(heard_audio(clip, cfg, heard), cfg), allow_pickle=False)
        track = np.load(path, mmap_mode="r", allow_pickle=False)
    return track


def _cached(path: Path, samples: int) -> np.ndarray | None:
    """The track in `path` if it fits a clip of `samples` samples, else None."""
    from ..whisper import FEATURE_HOP, WhisperDims

    try:
        track = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    fits = (track.ndim == 2 and track.shape[1] == WhisperDims.width
            and abs(track.shape[0] - samples / FEATURE_HOP) <= 2 and np.isfinite(track).all())
    return track if fits else None


def track_at(track: np.ndarray, sample_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teacher features nearest to the given sample positions, (K, width) in the track's dtype,
    and (K,) bool: which positions fall inside the track (outside: zeros, not to be learned)."""
    from ..whisper import FEATURE_CENTRE_BASE, FEATURE_HOP

    idx = np.rint((np.asarray(sample_times, np.float64) - FEATURE_CENTRE_BASE) / FEATURE_HOP).astype(np.int64)
    inside = (idx >= 0) & (idx < track.shape[0])
    out = np.zeros((idx.size, track.shape[1]), track.dtype)
    out[inside] = track[idx[inside]]
    return out, inside
