"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success rename it over `path`.

    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def temp_files(folder: str | Path) -> list[Path]:
    """The temporary files of atomic writes in `folder` (a killed process leaves its own behind)."""
    return sorted(Path(folder).glob(f".*.*{TEMP_SUFFIX}"))


def temp_target(tmp: str | Path) -> Path:
    """The file a temporary file of `atomic_path` was going to become: .NAME.PID.tmp → NAME."""
    tmp = Path(tmp)
    name = tmp.name[1:-len(TEMP_SUFFIX)].rpartition(".")[0]
    return tmp.with_name(name)


def temp_files_of(path: str | Path) -> list[Path]:
    """The temporary files that atomic writes of `path` left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"))


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_chunks(path: str | Path, chunks) -> None:
    """A file written from an iterable of bytes, chunk by chunk into the temporary file:
    long takes never sit in memory as text."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")
