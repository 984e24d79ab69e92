"""CSV: a time column, one column per ARKit name, then head pitch, yaw, roll."""

from __future__ import annotations

from .. import labels
from ..files import write_chunks
from ..frames import Frames
from . import FileSink, numtext

TIME_DECIMALS, VALUE_DECIMALS = 4, 5
ROWS_PER_BLOCK = 4096          # frames formatted at once; long takes never sit in memory as text


class CsvSink(FileSink):
    def save(self, frames: Frames) -> None:
        write_chunks(self.path, csv_chunks(frames))


def csv_chunks(frames: Frames):
    """The file's bytes, a block of rows at a time: the same text as f"{t:.4f}", f"{v:.5f}" per value."""
    yield (",".join(["time", *labels.CHANNELS]) + "\n").encode()
    times = frames.times
    for start in range(0, len(frames), ROWS_PER_BLOCK):
        block = frames.values[start:start + ROWS_PER_BLOCK]
        yield numtext.join(numtext.fixed(block, VALUE_DECIMALS), block.shape[1], b",",
                           first_columns=[numtext.fixed(times[start:start + len(block)], TIME_DECIMALS)])
