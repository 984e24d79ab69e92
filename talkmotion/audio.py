"""Audio front end: decode any common format to 16 kHz mono, and a streaming log-mel.

Time convention (shared by every module): frame i covers [i/fps, (i+1)/fps), and
its first sample is `frame_to_sample(i)` = round(i * sr / fps). Nothing uses an
integer samples-per-frame, so audio and labels cannot drift apart.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from .errors import TalkmotionError
# The time constants live in timing.py; audio re-exports the ones most modules read with it.
from .timing import (FPS, MEL_HOP, MEL_WINDOW, N_MELS, SAMPLE_RATE, SUPPORTED_FPS,  # noqa: F401
                     frame_to_sample, num_frames)


class AudioError(TalkmotionError, ValueError):
    """Audio that cannot be used; the message names the source and the problem."""


SILENT_POWER = 1e-10   # keeps the dB of digital silence finite (-100 dBFS)
FEW_FRAMES = 4         # frame levels asked for this few at a time are measured in a plain loop


def frame_levels_db(audio: np.ndarray, count: int, fps: float = FPS, first: int = 0) -> np.ndarray:
    """RMS level in dBFS of frames first..first+count-1 over each frame's own samples,
    (N,) samples starting at frame `first`'s first sample → (count,) float64.

    A frame the audio only partly covers is measured on what is there; one it does
    not reach at all is silence. A live stream asks for a frame or two at a time:
    a plain loop, as numpy's set-up would cost more than the arithmetic; longer
    runs of frames are measured all at once.
    """
    if count <= FEW_FRAMES:
        return _frame_levels_loop(audio, count, fps, first)
    bounds = frame_to_sample(np.arange(first, first + count + 1), fps) - frame_to_sample(first, fps)
    bounds = np.minimum(bounds, len(audio))
    # One sum of squares per frame; the zero appended keeps every start index in range.
    squares = np.append(np.square(np.asarray(audio[:bounds[-1]], np.float64)), 0.0)
    sums = np.add.reduceat(squares, bounds[:-1])
    lengths = np.diff(bounds)
    power = np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)
    return 10 * np.log10(power + SILENT_POWER)


def _frame_levels_loop(audio: np.ndarray, count: int, fps: float, first: int) -> np.ndarray:
    origin = frame_to_sample(first, fps)
    out = np.empty(count)
    for k in range(count):
        own = np.asarray(audio[frame_to_sample(first + k, fps) - origin:frame_to_sample(first + k + 1, fps) - origin],
                         np.float64)
        power = float(np.dot(own, own)) / own.size if own.size else 0.0
        out[k] = 10 * math.log10(power + SILENT_POWER)
    return out


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

# A header's sample rate outside this range is damage or an attack, never a recording: decoding
# 8 Hz "audio" resampled to 16 kHz turns 200 KB into hours of samples.
MIN_SAMPLE_RATE = 4_000      # below telephone band (8 kHz) with room for old voice codecs
MAX_SAMPLE_RATE = 384_000    # the highest rate studio converters use
# A file decodes this much shorter than its header declares (seconds, plus 1 %) before it
# counts as truncated: codec priming and padding stay well under it.
TRUNCATION_TOLERANCE_S = 0.1
# Writers that do not know the length (pipes, live capture) put 0 or a size near 2 or 4 GiB in the
# header (espeak-ng --stdout: 0x7FFFF000); such sizes say nothing about truncation.
_RIFF_PLACEHOLDER_SIZE = 0x7FFF0000
_WAV_HEADER_SCAN_BYTES = 1 << 16   # look for the data chunk this far into a WAV file
_ID3_HEADER_BYTES = 10
_MP3_INFO_SCAN_BYTES = 64          # a Xing/Info/VBRI tag sits within the first frame's first 40 bytes
# Formats whose header states the track's exact length; a shorter decode is truncation.
EXACT_LENGTH_FORMATS = ("flac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
# ffmpeg cuts a WAV's stated length to what the file holds: exact for what is there, silent
# about what is missing (the RIFF header is read for that).
LENGTH_CLAMPED_FORMATS = ("wav",)

log = logging.getLogger(__name__)


class AudioTooLong(AudioError):
    """Audio longer than the caller's limit, known from the header or found while decoding."""


