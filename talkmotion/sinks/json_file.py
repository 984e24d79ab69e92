"""The frames file (format in talkmotion/frames.py and DESIGN.md)."""

from __future__ import annotations

import json

from ..files import atomic_path
from ..frames import Frames
from . import FileSink


class JsonSink(FileSink):
    def save(self, frames: Frames) -> None:
        # One frame per line keeps big files diff- and grep-friendly; written line by line
        # into the temporary file, so an hour-long take never sits in memory as text.
        head = json.dumps(frames.header_json())[:-1]
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(f'{head}, "frames": [\n')
            for k, row in enumerate(frames.values):
                f.write((",\n" if k else "") + json.dumps(Frames.row_json(row)))
            f.write("\n]}\n")
