"""The frames file (format in talkmotion/frames.py and DESIGN.md)."""

from __future__ import annotations

import json

from ..files import write_text
from ..frames import Frames
from . import FileSink


class JsonSink(FileSink):
    def save(self, frames: Frames) -> None:
        obj = frames.to_json()
        rows = obj.pop("frames")
        # One frame per line keeps big files diff- and grep-friendly.
        head = json.dumps(obj)[:-1]
        body = ",\n".join(json.dumps(r) for r in rows)
        write_text(self.path, f'{head}, "frames": [\n{body}\n]}}\n')
