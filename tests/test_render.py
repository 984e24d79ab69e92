"""`talkmotion render`: the MP4 decodes, has audio and video, the right frame count, and the face moves."""

from fractions import Fraction

import av
import numpy as np
import pytest

from talkmotion import labels
from talkmotion.audio import write_wav
from talkmotion.cli import main
from talkmotion.frames import Frames
from talkmotion.preview.render import STRIP_PX, FaceRenderer, render_video
from talkmotion.sinks import file_sink

FPS = 30
SIZE = 160
SR = 16_000


def clip(seconds=1.0):
    t = np.arange(int(seconds * FPS)) / FPS
    values = np.zeros((len(t), labels.NUM_CHANNELS), np.float32)
    values[:, labels.index("jawOpen")] = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)
    values[:, labels.index("yaw")] = 10 * np.sin(2 * np.pi * t)
    return Frames(values, fps=FPS)


@pytest.fixture(scope="module")
def face():
    return FaceRenderer(size=SIZE)


def draw(face, **channels):
    row = np.zeros((1, labels.NUM_CHANNELS), np.float32)
    for name, value in channels.items():
        row[0, labels.index(name)] = value
    frames = Frames(row, fps=FPS)
    return face.draw(face.weights(frames)[0], frames.head[0]).astype(int)


def mouth_box(face):
    """Pixel rows/cols around the mouth, from the avatar's head joint and our proportions."""
    from talkmotion.preview.avatar.face import HEAD_CENTER

    mouth = np.array([[0.0, HEAD_CENTER[1] - 0.055, 0.1]])
    x, y, _ = face.camera.project(mouth)[0]
    half = int(0.03 * SIZE / face.camera.height_m)
    return slice(int(y) - half, int(y) + half), slice(int(x) - half, int(x) + half)


