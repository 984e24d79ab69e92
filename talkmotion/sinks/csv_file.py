"""CSV: a time column, one column per ARKit name, then head pitch, yaw, roll."""

from __future__ import annotations

from .. import labels
from ..files import write_csv
from ..frames import Frames
from . import FileSink


class CsvSink(FileSink):
    def save(self, frames: Frames) -> None:
        rows = ([f"{t:.4f}", *(f"{v:.5f}" for v in row)] for t, row in zip(frames.times, frames.values))
        write_csv(self.path, ["time", *labels.CHANNELS], rows)
