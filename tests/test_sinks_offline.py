"""Offline exports: Live Link Face CSV, VRM Animation (.vrma), glTF with animation (.glb)."""

import csv
import json

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.preview.avatar import load_avatar, write_reference_avatar
from talkmotion.frames import Frames
from talkmotion.preview.gltf import Gltf, read_glb
from talkmotion.rotation import head_quaternions, quaternion_matrices, quaternion_multiply
from talkmotion.sinks import file_sink
from talkmotion.sinks.livelink_csv import BLEND_SHAPE_COUNT, COLUMNS, read_livelink_csv, timecode
from talkmotion.sinks.vrma import NECK_SHARE, build_vrma

FPS = 30


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(1)
    values = np.zeros((45, labels.NUM_CHANNELS), np.float32)
    values[:, labels.BLENDSHAPE_SLICE] = rng.uniform(0, 1, (45, labels.NUM_BLENDSHAPES))
    values[:, labels.HEAD_SLICE] = rng.uniform(-20, 20, (45, 3))
    return Frames(values, fps=FPS)


@pytest.fixture(scope="module")
def avatar_files(tmp_path_factory):
    return write_reference_avatar(tmp_path_factory.mktemp("avatar"))


def write(path, frames, fmt=None, **options):
    sink = file_sink(path, fmt, **options)
    sink.open(frames.fps)
    sink.write(frames)
    sink.close()
    return path


# --- Live Link Face CSV ----------------------------------------------------------------

def test_livelink_csv_columns_and_values(tmp_path, frames):
    path = write(tmp_path / "take.csv", frames, "livelink")
    rows = list(csv.DictReader(path.open()))
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["Timecode", "BlendShapeCount"] and tuple(header) == COLUMNS
    assert {labels.to_pascal(n) for n in labels.BLENDSHAPES} <= set(header)
    assert header[-9:] == ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                           "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
    assert len(rows) == len(frames) and rows[0]["BlendShapeCount"] == str(BLEND_SHAPE_COUNT) == "61"
    assert rows[31]["Timecode"] == "00:00:01:01.000"
    assert float(rows[5]["JawOpen"]) == pytest.approx(frames.channel("jawOpen")[5], abs=1e-6)
    # Unreal's unit and signs, as the UDP sink sends them (degrees / 180; yaw and roll negated)
    assert float(rows[5]["HeadYaw"]) == pytest.approx(-frames.channel("yaw")[5] / 180, abs=1e-6)
    assert float(rows[5]["HeadPitch"]) == pytest.approx(frames.channel("pitch")[5] / 180, abs=1e-6)
    assert float(rows[5]["HeadRoll"]) == pytest.approx(-frames.channel("roll")[5] / 180, abs=1e-6)


# The app's take header, as an independent importer spells it (the Blender LiveLinkFace
# add-on's LIVE_LINK_FACE_HEADER): the names and order our CSV must use.
APP_TAKE_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")


def test_livelink_csv_header_is_the_apps(tmp_path, frames):
    path = write(tmp_path / "take.csv", frames, "livelink")
    assert path.read_text().splitlines()[0] == APP_TAKE_HEADER


def test_livelink_csv_is_read_by_name_not_position(tmp_path, frames):
    path = write(tmp_path / "take.csv", frames, "livelink")
    back = read_livelink_csv(path, fps=FPS)
    np.testing.assert_allclose(back.values, frames.values, atol=1e-4)
    rows = list(csv.reader(path.open()))
    order = [0, 1] + list(np.random.default_rng(2).permutation(np.arange(2, len(rows[0]))))
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join(",".join(r[i] for i in order) for r in rows) + "\n")
    np.testing.assert_allclose(read_livelink_csv(shuffled, fps=FPS).values, back.values)


def test_timecode_counts_frames_within_the_second():
    assert timecode(0, 30) == "00:00:00:00.000"
    assert timecode(30 * 3661 + 7, 30) == "01:01:01:07.000"
    assert timecode(59, 60) == "00:00:00:59.000"


# --- VRM Animation ---------------------------------------------------------------------

def channels_by_node(g: Gltf):
    anim = g.doc["animations"][0]
    return {(c["target"]["node"], c["target"]["path"]): anim["samplers"][c["sampler"]] for c in anim["channels"]}


