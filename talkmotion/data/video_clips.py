"""One video → clips: the face-tracked label rows cut into clips of at most --clip-seconds.

Each clip gets the video's audio from the same time origin (16 kHz mono), a
quality report (face share, several faces, scene cuts, source frame rate,
audio) and is kept, or skipped with the reason, by the filters. The head
translation (cm, camera frame) is kept in the clip metadata. A worker of
`talkmotion extract` runs `extract_video` once per video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import labels
from ..audio import FPS, SAMPLE_RATE
from . import clips
from .clips import Clip, clip_path, save_clip
from .facetrack import MAX_FACES, FaceTracker, TrackedFrame, track_video
from .video import DEFAULT_MAX_SIDE, AudioTrack, FrameRateMeter, first_video_time, probe

# The audio track may end this much before the video without losing label frames (zeros fill in).
AUDIO_END_TOLERANCE_S = 0.1
# A video decoding to less than this share of the length its header states is reported as truncated.
TRUNCATED_RATIO = 0.9
SILENT_PEAK = 1e-3               # an audio track whose peak stays below this is treated as absent
TRANSLATION_DECIMALS = 2
# Clip metadata that is not part of its manifest entry.
META_ONLY = ("fps", "head_translation_cm")


@dataclass
class Filters:
    min_face_ratio: float = 0.5        # share of frames with exactly one face
    max_multi_face_ratio: float = 0.1  # share of frames with more than one face
    max_scene_cuts: int | None = None  # None: any number
    min_fps: float = 15.0              # source frame rate
    min_seconds: float = 1.0           # clip duration
    require_audio: bool = True

    def reasons(self, q: dict) -> list[str]:
        """Why a clip with quality report q is left out (empty: keep it)."""
        out = []
        if q["frames"] == 0:
            return ["no frames left once the audio track ended"]
        if q["face_ratio"] < self.min_face_ratio:
            out.append(f"face in {q['face_ratio']:.0%} of frames (< --min-face-ratio {self.min_face_ratio:g})")
        if q["multi_face_ratio"] > self.max_multi_face_ratio:
            out.append(f"several faces in {q['multi_face_ratio']:.0%} of frames "
                       f"(> --max-multi-face-ratio {self.max_multi_face_ratio:g})")
        if self.max_scene_cuts is not None and q["scene_cuts"] > self.max_scene_cuts:
            out.append(f"{q['scene_cuts']} scene cuts (> --max-scene-cuts {self.max_scene_cuts})")
        if q["source_fps"] < self.min_fps:
            out.append(f"source {q['source_fps']:.1f} fps (< --min-fps {self.min_fps:g})")
        if q["duration"] < self.min_seconds:
            out.append(f"{q['duration']:.2f} s long (< --min-seconds {self.min_seconds:g})")
        if self.require_audio and not q["audio_present"]:
            out.append("no audio" + (" track" if not q["audio_track"] else " (silent track)"))
        return out



@dataclass
class VideoJob:
    path: str
    video_id: str
    split: str
    out: str                           # dataset folder
    fps: int = FPS
    clip_seconds: int = 20
    max_side: int = DEFAULT_MAX_SIDE
    settled: tuple[int, ...] = ()      # clips made or skipped by an earlier run: not tracked again (resume)
    landmarker: str = ""
    gpu: bool = False
    filters: dict = field(default_factory=dict)


class _Segment:
    """Label rows of one clip as they arrive."""

    def __init__(self, index: int, length: int):
        self.index, self.length = index, length
        self.values = np.zeros((length, labels.NUM_CHANNELS), np.float32)
        self.valid = np.zeros((length, labels.NUM_CHANNELS), bool)
        self.translation = np.full((length, 3), np.nan, np.float32)
        self.faces = np.zeros(length, np.int8)
        self.cuts = 0
        self.filled = 0

    def add(self, row: int, frame: TrackedFrame) -> None:
        r = frame.result
        self.values[row], self.valid[row], self.translation[row], self.faces[row] = \
            r.values, r.valid, r.translation, min(r.faces, MAX_FACES)
        self.cuts += int(frame.cut and row > 0)
        self.filled = row + 1


def clip_id(video_id: str, segment: int) -> str:
    return f"{video_id}-{segment:04d}"


def extract_video(job: VideoJob, emit) -> dict:
    """Track one video and write its clips; `emit(status, id, entry)` reports each settled clip.

    Returns video-level facts (frame rate, decoded vs stated length, a warning
    when the file looks truncated). Raises VideoError / ExtractError for the
    video as a whole; clips already emitted stay valid.
    """
    stated = probe(job.path).duration
    filters = Filters(**job.filters)
    length = job.clip_seconds * job.fps
    settled = set(job.settled)
    meter = FrameRateMeter()
    audio = AudioTrack(job.path, first_video_time(job.path))
    tracker = FaceTracker(job.landmarker, job.gpu)
    try:
        segment, read = None, 0          # the clip being filled; clips whose audio has been read
        for frame in track_video(job.path, tracker, job.fps, job.max_side,
                                 lambda i: i // length not in settled, meter):
            index = frame.index // length
            if segment is None or index != segment.index:
                if segment is not None:
                    emit(*finish_segment(job, segment, audio, meter, filters))
                    read = segment.index + 1
                for _ in range(read, index):        # audio of settled clips, read past a clip at a time
                    audio.take(job.clip_seconds * SAMPLE_RATE)
                segment = _Segment(index, length)
            segment.add(frame.index - index * length, frame)
        if segment is not None:
            emit(*finish_segment(job, segment, audio, meter, filters))
    finally:
        tracker.close()
        audio.close()
    decoded = (meter.last or 0.0) + meter.frame_duration
    facts = {"source_fps": round(meter.fps, 3), "variable_fps": meter.variable,
             "decoded_seconds": round(decoded, 3), "stated_seconds": round(stated, 3)}
    if stated and decoded < TRUNCATED_RATIO * stated:
        facts["warning"] = f"decoded {decoded:.2f} s of the {stated:.2f} s the file states: truncated?"
    return facts


def finish_segment(job: VideoJob, seg: _Segment, audio: AudioTrack, meter: FrameRateMeter,
                   filters: Filters) -> tuple[str, str, dict]:
    """Audio for the segment, quality report, filters; save the clip → ("ok"|"skipped", id, entry)."""
    frames = seg.filled
    want = int(math.floor(frames * SAMPLE_RATE / job.fps))
    pcm, real = audio.take(want)
    if real < want - AUDIO_END_TOLERANCE_S * SAMPLE_RATE and audio.present:
        frames = int(math.floor(real * job.fps / SAMPLE_RATE))     # the audio ended: so does the clip
        want = int(math.floor(frames * SAMPLE_RATE / job.fps))
        pcm = pcm[:want]
    cid = clip_id(job.video_id, seg.index)
    quality = quality_report(seg, frames, pcm, audio, meter, job.fps)
    entry = {"source": "video", "video": job.path, "segment": seg.index,
             "start": seg.index * job.clip_seconds, "split": job.split, "quality": quality,
             "duration": round(frames / job.fps, 4)}
    reasons = filters.reasons(quality)
    if reasons:
        return "skipped", cid, {**entry, "reason": "; ".join(reasons)}
    mask = seg.valid[:frames].copy()
    meta = {**entry, "fps": job.fps,
            "head_translation_cm": [None if np.isnan(t).any() else [round(float(v), TRANSLATION_DECIMALS)
                                                                   for v in t] for t in seg.translation[:frames]]}
    clip = Clip(cid, pcm, seg.values[:frames], mask, fps=job.fps, meta=meta)
    save_clip(clip_path(job.out, cid), clip)
    return "ok", cid, clip_entry(clip, Path(job.out))


def clip_entry(clip: Clip, root: Path) -> dict:
    """The manifest entry of a saved clip: its metadata less the per-frame parts, its file and length."""
    return clips.clip_entry(clip, root, drop=META_ONLY)


def made_by(clip: Clip, job: VideoJob, index: int) -> bool:
    """True when a clip found on disk is clip `index` of this job's video, cut the way this job cuts."""
    meta = clip.meta
    return (clip.id == clip_id(job.video_id, index) and meta.get("video") == job.path
            and meta.get("segment") == index and meta.get("fps") == job.fps
            and meta.get("start") == index * job.clip_seconds)


def quality_report(seg: _Segment, frames: int, pcm: np.ndarray, audio: AudioTrack, meter: FrameRateMeter,
                   fps: int) -> dict:
    faces = seg.faces[:frames]
    n = max(1, frames)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    return {"frames": int(frames), "duration": round(frames / fps, 4),
            "face_ratio": round(float((faces == 1).sum()) / n, 4),
            "multi_face_ratio": round(float((faces > 1).sum()) / n, 4),
            "no_face_ratio": round(float((faces == 0).sum()) / n, 4),
            "scene_cuts": int(seg.cuts), "source_fps": round(meter.fps, 3), "variable_fps": meter.variable,
            "audio_track": audio.present, "audio_present": audio.present and peak >= SILENT_PEAK,
            "audio_peak": round(peak, 5)}

