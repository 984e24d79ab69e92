"""The frames file (format in talkmotion/frames.py and DESIGN.md)."""

from __future__ import annotations

import json

from ..files import write_chunks
from ..frames import DECIMALS, Frames
from . import FileSink, numtext

ROWS_PER_BLOCK = 4096          # frames formatted at once: fast, and an hour-long take never sits in memory as text


class JsonSink(FileSink):
    def save(self, frames: Frames) -> None:
        write_chunks(self.path, frames_file_chunks(frames))


def frames_file_chunks(frames: Frames):
    """The frames file's bytes, a block of frames at a time.

    One frame per line keeps big files diff- and grep-friendly. Each number is
    written as json.dumps writes round(v, DECIMALS) (numtext.rounded_repr), so the
    text is the same as formatting value by value, only without a Python call per value.
    """
    head = json.dumps(frames.header_json())[:-1]
    yield f'{head}, "frames": [\n'.encode()
    values = frames.values
    for k, start in enumerate(range(0, len(values), ROWS_PER_BLOCK)):
        block = values[start:start + ROWS_PER_BLOCK]
        text = numtext.join(numtext.rounded_repr(block, DECIMALS), block.shape[1], b", ", b"[", b"],\n")
        yield (b",\n" if k else b"") + text[:-len(b",\n")]
    yield b"\n]}\n"