def test_vrma_structure_by_the_spec(tmp_path, frames):
    g = read_glb(write(tmp_path / "talk.vrma", frames))
    assert g.doc["extensionsUsed"] == ["VRMC_vrm_animation"]
    ext = g.doc["extensions"]["VRMC_vrm_animation"]
    assert ext["specVersion"] == "1.0"
    nodes = g.doc["nodes"]
    bones = {name: b["node"] for name, b in ext["humanoid"]["humanBones"].items()}
    assert nodes[bones["head"]]["name"] == "head" and bones["head"] in nodes[bones["neck"]]["children"]
    presets, custom = ext["expressions"]["preset"], ext["expressions"]["custom"]
    assert {"aa", "ih", "ou", "ee", "oh", "blink", "blinkLeft", "blinkRight"} <= set(presets)
    assert "happy" not in presets  # emotions would double a perfect-sync avatar's customs
    assert set(custom) == set(labels.BLENDSHAPES)
    channels = channels_by_node(g)
    times = g.accessor(channels[(bones["head"], "rotation")]["input"])
    np.testing.assert_allclose(times, np.arange(len(frames)) / FPS, atol=1e-6)
    assert g.doc["accessors"][channels[(bones["head"], "rotation")]["input"]]["max"] == pytest.approx(times[-1])
    jaw = g.accessor(channels[(custom["jawOpen"]["node"], "translation")]["output"])
    np.testing.assert_allclose(jaw[:, 0], frames.channel("jawOpen"), atol=1e-6)
    assert not jaw[:, 1:].any()
    aa = g.accessor(channels[(presets["aa"]["node"], "translation")]["output"])[:, 0]
    np.testing.assert_allclose(aa, labels.to_vrm_presets(frames.blendshapes)["aa"], atol=1e-6)


def test_vrma_neck_and_head_compose_to_the_head_rotation(frames):
    g = parse_back(build_vrma(frames))
    ext = g.doc["extensions"]["VRMC_vrm_animation"]["humanoid"]["humanBones"]
    channels = channels_by_node(g)
    neck = g.accessor(channels[(ext["neck"]["node"], "rotation")]["output"])
    head = g.accessor(channels[(ext["head"]["node"], "rotation")]["output"])
    whole = head_quaternions(frames.head)
    np.testing.assert_allclose(quaternion_multiply(neck, head), whole, atol=1e-5)
    angle = lambda q: 2 * np.arccos(np.clip(np.abs(q[:, 3]), 0, 1))  # noqa: E731
    np.testing.assert_allclose(angle(neck), NECK_SHARE * angle(whole), atol=1e-4)


def parse_back(g: Gltf) -> Gltf:
    from talkmotion.preview.gltf import parse_glb

    return parse_glb(g.to_glb())


def test_vrma_gaze_is_lookat_never_a_look_preset(frames):
    """VRMC_vrm_animation 1.0: lookUp/Down/Left/Right cannot be animated presets; gaze goes through lookAt."""
    for mode in ("preset", "both", "custom"):
        ext = parse_back(build_vrma(frames, mode)).doc["extensions"]["VRMC_vrm_animation"]
        assert not set(labels.VRM_LOOK_PRESETS) & set(ext["expressions"].get("preset", {})), mode
        assert ("lookAt" in ext) == (mode != "custom"), mode
    g = parse_back(build_vrma(frames, "preset"))
    node = g.doc["extensions"]["VRMC_vrm_animation"]["lookAt"]["node"]
    q = g.accessor(channels_by_node(g)[(node, "rotation")]["output"])
    # the gaze direction is the rest direction (+Z) turned by q: yaw toward +X (the left), pitch toward -Y
    direction = quaternion_matrices(q)[:, :, 2]
    yaw, pitch = np.moveaxis(labels.gaze_angles(frames.blendshapes), -1, 0)
    np.testing.assert_allclose(np.degrees(np.arctan2(direction[:, 0], direction[:, 2])), yaw, atol=1e-3)
    np.testing.assert_allclose(np.degrees(np.arcsin(-direction[:, 1])), pitch, atol=1e-3)