def test_jaw_open_changes_the_mouth_and_nothing_above(face):
    closed, opened = draw(face), draw(face, jawOpen=1.0)
    rows, cols = mouth_box(face)
    assert np.abs(opened[rows, cols] - closed[rows, cols]).mean() > 20
    assert np.abs(opened[: rows.start - SIZE // 8] - closed[: rows.start - SIZE // 8]).max() == 0


def test_head_yaw_and_blink_change_the_picture(face):
    still = draw(face)
    assert np.abs(draw(face, yaw=20.0) - still).mean() > 2
    assert np.abs(draw(face, eyeBlinkLeft=1.0, eyeBlinkRight=1.0) - still).sum() > 0


@pytest.mark.slow
def test_mp4_has_video_and_audio_of_the_clip(tmp_path):
    frames = clip(1.0)
    audio = (0.1 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    out = tmp_path / "preview.mp4"
    assert render_video(frames, out, audio, size=SIZE) == FPS
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height) == (SIZE, SIZE + STRIP_PX)
        assert video.average_rate == Fraction(FPS)
        assert sound.codec_context.name == "aac"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == FPS
    assert np.abs(decoded[0].astype(int) - decoded[7].astype(int)).mean() > 0.5  # it moves
    with av.open(str(out)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples / SR - 1.0) < 0.1


@pytest.mark.slow
def test_cli_with_a_frames_file_and_a_video_beside(tmp_path, capsys):
    frames_path = tmp_path / "clip.json"
    sink = file_sink(frames_path)
    sink.open(FPS)
    sink.write(clip(0.5))
    sink.close()
    wav = tmp_path / "speech.wav"
    write_wav(wav, np.zeros(SR // 2, np.float32))
    source = tmp_path / "source.mp4"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(FPS // 2):
            image = np.full((48, 64, 3), i * 8, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    out = tmp_path / "side.mp4"
    code = main(["render", str(frames_path), "--audio", str(wav), "--video", str(source), "-o", str(out),
                 "--size", str(SIZE)])
    assert code == 0 and "s per second of video" in capsys.readouterr().out
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert video.width == SIZE + 2 * round(SIZE * 64 / 48 / 2) and len(container.streams.audio) == 1  # even
        assert sum(1 for _ in container.decode(video=0)) == FPS // 2


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["render", str(missing), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1
    broken = tmp_path / "broken.vrm"
    broken.write_bytes(b"garbage")
    frames_path = tmp_path / "clip.json"
    sink = file_sink(frames_path)
    sink.open(FPS)
    sink.write(clip(0.2))
    sink.close()
    assert main(["render", str(frames_path), "--avatar", str(broken), "-o", str(tmp_path / "y.mp4")]) == 2
    assert "broken.vrm" in capsys.readouterr().err
    assert not (tmp_path / "y.mp4").exists()


@pytest.mark.slow
def test_audio_input_is_animated_first_and_keeps_its_sound(tmp_path, tiny_model):
    from talkmotion.checkpoint import save_checkpoint

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, tiny_model)
    wav = tmp_path / "speech.wav"
    write_wav(wav, (0.1 * np.sin(2 * np.pi * 150 * np.arange(SR // 2) / SR)).astype(np.float32))
    out = tmp_path / "from_audio.mp4"
    assert main(["render", str(wav), "--model", str(checkpoint), "-o", str(out), "--size", str(SIZE)]) == 0
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == FPS // 2


def test_skinned_and_textured_avatars_pose_like_rigid_ones(tmp_path):
    import io
    import json

    from PIL import Image

    from talkmotion.preview.avatar import load_avatar, reference_avatar_paths
    from talkmotion.preview.avatar.scene import build_posable
    from talkmotion.preview.gltf import Gltf, read_glb
    from talkmotion.rotation import head_quaternions, quaternion_matrices

    glb, _ = reference_avatar_paths(tmp_path / "ref")
    rigid = read_glb(glb)
    g = Gltf(json.loads(json.dumps(rigid.doc)), bytearray(rigid.binary))
    names = [n.get("name") for n in g.doc["nodes"]]
    face = g.doc["nodes"][names.index("Face")]
    prim = g.doc["meshes"][face["mesh"]]["primitives"][0]
    count = g.doc["accessors"][prim["attributes"]["POSITION"]]["count"]
    # One joint (the head), identity bind: the same rest pose as the rigid mesh under the head.
    prim["attributes"]["JOINTS_0"] = g.add_accessor(np.zeros((count, 4), np.uint16))
    prim["attributes"]["WEIGHTS_0"] = g.add_accessor(np.tile([1.0, 0, 0, 0], (count, 1)).astype(np.float32))
    face["skin"] = g.add("skins", {"joints": [names.index("head")]})
    png = io.BytesIO()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(png, format="PNG")
    view = {"buffer": 0, "byteOffset": len(g.binary), "byteLength": len(png.getvalue())}
    g.binary.extend(png.getvalue())
    image = g.add("images", {"bufferView": g.add("bufferViews", view), "mimeType": "image/png"})
    texture = g.add("textures", {"source": image})
    prim["attributes"]["TEXCOORD_0"] = g.add_accessor(np.full((count, 2), 0.25, np.float32))
    prim["material"] = g.add("materials", {"pbrMetallicRoughness": {"baseColorTexture": {"index": texture}}})
    path = tmp_path / "skinned.glb"
    path.write_bytes(g.to_glb())

    plain, skinned = build_posable(load_avatar(glb)), build_posable(load_avatar(path))
    np.testing.assert_allclose(skinned.base, plain.base, atol=1e-6)
    np.testing.assert_array_equal(skinned.head_weight, plain.head_weight)
    face_vertices = skinned.head_weight > 0
    red = skinned.colors[face_vertices]
    assert (red[:, 1] == 0).all() and (red[:, 0] > 0).any()  # COLOR_0 × the red texture
    turn = quaternion_matrices(head_quaternions(np.array([0.0, 30.0, 0.0])))
    weights = np.zeros(len(skinned.slots), np.float32)
    moved = np.abs(skinned.pose(weights, turn) - skinned.base).max(1) > 1e-4
    assert not (moved & ~face_vertices).any() and moved.sum() > 0.95 * face_vertices.sum()


def test_avatar_without_arkit_morphs_renders_through_presets_and_says_so(tmp_path, capsys):
    import json

    from talkmotion.preview.avatar import reference_avatar_paths
    from talkmotion.preview.gltf import Gltf, read_glb

    _, vrm = reference_avatar_paths(tmp_path / "ref")
    v = read_glb(vrm)
    doc = json.loads(json.dumps(v.doc))
    face_mesh = doc["meshes"][next(n["mesh"] for n in doc["nodes"] if n.get("name") == "Face")]
    face_mesh["extras"]["targetNames"] = [f"Shape{i}" for i in range(labels.NUM_BLENDSHAPES)]
    doc["extensions"]["VRMC_vrm"]["expressions"].pop("custom")
    avatar = tmp_path / "presets.vrm"
    avatar.write_bytes(Gltf(doc, v.binary).to_glb())
    frames_path = tmp_path / "clip.json"
    sink = file_sink(frames_path)
    sink.open(FPS)
    sink.write(clip(0.2))
    sink.close()
    out = tmp_path / "presets.mp4"
    assert main(["render", str(frames_path), "--avatar", str(avatar), "-o", str(out), "--size", str(SIZE)]) == 0
    err = capsys.readouterr().err
    assert "driven through VRM presets" in err and "aa" in err
    face = FaceRenderer(avatar, SIZE)
    closed, opened = draw(face), draw(face, jawOpen=1.0)
    rows, cols = mouth_box(face)
    assert np.abs(opened[rows, cols] - closed[rows, cols]).mean() > 5  # the aa preset opens the mouth