def iter_audio(path: str | Path, chunk_seconds: float = 1.0, sr: int = SAMPLE_RATE,
               max_seconds: float | None = None, allow_truncated: bool = False) -> Iterator[np.ndarray]:
    """Decode an audio or video file's first audio track as 16 kHz mono float32 chunks.

    Streams: memory stays constant however long the file is. `max_seconds` bounds the
    audio: a header that declares more is refused before decoding, and decoding stops
    with AudioTooLong as soon as it passes the limit, whatever the header said. A file
    that decodes shorter than its header declares is truncated: AudioError, or with
    `allow_truncated` a warning and the samples that are there.
    """
    import av  # PyAV: ffmpeg's decoders for wav, flac, ogg, mp3, m4a and video containers

    path = Path(path)
    container = _open_audio(path)
    with container:
        stream = container.streams.audio[0]
        if stream.codec_context is None:   # ffmpeg has no decoder for it
            raise AudioError(f"{path}: its audio track is in a codec that cannot be decoded")
        _check_rate(stream.sample_rate, path)
        declared = _declared_seconds(container, stream, path)
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise AudioTooLong(f"{path}: its header declares {declared:.0f} s of audio, over the limit of "
                               f"{max_seconds:g} s")
        if container.format.name == "wav":
            _check_riff_length(path, allow_truncated)
        limit = None if max_seconds is None else int(math.ceil(max_seconds * sr))
        to_mono = _ToMono(sr)
        target = max(1, int(chunk_seconds * sr))
        pending: list[np.ndarray] = []
        pending_len = yielded = source_samples = 0
        try:
            for frame in container.decode(stream):
                _check_rate(frame.sample_rate, path)
                source_samples += frame.samples
                for out in to_mono(frame):
                    pending.append(out)
                    pending_len += out.size
                if limit is not None and yielded + pending_len > limit:
                    raise AudioTooLong(f"{path}: more than {max_seconds:g} s of audio, over the limit")
                if pending_len >= target:
                    yield check_pcm(np.concatenate(pending), str(path))
                    yielded += pending_len
                    pending, pending_len = [], 0
            pending += to_mono.flush()
        except av.error.FFmpegError as err:
            raise AudioError(f"{path}: decoding failed, the file may be truncated or damaged ({err})") from err
        if declared is not None and container.format.name not in LENGTH_CLAMPED_FORMATS:
            _check_decoded_length(path, declared, source_samples / stream.sample_rate, allow_truncated)
        if pending:
            yield check_pcm(np.concatenate(pending), str(path))


def _open_audio(path: Path):
    """The file opened by ffmpeg, with at least one audio track; AudioError naming it otherwise."""
    import av

    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as err:
        raise AudioError(f"{path}: not a readable audio or video file ({err})") from err
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path}: has no audio track")
    return container


def _check_rate(rate, path: Path) -> None:
    if not rate or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; "
                         "the header is damaged or not a recording's")


def _declared_seconds(container, stream, path: Path) -> float | None:
    """The audio track's length as its header states it, or None where ffmpeg only estimates
    it from the bitrate (MP3 without a Xing/Info/VBRI header, ADTS AAC) or nothing says."""
    fmt = container.format.name
    stated = fmt in EXACT_LENGTH_FORMATS or fmt in LENGTH_CLAMPED_FORMATS or \
        (fmt == "mp3" and _mp3_length_header(path))
    if not stated or stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float(stream.duration * stream.time_base)


