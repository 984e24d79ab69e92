"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.
And the checks every output path gets: no writing under a file, nor over a folder."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path

from .errors import TalkmotionError

TEMP_SUFFIX = ".tmp"


class OutputPathError(TalkmotionError, ValueError):
    """An output path that cannot be written; the message names it and what is in the way."""


def check_output(path: str | Path) -> Path:
    """`path` as a file to write, checked before any work: OutputPathError when it is a
    folder, or when an existing file stands where a folder must be (`-o speech.wav/x.json`)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; name a file to write")
    _check_folder(path.parent, path)
    return path


def ensure_folder(folder: str | Path, output: str | Path | None = None) -> Path:
    """Create `folder` and its parents; OutputPathError naming `output` (default the folder)
    when an existing file stands in the way."""
    folder = Path(folder)
    _check_folder(folder, output or folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_folder(folder: Path, output: str | Path) -> None:
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputPathError(f"{output}: cannot write there: {ancestor} is a file, not a folder")
            return


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success rename it over `path`.

    On an exception the temporary file is removed and `path` is untouched.
    """
    path = check_output(path)
    ensure_folder(path.parent, path)
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


def loads_json(text: str | bytes, source: str, error: type[Exception]):
    """JSON text → object. Every way user text can be bad (syntax, encoding, nesting deeper
    than Python's parser goes) is raised as `error`, a TalkmotionError class, naming `source`."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply to read") from None
