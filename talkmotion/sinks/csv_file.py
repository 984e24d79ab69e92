"""CSV: a time column, one column per ARKit name, then head pitch, yaw, roll."""

from __future__ import annotations

import csv
import io

from .. import labels
from ..files import write_text
from ..frames import Frames
from . import FileSink


class CsvSink(FileSink):
    def save(self, frames: Frames) -> None:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["time", *labels.CHANNELS])
        for t, row in zip(frames.times, frames.values):
            w.writerow([f"{t:.4f}", *(f"{v:.5f}" for v in row)])
        write_text(self.path, out.getvalue())
