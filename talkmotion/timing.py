"""Time, in one place: every sample count derives from the sample rate and a few durations.

As openai/whisper's `audio.py` does, each constant is written from the ones above it, so
a reader sees where a number comes from and changing one moves the others:

  SAMPLE_RATE   16 kHz mono audio
  MEL_HOP       10 ms between log-mel frames        (MEL_RATE = 100 frames per second)
  MEL_WINDOW    25 ms analysis window of one mel frame
  FPS           output frames per second (30 by default; models support SUPPORTED_FPS)

Output frame i covers [i/fps, (i+1)/fps); its first sample is `frame_to_sample(i)` =
round(i * sr / fps). Nothing uses an integer samples-per-frame, so audio and labels
cannot drift apart.

An encoder kind (talkmotion/encoders/) states when its audio features are ready as a
`FeatureTiming`; `StreamTiming` adds the output frame rate and the look-ahead and answers
every "when" question of a stream: which features frame i may hear, how much audio it
waits for, and the latency that makes. Plain numbers and numpy: the ONNX runtime reads
them from an exported model's header without importing the encoders or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
MEL_HOP = SAMPLE_RATE // 100             # 160 samples: 10 ms between mel frames
MEL_RATE = SAMPLE_RATE // MEL_HOP        # 100 mel frames per second
MEL_WINDOW = MEL_HOP * 5 // 2            # 400 samples: a 25 ms analysis window
N_MELS = 80                              # mel bands
FPS = 30
SUPPORTED_FPS = (24, 25, 30, 60)


def frame_to_sample(i: int | np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE):
    """First sample of frame i (int, or an int64 array for an array of frames)."""
    return np.round(np.asarray(i) * sr / fps).astype(np.int64) if isinstance(i, np.ndarray) \
        else int(round(i * sr / fps))


def num_frames(num_samples: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> int:
    """Frames needed to cover `num_samples` of audio (the last one may be partial)."""
    return int(math.ceil(num_samples * fps / sr - 1e-9))


def ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


@dataclass(frozen=True)
class FeatureTiming:
    """When an encoder's audio features are ready and what audio each one hears.

    Feature j can be computed once `need(j)` samples have arrived; it reads the `span`
    samples that end there. An encoder that computes `block` features per call makes
    frames wait for the whole block.
    """

    hop: int            # samples between consecutive features
    first_need: int     # samples that must have arrived before feature 0 exists
    span: int           # samples one feature reads, ending at its need
    block: int = 1      # features computed together per encoder call

    def need(self, j):
        """Samples feature j waits for (int or int64 array)."""
        return self.hop * np.asarray(j) + self.first_need if isinstance(j, np.ndarray) \
            else self.hop * j + self.first_need

    def centre(self, j):
        """The sample at the middle of the audio feature j reads (int or int64 array)."""
        return self.need(j) - self.span // 2

    def count(self, num_samples: int) -> int:
        """Features whose audio lies within the first `num_samples` samples."""
        return max(0, (num_samples - self.first_need) // self.hop + 1)


@dataclass(frozen=True)
class StreamTiming:
    """Output frames over an encoder's features: what frame i hears and when it is due."""

    features: FeatureTiming
    fps: int = FPS
    lookahead_ms: float = 60.0      # audio after a frame's end that the frame may hear

    @property
    def lookahead_samples(self) -> int:
        return ms_to_samples(self.lookahead_ms)

    def frame_need(self, i):
        """Samples (int, or array) that must have arrived before frame i is computed."""
        end = frame_to_sample(np.asarray(i) + 1, self.fps) if isinstance(i, np.ndarray) \
            else frame_to_sample(i + 1, self.fps)
        return end + self.lookahead_samples

    def frames_ready(self, num_samples: int) -> int:
        """How many frames, from frame 0 on, are due once `num_samples` samples have arrived."""
        audio = num_samples - self.lookahead_samples          # frame j-1 is due once frame j starts here
        j = max(0, audio * self.fps // SAMPLE_RATE + 1)       # an upper bound: frame_to_sample rounds
        while j > 0 and frame_to_sample(j, self.fps) > audio:
            j -= 1
        return j

    def last_feature(self, i):
        """The newest audio feature frame i may hear (int, or array of ints); never below 0:
        with a tiny look-ahead the first frames wait for feature 0."""
        f = self.features
        if isinstance(i, np.ndarray):
            return np.maximum(0, (self.frame_need(i) - f.first_need) // f.hop)
        return max(0, (self.frame_need(int(i)) - f.first_need) // f.hop)

    def features_added(self, first: int, count: int) -> np.ndarray:
        """(count,) how many new features each of frames first..first+count-1 brings
        (frame 0 brings every feature up to its last one)."""
        if count == 1:      # a live stream's step: plain ints cost a tenth of the array arithmetic
            return np.array([self.last_feature(first) - (self.last_feature(first - 1) if first else -1)])
        last = self.last_feature(np.arange(first - 1, first + count))
        if first == 0:
            last[0] = -1
        return np.diff(last)

    @staticmethod
    def features_hidden(added: np.ndarray) -> np.ndarray:
        """(k,) how many features each frame of a step brings → (k,) int64: how many of the
        step's newest features frame q may not hear yet (what the decoder's step takes)."""
        return (int(np.sum(added)) - np.cumsum(added)).astype(np.int64)

    def samples_for_frame(self, i: int) -> int:
        """Samples a stream must hold before frame i can be computed: its need, rounded up
        to the end of the encoder block that holds its last feature."""
        need = self.frame_need(i)
        n = self.features.block
        if n > 1:
            block_end = (self.last_feature(i) // n + 1) * n - 1
            need = max(need, self.features.need(block_end))
        return need

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: the look-ahead plus one frame (plus a block of features for
        encoders that compute several at once)."""
        block = self.features.block * self.features.hop / SAMPLE_RATE * 1000 if self.features.block > 1 else 0
        return self.lookahead_ms + 1000 / self.fps + block

    def to_json(self) -> dict:
        return {"features": vars(self.features).copy(), "fps": self.fps, "lookahead_ms": self.lookahead_ms}

    @classmethod
    def from_json(cls, obj: dict) -> "StreamTiming":
        return cls(FeatureTiming(**obj["features"]), int(obj["fps"]), float(obj["lookahead_ms"]))
