"""Outputs. Every sink takes the same `Frames`; one module per output.

A sink is opened once, written any number of times as frames are made, then
closed (success) or aborted (error). File sinks gather frames and write the file
atomically on close, so a failed run leaves no partial output. Every sink refuses
frames holding NaN or infinity (`Sink.write` checks them before a sink's own
`send` sees them), so no output ever carries a number that is not one.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from .. import labels
from ..errors import TalkmotionError
from ..frames import Frames, check_finite

# format → (module, class); the format is the file extension unless given.
FILE_FORMATS: dict[str, tuple[str, str]] = {
    "json": ("talkmotion.sinks.json_file", "JsonSink"),
    "csv": ("talkmotion.sinks.csv_file", "CsvSink"),
    "livelink": ("talkmotion.sinks.livelink_csv", "LiveLinkCsvSink"),
    "vrma": ("talkmotion.sinks.vrma", "VrmaSink"),
    "glb": ("talkmotion.sinks.gltf_anim", "GltfAnimationSink"),
}


# Formats whose files end in something other than ".<format>".
EXTENSIONS: dict[str, str] = {"livelink": "livelink.csv"}


class OutputFormatError(TalkmotionError, ValueError):
    """An output path or format talkmotion cannot write."""


class Sink:
    """Base of every output: open → write* → close | abort. Subclasses implement `send`."""

    def open(self, fps: float, model: str = "", latency_ms: float = 0.0) -> None:
        self.fps, self.model, self.latency_ms = fps, model, latency_ms

    def write(self, frames: Frames) -> None:
        """Deliver frames; NonFiniteFramesError (naming this output) if any value is NaN or infinite."""
        check_finite(frames, self.describe())
        self.send(frames)

    def send(self, frames: Frames) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """The output in messages: a path, or the kind of sink."""
        return type(self).__name__

    def close(self, duration: float | None = None) -> None:
        pass

    def abort(self) -> None:
        pass


class FileSink(Sink):
    """Gathers frames; `save(frames)` writes the file once, on close."""

    def __init__(self, path: str | Path, **_unused_options):  # options other formats take (avatar=...)
        self.path = Path(path)
        self.parts: list[Frames] = []

    def send(self, frames: Frames) -> None:
        if len(frames):
            self.parts.append(frames)

    def describe(self) -> str:
        return str(self.path)

    def close(self, duration: float | None = None) -> None:
        values = [p.values for p in self.parts]
        all_values = np.concatenate(values) if values else np.zeros((0, labels.NUM_CHANNELS), np.float32)
        self.save(Frames(all_values, fps=self.fps, model=self.model, latency_ms=self.latency_ms,
                         duration=duration))
        self.parts = []

    def abort(self) -> None:
        self.parts = []

    def save(self, frames: Frames) -> None:
        raise NotImplementedError


def file_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt is None and str(path).lower().endswith(".livelink.csv"):  # Live Link Face CSV by its name
        fmt = "livelink"
    fmt = (fmt or Path(path).suffix.lstrip(".")).lower()
    if fmt not in FILE_FORMATS:
        raise OutputFormatError(f"{path}: unknown output format {fmt!r}; known formats: "
                                f"{', '.join(FILE_FORMATS)}")
    return fmt


def extension(fmt: str) -> str:
    """File extension (without the dot) for a format name."""
    return EXTENSIONS.get(fmt, fmt)


def file_sink(path: str | Path, fmt: str | None = None, **options) -> FileSink:
    """The sink that writes `path`, chosen by `fmt` or the file's extension.

    options go to the sink's constructor (e.g. `avatar=` for glb, the avatar to animate);
    a format that takes no such option ignores it, so one set of options serves every output.
    """
    module, cls = FILE_FORMATS[file_format(path, fmt)]
    return getattr(importlib.import_module(module), cls)(path, **options)