def _mp3_length_header(path: Path) -> bool:
    """Whether an MP3's first frame is a Xing/Info/VBRI header, which states the frame count."""
    with open(path, "rb") as f:
        head = f.read(_ID3_HEADER_BYTES)
        start = 0
        if head[:3] == b"ID3" and len(head) == _ID3_HEADER_BYTES:
            size = 0
            for byte in head[6:10]:   # a "syncsafe" integer: 7 bits per byte
                size = (size << 7) | (byte & 0x7F)
            start = _ID3_HEADER_BYTES + size + (_ID3_HEADER_BYTES if head[5] & 0x10 else 0)  # footer flag
        f.seek(start)
        frame = f.read(_MP3_INFO_SCAN_BYTES)
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


class _ToMono:
    """Frames → `sr` mono float32 arrays through ffmpeg's resampler, rebuilt when a frame's
    format, layout or rate differs from the last (one resampler takes one setup, and a
    damaged file can change it mid-stream)."""

    def __init__(self, sr: int):
        self.sr, self.resampler, self.setup = sr, None, None

    def __call__(self, frame) -> list[np.ndarray]:
        import av

        frame = _mixable(frame)
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        out = []
        if setup != self.setup:
            out = self.flush()
            self.resampler, self.setup = av.AudioResampler(format="flt", layout="mono", rate=self.sr), setup
        return out + [o.to_ndarray().reshape(-1) for o in self.resampler.resample(frame)]

    def flush(self) -> list[np.ndarray]:
        if self.resampler is None:
            return []
        return [o.to_ndarray().reshape(-1) for o in self.resampler.resample(None)]


def _mixable(frame):
    """`frame` as ffmpeg's resampler can take it: frames of more than two channels are averaged
    to mono here, because ffmpeg cannot build a mix for layouts without a channel order
    (a 32-channel WAV) and PyAV crashes trying."""
    import av

    channels = len(frame.layout.channels)
    if channels <= 2:
        return frame
    samples = frame.to_ndarray()
    fmt = frame.format
    samples = samples.reshape(channels, -1) if fmt.is_planar else samples.reshape(-1, channels).T
    mono = _as_float(samples).mean(axis=0, dtype=np.float64).astype(np.float32)
    out = av.AudioFrame.from_ndarray(mono[None], format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


def _as_float(samples: np.ndarray) -> np.ndarray:
    """Decoded samples in ffmpeg's sample formats (u8, s16, s32, s64, flt, dbl) → floats in [-1, 1]."""
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float64) / float(-np.iinfo(samples.dtype).min)
    return samples


def _check_riff_length(path: Path, allow_truncated: bool) -> None:
    """A WAV whose data chunk declares more bytes than the file holds is truncated.

    ffmpeg quietly shortens such a file's duration to what is there, so the header is read here.
    """
    with open(path, "rb") as f:
        head = f.read(_WAV_HEADER_SCAN_BYTES)
    found = _riff_data_chunk(head)
    if found is None:
        return
    offset, size, byte_rate = found
    if size == 0 or size >= _RIFF_PLACEHOLDER_SIZE or not byte_rate:
        return
    missing = offset + size - path.stat().st_size
    if missing > 0:
        _report_truncation(path, size / byte_rate, (size - missing) / byte_rate, allow_truncated)


