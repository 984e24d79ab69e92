"""One fuzz target, run by tests/test_fuzz.py in a process of its own.

    python tests/fuzz_worker.py TARGET SEED MAX_CASES BUDGET_S FOLDER

Feeds valid files of the target's kind, mutated at random (bytes flipped, cut, spliced,
header fields set to edge values, JSON values swapped for hostile ones), and random bytes,
to the loader every command uses for that kind. For each case it prints `case N` before
the loader runs (so the parent can name a case that hangs or crashes the process) and a
JSON line for every outcome other than a clean result or a TalkmotionError with a one-line
message. The last line is `done CASES SECONDS`. Everything is seeded: a failure reruns
exactly with the same arguments.
"""

from __future__ import annotations

import io
import json
import random
import struct
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkmotion.errors import TalkmotionError  # noqa: E402

EDGE_INTS = (0, 1, 2, 3, 7, 8, 255, 4000, 44100, 65535, 2**31 - 1, 2**32 - 1)
HOSTILE_JSON = (None, True, False, 0, -1, 1e308, -1e308, 2**70, "", "x" * 300, [], {}, [[[]]],
                [1, "a", None], {"a": {"b": {}}}, "NaN", 3.5, -0.0)


# --- valid seeds -------------------------------------------------------------------------

def seed_wav() -> bytes:
    import soundfile as sf

    t = np.arange(8000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def seed_mp3(folder: Path) -> bytes:
    import av

    path = folder / "seed.mp3"
    t = np.arange(16000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=16000, layout="mono")
        for i in range(0, pcm.size, 1152):
            frame = av.AudioFrame.from_ndarray(pcm[None, i:i + 1152], format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path.read_bytes()


def seed_frames() -> bytes:
    from talkmotion import labels
    from talkmotion.frames import Frames

    values = np.random.default_rng(0).uniform(0, 1, (4, labels.NUM_CHANNELS)).astype(np.float32)
    return json.dumps(Frames(values).to_json()).encode()


def seed_avatar(kind: str) -> bytes:
    from talkmotion.preview.avatar import reference_avatar_paths

    glb, vrm = reference_avatar_paths()
    return (vrm if kind == "vrm" else glb).read_bytes()


def seed_config() -> bytes:
    """The default model's recipe: both stages, the second starting from the first's export."""
    return (ROOT / "configs" / "default.toml").read_bytes()


# --- loaders -----------------------------------------------------------------------------

def load_audio_file(path: Path) -> None:
    from talkmotion.audio import load_audio

    load_audio(path, max_seconds=60.0)


def load_frames_file(path: Path) -> None:
    from talkmotion.frames import read_frames

    read_frames(path)


def load_avatar_file(path: Path) -> None:
    """What `avatar --check` and `render --avatar` do with a file."""
    from talkmotion.preview.avatar import load_avatar
    from talkmotion.preview.avatar.scene import build_posable

    build_posable(load_avatar(path))


def load_config_file(path: Path) -> None:
    from talkmotion.recipe import Recipe

    Recipe(path).check()         # what `talkmotion train` checks before the first stage trains


# --- mutations ---------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        pos = rng.randrange(len(data))
        if kind == 0:                                   # flip bits
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:                                 # cut short
            del data[pos:]
        elif kind == 2:                                 # overwrite a span
            span = rng.randint(1, 32)
            data[pos:pos + span] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) * span
        elif kind == 3:                                 # delete a span
            del data[pos:pos + rng.randint(1, 256)]
        elif kind == 4:                                 # duplicate a span
            span = data[pos:pos + rng.randint(1, 512)]
            data[pos:pos] = span
        else:                                           # an edge value as a 16- or 32-bit field
            value = rng.choice(EDGE_INTS)
            if rng.random() < 0.5 and pos + 4 <= len(data):
                struct.pack_into("<I", data, pos, value & 0xFFFFFFFF)
            elif pos + 2 <= len(data):
                struct.pack_into("<H", data, pos, value & 0xFFFF)
    return bytes(data)


def mutate_wav(data: bytes, rng: random.Random) -> bytes:
    """Header fields of a WAV set to edge values (rate, channels, bits, sizes), or bytes mutated."""
    if rng.random() < 0.5:
        return mutate_bytes(data, rng)
    data = bytearray(data)
    fmt = data.find(b"fmt ")
    fields = {"riff size": (4, "<I"), "channels": (fmt + 10, "<H"), "rate": (fmt + 12, "<I"),
              "byte rate": (fmt + 16, "<I"), "block align": (fmt + 20, "<H"), "bits": (fmt + 22, "<H"),
              "data size": (data.find(b"data") + 4, "<I")}
    for _ in range(rng.randint(1, 3)):
        offset, form = fields[rng.choice(list(fields))]
        limit = 0xFFFF if form == "<H" else 0xFFFFFFFF
        struct.pack_into(form, data, offset, min(rng.choice(EDGE_INTS), limit))
    return bytes(data)


def hostile_json(value, rng: random.Random, depth: int = 0):
    """`value` with random members replaced by hostile ones (types, sizes, nesting)."""
    if rng.random() < 0.15 or depth > 6:
        if rng.random() < 0.1:
            return json.loads("[" * 500 + "]" * 500)          # deep, within what json itself builds
        return rng.choice(HOSTILE_JSON)
    if isinstance(value, dict) and value:
        out = dict(value)
        for key in rng.sample(list(out), min(len(out), rng.randint(1, 3))):
            if rng.random() < 0.2:
                del out[key]
            else:
                out[key] = hostile_json(out[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = hostile_json(out[i], rng, depth + 1)
        if rng.random() < 0.2:
            del out[rng.randrange(len(out)):]
        return out
    return rng.choice(HOSTILE_JSON)


def dumps_json(obj) -> bytes:
    try:
        return json.dumps(obj).encode()
    except RecursionError:
        return b"[" * 100_000


def mutate_frames(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    obj = hostile_json(json.loads(data), rng)
    text = dumps_json(obj)
    if rng.random() < 0.1:
        text = text.replace(b"0.", b"NaN", 1)             # Python's reader takes NaN and Infinity
    return text


def mutate_glb(data: bytes, rng: random.Random) -> bytes:
    """The glTF JSON chunk mutated as JSON and repacked with valid chunk lengths, or bytes mutated."""
    from talkmotion.preview.gltf import parse_glb

    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    gltf = parse_glb(data)
    gltf.doc = hostile_json(gltf.doc, rng)
    if not isinstance(gltf.doc, dict):
        gltf.doc = {"asset": gltf.doc}
    try:
        return gltf.to_glb()
    except (TypeError, ValueError, RecursionError):
        return mutate_bytes(data, rng)


def mutate_config(data: bytes, rng: random.Random) -> bytes:
    import tomllib

    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    obj = hostile_json(tomllib.loads(data.decode()), rng)
    return dumps_json(obj)       # written as a .json config


TARGETS = {
    "wav": (".wav", lambda folder: seed_wav(), mutate_wav, load_audio_file),
    "mp3": (".mp3", seed_mp3, mutate_bytes, load_audio_file),
    "frames": (".json", lambda folder: seed_frames(), mutate_frames, load_frames_file),
    "glb": (".glb", lambda folder: seed_avatar("glb"), mutate_glb, load_avatar_file),
    "vrm": (".vrm", lambda folder: seed_avatar("vrm"), mutate_glb, load_avatar_file),
    "config": (".toml", lambda folder: seed_config(), mutate_config, load_config_file),
}


def where(err: BaseException) -> str:
    """The innermost talkmotion line the exception passed through."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/talkmotion/" in f.filename]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"


def case_input(i: int, seed_data: bytes, mutate, rng: random.Random) -> bytes:
    if i == 0:
        return seed_data                                   # the valid file must load
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 2048))
    return mutate(seed_data, rng)


def main() -> int:
    target, seed, max_cases, budget, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
        Path(sys.argv[5])
    suffix, make_seed, mutate, load = TARGETS[target]
    folder.mkdir(parents=True, exist_ok=True)
    seed_data = make_seed(folder)
    start = time.monotonic()
    cases = 0
    for i in range(max_cases):
        if i == 1:
            start = time.monotonic()     # the clock starts after case 0, the valid file, paid the imports
        if time.monotonic() - start > budget:
            break
        rng = random.Random(f"{target}-{seed}-{i}")
        data = case_input(i, seed_data, mutate, rng)
        suffix_here = ".json" if target == "config" and data[:1] in (b"{", b"[") else suffix
        path = folder / f"case{suffix_here}"
        path.write_bytes(data)
        print(f"case {i}", flush=True)
        try:
            load(path)
        except TalkmotionError as err:
            if i == 0:
                print(json.dumps({"case": i, "problem": "the valid seed file was refused", "message": str(err)}),
                      flush=True)
            elif "\n" in str(err) or not str(err).strip():
                print(json.dumps({"case": i, "problem": "error message is not one line",
                                  "message": str(err)[:500]}), flush=True)
        except Exception as err:  # noqa: BLE001 - every other outcome is the finding being looked for
            print(json.dumps({"case": i, "problem": f"{type(err).__name__} (a traceback)", "message": str(err)[:300],
                              "where": where(err)}), flush=True)
        cases += 1
    print(f"done {cases} {time.monotonic() - start:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
