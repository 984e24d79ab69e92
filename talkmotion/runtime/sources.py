"""Streaming sources: audio pushed in any chunks → what a runtime's step reads. numpy only.

A source has push(pcm), available() -> features whose input is ready, and take(count) ->
the step input of the next `count` features (batch dimension first). An encoder kind
describes its source as a spec (`encoder.source_spec()`), which an exported model keeps
in its header, so the ONNX runtime builds the same source without the encoder code.
"""

from __future__ import annotations

import numpy as np

from ..audio import MelSpec, MelStream


class MelSource:
    """Audio → log-mel frames waiting for the encoder; each feature takes `per_feature` frames.

    The mel is computed when the frames are asked for, not on every push: 20 ms pushes then
    cost a list append, and the mel runs on every frame that arrived since, at once.
    """

    def __init__(self, spec: MelSpec, per_feature: int):
        self.mel = MelStream(spec)
        self.per_feature = per_feature
        self.unread: list[np.ndarray] = []
        self.pending = np.zeros((0, spec.n_mels), np.float32)

    def push(self, pcm: np.ndarray) -> None:
        self.unread.append(pcm)

    def available(self) -> int:
        """Features whose mel frames are ready, computing the mel of what was pushed since."""
        if self.unread:
            pcm = self.unread[0] if len(self.unread) == 1 else np.concatenate(self.unread)
            self.unread = []
            self.pending = np.concatenate([self.pending, self.mel.push(pcm)])
        return self.pending.shape[0] // self.per_feature

    def take(self, count: int) -> np.ndarray:
        """The mel frames of the next `count` features, (1, per_feature*count, n_mels)."""
        n = self.per_feature * count
        out, self.pending = self.pending[:n], self.pending[n:]
        return out[None]


def source_from_spec(spec: dict):
    """The source an encoder's `source_spec()` describes."""
    if spec.get("type") == "logmel":
        return MelSource(MelSpec(**spec["mel"]), int(spec["frames_per_feature"]))
    raise ValueError(f"unknown streaming source {spec.get('type')!r}")