def test_vrma_expression_options(tmp_path, frames):
    only_custom = parse_back(build_vrma(frames, "custom", "pascal")).doc["extensions"]["VRMC_vrm_animation"]
    assert "preset" not in only_custom["expressions"] and "JawOpen" in only_custom["expressions"]["custom"]
    only_preset = parse_back(build_vrma(frames, "preset")).doc["extensions"]["VRMC_vrm_animation"]
    assert "custom" not in only_preset["expressions"] and "happy" in only_preset["expressions"]["preset"]
    with pytest.raises(ValueError, match="expressions must be one of"):
        file_sink(tmp_path / "x.vrma", expressions="all")


# --- glTF with animation ---------------------------------------------------------------

def test_glb_animation_on_the_reference_avatar(tmp_path, frames, avatar_files):
    glb, _ = avatar_files
    g = read_glb(write(tmp_path / "talk.glb", frames, avatar=glb))
    source = read_glb(glb)
    assert g.doc["nodes"] == source.doc["nodes"]  # the avatar is kept as it was
    face = next(i for i, n in enumerate(g.doc["nodes"]) if n.get("name") == "Face")
    head = next(i for i, n in enumerate(g.doc["nodes"]) if n.get("name") == "head")
    channels = channels_by_node(g)
    weights = g.accessor(channels[(face, "weights")]["output"]).reshape(len(frames), labels.NUM_BLENDSHAPES)
    np.testing.assert_allclose(weights, frames.blendshapes, atol=1e-6)
    rotation = g.accessor(channels[(head, "rotation")]["output"])
    np.testing.assert_allclose(rotation, head_quaternions(frames.head), atol=1e-6)
    # The original mesh data is still readable at the same accessors.
    np.testing.assert_array_equal(g.accessor(0), source.accessor(0))


def test_an_avatar_whose_nodes_form_a_cycle_is_refused_naming_the_file(tmp_path, frames, avatar_files):
    from talkmotion.preview.avatar import AvatarError
    from talkmotion.preview.avatar.scene import build_posable

    source = read_glb(avatar_files[0])
    doc = json.loads(json.dumps(source.doc))
    head = next(i for i, n in enumerate(doc["nodes"]) if n.get("name") == "head")
    parent = next(i for i, n in enumerate(doc["nodes"]) if head in n.get("children", []))
    doc["nodes"][head].setdefault("children", []).append(parent)        # head → its parent → head ...
    path = tmp_path / "cycle.glb"
    path.write_bytes(Gltf(doc, source.binary).to_glb())
    with pytest.raises(AvatarError, match="cycle.glb: its node tree cannot be animated .*reached twice"):
        write(tmp_path / "talk.glb", frames, avatar=path)
    assert not (tmp_path / "talk.glb").exists()
    with pytest.raises(AvatarError, match="cycle.glb"):
        build_posable(load_avatar(path))


def test_glb_animation_through_presets_for_an_avatar_without_arkit(tmp_path, frames, avatar_files):
    _, vrm = avatar_files
    v = read_glb(vrm)
    doc = json.loads(json.dumps(v.doc))
    face_mesh = doc["meshes"][next(n["mesh"] for n in doc["nodes"] if n.get("name") == "Face")]
    face_mesh["extras"]["targetNames"] = [f"Shape{i}" for i in range(labels.NUM_BLENDSHAPES)]
    doc["extensions"]["VRMC_vrm"]["expressions"].pop("custom")
    path = tmp_path / "presets.vrm"
    path.write_bytes(Gltf(doc, v.binary).to_glb())
    avatar = load_avatar(path)
    g = read_glb(write(tmp_path / "presets.glb", frames, avatar=avatar))
    face = next(i for i, n in enumerate(g.doc["nodes"]) if n.get("name") == "Face")
    weights = g.accessor(channels_by_node(g)[(face, "weights")]["output"]).reshape(len(frames), -1)
    presets = labels.to_vrm_presets(frames.blendshapes)
    np.testing.assert_allclose(weights[:, labels.index("eyeBlinkLeft")],
                               np.clip(presets["blink"] + presets["blinkLeft"], 0, 1), atol=1e-5)
    assert not np.allclose(weights[:, labels.index("mouthRollLower")], frames.channel("mouthRollLower"))


def test_existing_file_sink_call_still_works(tmp_path, frames, avatar_files):
    path = write(tmp_path / "plain.json", frames)
    assert json.loads(path.read_text())["format"] == "talkmotion.frames"
    same_options = write(tmp_path / "plain.csv", frames, avatar=avatar_files[0])  # ignored by csv
    assert same_options.read_text().startswith("time,")


