"""Audio front end: decode any common format to 16 kHz mono, and a streaming log-mel.

Time convention (shared by every module): frame i covers [i/fps, (i+1)/fps), and
its first sample is `frame_to_sample(i)` = round(i * sr / fps). Nothing uses an
integer samples-per-frame, so audio and labels cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.fft

from .errors import TalkmotionError

SAMPLE_RATE = 16_000
FPS = 30
SUPPORTED_FPS = (24, 25, 30, 60)


class AudioError(TalkmotionError, ValueError):
    """Audio that cannot be used; the message names the source and the problem."""


def frame_to_sample(i: int | np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE):
    """First sample of frame i."""
    return np.round(np.asarray(i) * sr / fps).astype(np.int64) if isinstance(i, np.ndarray) \
        else int(round(i * sr / fps))


SILENT_POWER = 1e-10   # keeps the dB of digital silence finite (-100 dBFS)


def frame_levels_db(audio: np.ndarray, count: int, fps: float = FPS, first: int = 0) -> np.ndarray:
    """RMS level in dBFS of frames first..first+count-1 over each frame's own samples,
    (N,) samples starting at frame `first`'s first sample → (count,) float64.

    A frame the audio only partly covers is measured on what is there; one it does
    not reach at all is silence.
    """
    bounds = frame_to_sample(np.arange(first, first + count + 1), fps) - frame_to_sample(first, fps)
    bounds = np.minimum(bounds, len(audio))
    # One sum of squares per frame; the zero appended keeps every start index in range.
    squares = np.append(np.square(np.asarray(audio[:bounds[-1]], np.float64)), 0.0)
    sums = np.add.reduceat(squares, bounds[:-1])
    lengths = np.diff(bounds)
    power = np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)
    return 10 * np.log10(power + SILENT_POWER)


def num_frames(num_samples: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> int:
    """Frames needed to cover `num_samples` of audio (the last one may be partial)."""
    return int(math.ceil(num_samples * fps / sr - 1e-9))


def check_pcm(pcm: np.ndarray, source: str) -> np.ndarray:
    """Reject NaN/inf samples; return float32 mono."""
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise AudioError(f"{source}: expected mono samples, got shape {pcm.shape}")
    if not np.isfinite(pcm).all():
        bad = int((~np.isfinite(pcm)).sum())
        raise AudioError(f"{source}: {bad} samples are NaN or infinite")
    return pcm


# --- decoding ---------------------------------------------------------------

def iter_audio(path: str | Path, chunk_seconds: float = 1.0, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode an audio or video file's first audio track as 16 kHz mono float32 chunks.

    Streams: memory stays constant however long the file is.
    """
    import av  # PyAV: ffmpeg's decoders for wav, flac, ogg, mp3, m4a and video containers

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise AudioError(f"{path}: not a readable audio or video file ({err})") from err
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        target = max(1, int(chunk_seconds * sr))
        pending: list[np.ndarray] = []
        pending_len = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    pending_len += pending[-1].size
                if pending_len >= target:
                    yield check_pcm(np.concatenate(pending), str(path))
                    pending, pending_len = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            raise AudioError(f"{path}: decoding failed, the file may be truncated ({err})") from err
        if pending:
            yield check_pcm(np.concatenate(pending), str(path))


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Whole file as 16 kHz mono float32. Raises AudioError if it holds no samples."""
    chunks = list(iter_audio(path, chunk_seconds=30.0, sr=sr))
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return np.concatenate(chunks)


def resample(pcm: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling."""
    from scipy.signal import resample_poly

    if sr_in == sr_out:
        return np.asarray(pcm, np.float32)
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(pcm, sr_out // g, sr_in // g).astype(np.float32)


def pcm16_to_float(data: bytes, channels: int = 1) -> np.ndarray:
    """Raw little-endian 16-bit PCM → float32 mono in [-1, 1)."""
    if len(data) % (2 * channels):
        data = data[: len(data) - len(data) % (2 * channels)]
    x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, channels).mean(axis=1) if channels > 1 else x


def write_wav(path: str | Path, pcm: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written atomically."""
    import soundfile as sf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(str(tmp), np.clip(pcm, -1, 1), sr, subtype="PCM_16", format="WAV")
    tmp.replace(path)


# --- log-mel ----------------------------------------------------------------

@dataclass(frozen=True)
class MelSpec:
    n_fft: int = 400      # 25 ms analysis window
    hop: int = 160        # 10 ms between mel frames (100 per second)
    n_mels: int = 80
    f_min: float = 50.0
    f_max: float = 7600.0
    floor: float = 1e-5   # power floor before the log, keeps silence finite


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filterbank(spec: MelSpec, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular HTK-mel filters, (n_fft//2+1, n_mels), each normalised to unit area."""
    freqs = np.linspace(0, sr / 2, spec.n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(spec.f_min), _hz_to_mel(spec.f_max), spec.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    bank = np.maximum(0.0, np.minimum(up, down))
    bank /= bank.sum(axis=1, keepdims=True)
    return bank.T.astype(np.float32)


class MelStream:
    """Log-mel frames from audio pushed in any chunk sizes.

    Mel frame j covers samples [j*hop, j*hop + n_fft). The output is identical
    whether the audio arrives at once or in pieces.
    """

    def __init__(self, spec: MelSpec = MelSpec(), sr: int = SAMPLE_RATE):
        self.spec = spec
        self.window = np.hanning(spec.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
        self.bank = mel_filterbank(spec, sr)
        # The spectrum's real and imaginary parts sit side by side in memory (re0, im0, re1, ...):
        # squared and multiplied by the bank with each row twice, they give power @ bank in one product.
        self.pair_bank = np.repeat(self.bank, 2, axis=0)
        self.reset()

    def reset(self) -> None:
        self.buffer = np.zeros(0, np.float32)

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Append samples; return the newly completed mel frames, (n, n_mels)."""
        s = self.spec
        self.buffer = np.concatenate([self.buffer, np.asarray(pcm, np.float32)])
        n = 0 if self.buffer.size < s.n_fft else (self.buffer.size - s.n_fft) // s.hop + 1
        if n == 0:
            return np.zeros((0, s.n_mels), np.float32)
        # (n, n_fft) overlapping windows as a strided view of the buffer: no copy, no index array
        step = self.buffer.itemsize
        windows = np.ndarray((n, s.n_fft), np.float32, self.buffer, 0, (s.hop * step, step))
        spectrum = scipy.fft.rfft(windows * self.window, axis=1, workers=1, overwrite_x=True)  # complex64
        parts = spectrum.view(np.float32)                             # (n, 2 * bins): re, im, re, im...
        mel = np.square(parts, out=parts) @ self.pair_bank
        np.log(np.maximum(mel, s.floor, out=mel), out=mel)
        self.buffer = self.buffer[n * s.hop:]
        return mel


def log_mel(pcm: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Whole-signal log-mel, (n_frames, n_mels); same frames as MelStream."""
    return MelStream(spec).push(pcm)
