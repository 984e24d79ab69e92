"""Avatars: the built-in reference avatar, and loading the user's own .vrm/.glb.

Reference avatar (written by this project, so free of licence questions):
  talkmotion/assets/avatar/talkmotion_head.glb   glTF 2.0, 52 ARKit morph targets (ARKit names)
  talkmotion/assets/avatar/talkmotion_head.vrm   the same as VRM 1.0 (VRMC_vrm): humanoid bones,
                                                 preset expressions and perfect-sync custom ones
Both are generated (git-ignored) on first use by `reference_avatar_paths()`, or
written anywhere with `talkmotion avatar -o DIR`. The viewer, the preview renderer
and the tests use them; see `reference.py` for the node tree and bindings.

User avatars (`load_avatar`): any .glb/.vrm (VRM 1.0 or 0.x). Its morph targets
are matched to the 52 ARKit names (case-insensitive, with or without a mesh
prefix such as `Face.` or `blendShape1.`, and through VRM expressions named by
ARKit names). An avatar without ARKit morphs is driven through its VRM preset
expressions (aa ih ou ee oh blink blinkLeft blinkRight lookUp/Down/Left/Right),
computed by `labels.to_vrm_presets`; `Avatar.describe()` says which was used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...files import write_bytes, write_text
from ..gltf import GltfError

AVATAR_DIR = Path(__file__).resolve().parents[2] / "assets" / "avatar"
USER_CACHE_DIR = Path.home() / ".cache" / "talkmotion" / "avatar"
REFERENCE_NAME = "talkmotion_head"
# Bump when the generator changes: cached files with another version are rebuilt.
REFERENCE_VERSION = "4"
VERSION_FILE = "VERSION"


class AvatarError(GltfError):
    """An avatar file that cannot be used; the message names the file and the problem."""


def write_reference_avatar(directory: str | Path) -> tuple[Path, Path]:
    """Write talkmotion_head.glb and talkmotion_head.vrm into `directory`; return (glb, vrm)."""
    from .reference import build_gltf

    directory = Path(directory)
    glb, vrm = directory / f"{REFERENCE_NAME}.glb", directory / f"{REFERENCE_NAME}.vrm"
    write_bytes(glb, build_gltf(vrm=False).to_glb())
    write_bytes(vrm, build_gltf(vrm=True).to_glb())
    return glb, vrm


def reference_avatar_paths(directory: str | Path | None = None) -> tuple[Path, Path]:
    """(glb path, vrm path) of the reference avatar, building them into the cache if missing or stale.

    The cache is talkmotion/assets/avatar/, or ~/.cache/talkmotion/avatar/ when the
    package folder is read-only (an installed wheel).
    """
    if directory is None:
        try:
            return _cached_reference(AVATAR_DIR)
        except PermissionError:
            return _cached_reference(USER_CACHE_DIR)
    return _cached_reference(Path(directory))


def _cached_reference(directory: Path) -> tuple[Path, Path]:
    glb, vrm = directory / f"{REFERENCE_NAME}.glb", directory / f"{REFERENCE_NAME}.vrm"
    stamp = directory / VERSION_FILE
    current = stamp.exists() and stamp.read_text(encoding="utf-8").strip() == REFERENCE_VERSION
    if not (current and glb.exists() and vrm.exists()):
        write_reference_avatar(directory)
        write_text(stamp, REFERENCE_VERSION + "\n")
    return glb, vrm


def load_avatar(path: str | Path | None = None):
    """An `Avatar` (see loader.py) from a .glb/.vrm; None means the reference avatar's .glb."""
    from .loader import Avatar

    return Avatar.load(Path(path) if path else reference_avatar_paths()[0])


# --- `talkmotion avatar` -------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=".", help="directory to write talkmotion_head.glb/.vrm into")
    parser.add_argument("--check", metavar="AVATAR", help="instead, load a .vrm/.glb and say how it would be driven")


def run(args: argparse.Namespace) -> int:
    if args.check:
        from .scene import build_posable

        avatar = load_avatar(args.check)
        build_posable(avatar)   # what `render` draws: a file passes both checks or neither
        print(avatar.describe())
        return 0
    for path in write_reference_avatar(args.output):
        print(path)
    return 0