def test_vrm0_avatar_presets_and_head_turned_for_its_minus_z_front(tmp_path, avatar_files):
    from talkmotion.sinks.gltf_anim import head_local_rotations

    glb, _ = avatar_files
    source = read_glb(glb)
    doc = json.loads(json.dumps(source.doc))
    head = next(i for i, n in enumerate(doc["nodes"]) if n.get("name") == "head")
    face_mesh = next(n["mesh"] for n in doc["nodes"] if n.get("name") == "Face")
    doc["meshes"][face_mesh].pop("extras")
    doc["extensions"] = {"VRM": {
        "humanoid": {"humanBones": [{"bone": "head", "node": head}]},
        "blendShapeMaster": {"blendShapeGroups": [
            {"name": "A", "presetName": "a", "binds": [{"mesh": face_mesh, "index": labels.index("jawOpen"),
                                                        "weight": 100}]}]}}}
    path = tmp_path / "old.vrm"
    path.write_bytes(Gltf(doc, source.binary).to_glb())
    avatar = load_avatar(path)
    assert avatar.vrm_version == "0.x" and avatar.mode == "presets" and set(avatar.presets) == {"aa"}
    pitch_down, turn_left = head_local_rotations(avatar, np.array([[20.0, 0, 0], [0, 20.0, 0]]))
    assert pitch_down[0] < 0 < head_quaternions(np.array([20.0, 0, 0]))[0]  # X is flipped for a -Z front
    assert turn_left[1] > 0  # a turn about Y is the same either way


@pytest.mark.parametrize("shape, vowel", [
    ({"jawOpen": 0.7}, "aa"),
    ({"mouthPucker": 0.8}, "ou"),
    ({"mouthFunnel": 0.7, "jawOpen": 0.3}, "oh"),
    ({"mouthStretchLeft": 0.6, "mouthStretchRight": 0.6, "mouthSmileLeft": 0.4, "mouthSmileRight": 0.4}, "ee"),
])
def test_vrm_preset_mapping_picks_the_vowel_and_never_stacks_past_one(shape, vowel):
    row = np.zeros(labels.NUM_BLENDSHAPES, np.float32)
    for name, value in shape.items():
        row[labels.index(name)] = value
    presets = labels.to_vrm_presets(row)
    assert max(labels.VRM_VOWELS, key=lambda v: presets[v]) == vowel
    wide = np.ones(labels.NUM_BLENDSHAPES, np.float32)
    assert sum(labels.to_vrm_presets(wide)[v] for v in labels.VRM_VOWELS) <= 1 + 1e-6


def test_formats_by_extension(tmp_path):
    from talkmotion.sinks import file_format

    assert file_format("take.livelink.csv") == "livelink"
    assert file_format("plain.csv") == "csv"
    assert file_format("a.vrma") == "vrma" and file_format("a.glb") == "glb"


def test_head_rotation_lands_in_world_space_under_rotated_parents(tmp_path, avatar_files):
    from talkmotion.sinks.gltf_anim import head_local_rotations

    glb, _ = avatar_files
    source = read_glb(glb)
    doc = json.loads(json.dumps(source.doc))
    names = [n.get("name") for n in doc["nodes"]]
    parent_rest = head_quaternions(np.array([0.0, 90.0, 30.0]))  # the neck node is turned at rest
    head_rest = head_quaternions(np.array([-15.0, 0.0, 5.0]))
    doc["nodes"][names.index("neck")]["rotation"] = parent_rest.tolist()
    doc["nodes"][names.index("head")]["rotation"] = head_rest.tolist()
    path = tmp_path / "rotated.glb"
    path.write_bytes(Gltf(doc, source.binary).to_glb())
    turn = head_quaternions(np.array([[10.0, -20.0, 5.0]]))
    local = head_local_rotations(load_avatar(path), np.array([[10.0, -20.0, 5.0]]))
    world = quaternion_multiply(parent_rest, local)
    expected = quaternion_multiply(turn, quaternion_multiply(parent_rest, head_rest))
    assert min(np.abs(world - expected).max(), np.abs(world + expected).max()) < 1e-6