def _riff_data_chunk(head: bytes) -> tuple[int, int, int] | None:
    """(offset of the data, its declared size, bytes per second) from a RIFF/WAVE header, or None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 16 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16:pos + 20], "little")
        if chunk == b"data":
            return pos + 8, size, byte_rate
        pos += 8 + size + (size & 1)   # chunks are padded to an even length
    return None


def _check_decoded_length(path: Path, declared: float, decoded: float, allow_truncated: bool) -> None:
    if declared - decoded > TRUNCATION_TOLERANCE_S + 0.01 * declared:
        _report_truncation(path, declared, decoded, allow_truncated)


def _report_truncation(path: Path, declared: float, present: float, allow_truncated: bool) -> None:
    what = f"{path}: truncated: its header declares {declared:.2f} s of audio, the file holds {present:.2f} s"
    if not allow_truncated:
        raise AudioError(f"{what} (animate --allow-truncated uses what is there)")
    log.warning("%s; animating what is there", what)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None,
               allow_truncated: bool = False) -> np.ndarray:
    """Whole file as 16 kHz mono float32 (iter_audio's limits). Raises AudioError if it holds no samples."""
    chunks = list(iter_audio(path, chunk_seconds=30.0, sr=sr, max_seconds=max_seconds,
                             allow_truncated=allow_truncated))
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
    n_fft: int = MEL_WINDOW   # 25 ms analysis window
    hop: int = MEL_HOP        # 10 ms between mel frames (100 per second)
    n_mels: int = N_MELS
    f_min: float = 50.0
    f_max: float = 7600.0
    floor: float = 1e-5       # power floor before the log, keeps silence finite
    scale: Literal["htk", "slaney"] = "htk"   # HTK's mel scale, unit-area filters; or Slaney's mel
                                              # scale, area-normalised (librosa's default: Whisper's)
    log: Literal["ln", "whisper"] = "ln"      # ln of the power; or Whisper's scale, (log10 power + 4) / 4


# Whisper's front end (its audio.py): 80 Slaney bands over 0-8 kHz, log10 scaled. Whisper floors
# each bin 8 decades below its 30 s window's loudest; streaming cannot know that, so the floor is
# fixed 8 decades below 1 (speech peaks near 1 in power on that scale).
WHISPER_MEL = MelSpec(f_min=0.0, f_max=8000.0, floor=1e-8, scale="slaney", log="whisper")


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


_SLANEY_LINEAR_HZ = 200.0 / 3    # Slaney's scale: linear below 1 kHz (one mel per 66.7 Hz)...
_SLANEY_LOG_START_HZ = 1000.0    # ...logarithmic above, 27 mels per factor 6.4
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_slaney(f):
    f = np.asarray(f, np.float64)
    start = _SLANEY_LOG_START_HZ / _SLANEY_LINEAR_HZ
    return np.where(f >= _SLANEY_LOG_START_HZ,
                    start + np.log(np.maximum(f, 1e-9) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP, f / _SLANEY_LINEAR_HZ)


def _slaney_to_hz(m):
    m = np.asarray(m, np.float64)
    start = _SLANEY_LOG_START_HZ / _SLANEY_LINEAR_HZ
    return np.where(m >= start, _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (m - start)), m * _SLANEY_LINEAR_HZ)


def mel_filterbank(spec: MelSpec, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters, (n_fft//2+1, n_mels): HTK's scale with unit-area filters, or
    Slaney's scale with 2 / bandwidth-normalised ones (`spec.scale`)."""
    to_mel, to_hz = (_hz_to_mel, _mel_to_hz) if spec.scale == "htk" else (_hz_to_slaney, _slaney_to_hz)
    freqs = np.linspace(0, sr / 2, spec.n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(spec.f_min), to_mel(spec.f_max), spec.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    bank = np.maximum(0.0, np.minimum(up, down))
    bank = bank / bank.sum(axis=1, keepdims=True) if spec.scale == "htk" else bank * (2.0 / (hi - lo))
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
        # numpy's FFT, not scipy's: as fast here, and importing scipy.fft cost `animate` a third of
        # its start-up. numpy >= 2 keeps float32 input in complex64 (numpy 1 would not).
        spectrum = np.asarray(np.fft.rfft(windows * self.window, axis=1), np.complex64)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        mel = power @ self.bank
        np.log(np.maximum(mel, s.floor, out=mel), out=mel)
        if s.log == "whisper":                    # (log10 + 4) / 4, from the natural log
            mel *= 1.0 / (4.0 * math.log(10.0))
            mel += 1.0
        self.buffer = self.buffer[n * s.hop:]
        return mel


def log_mel(pcm: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Whole-signal log-mel, (n_frames, n_mels); same frames as MelStream."""
    return MelStream(spec).push(pcm)
