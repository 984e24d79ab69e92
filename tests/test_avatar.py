"""The reference avatar (.glb + VRM 1.0) parsed back, its morphs' plausibility, and avatar loading."""

import json
import os

import numpy as np
import pytest

from talkmotion import labels
from talkmotion.preview.avatar import (AvatarError, REFERENCE_VERSION, VERSION_FILE, load_avatar, reference_avatar_paths,
                               write_reference_avatar)
from talkmotion.preview.avatar.loader import arkit_name, target_names
from talkmotion.preview.avatar.reference import PRESET_BINDS
from talkmotion.cli import main
from talkmotion.preview.gltf import Gltf, parse_glb, read_glb

REQUIRED_BONES = ("hips", "spine", "head", "leftUpperLeg", "leftLowerLeg", "leftFoot", "rightUpperLeg",
                  "rightLowerLeg", "rightFoot", "leftUpperArm", "leftLowerArm", "leftHand", "rightUpperArm",
                  "rightLowerArm", "rightHand")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    glb, vrm = write_reference_avatar(tmp_path_factory.mktemp("avatar"))
    return read_glb(glb), read_glb(vrm), glb, vrm


def face_mesh(g: Gltf):
    node = next(n for n in g.doc["nodes"] if n.get("name") == "Face")
    return g.doc["meshes"][node["mesh"]]


def parent_of(g: Gltf):
    return {c: i for i, n in enumerate(g.doc["nodes"]) for c in n.get("children", [])}


def test_glb_container_and_morph_targets(files):
    g, _, glb, _ = files
    assert glb.read_bytes()[:4] == b"glTF"
    mesh = face_mesh(g)
    assert target_names(mesh) == list(labels.BLENDSHAPES)
    for prim in mesh["primitives"]:
        assert len(prim["targets"]) == labels.NUM_BLENDSHAPES
        count = g.doc["accessors"][prim["attributes"]["POSITION"]]["count"]
        for target in prim["targets"]:
            assert g.doc["accessors"][target["POSITION"]]["count"] == count
        indices = g.accessor(prim["indices"])
        assert indices.size % 3 == 0 and indices.max() < count
        assert g.accessor(prim["attributes"]["COLOR_0"]).shape == (count, 3)


def test_node_hierarchy_face_hangs_under_the_head(files):
    g, *_ = files
    names = [n.get("name") for n in g.doc["nodes"]]
    up = parent_of(g)
    chain, node = [], names.index("Face")
    while node in up:
        node = up[node]
        chain.append(names[node])
    assert chain == ["head", "neck", "chest", "spine", "hips", "Root"]
    assert all("rotation" not in n and "scale" not in n for n in g.doc["nodes"])  # VRM 1.0 rest pose


def test_vrm_extension(files):
    _, v, _, _ = files
    ext = v.doc["extensions"]["VRMC_vrm"]
    assert "VRMC_vrm" in v.doc["extensionsUsed"] and ext["specVersion"] == "1.0"
    bones = ext["humanoid"]["humanBones"]
    for bone in (*REQUIRED_BONES, "neck", "chest"):
        assert v.doc["nodes"][bones[bone]["node"]]["name"] == bone
    face = next(i for i, n in enumerate(v.doc["nodes"]) if n.get("name") == "Face")
    presets, custom = ext["expressions"]["preset"], ext["expressions"]["custom"]
    for name in ("aa", "ih", "ou", "ee", "oh", "blink", "blinkLeft", "blinkRight", "lookUp", "lookDown",
                 "lookLeft", "lookRight"):
        assert presets[name]["morphTargetBinds"], name
    assert set(custom) == set(labels.BLENDSHAPES)
    for i, name in enumerate(labels.BLENDSHAPES):
        assert custom[name]["morphTargetBinds"] == [{"node": face, "index": i, "weight": 1.0}]
    assert custom["jawOpen"]["overrideMouth"] == custom["tongueOut"]["overrideMouth"] == "block"
    assert custom["eyeBlinkLeft"]["overrideBlink"] == custom["eyeLookUpLeft"]["overrideLookAt"] == "block"
    assert {custom["browInnerUp"][k] for k in ("overrideMouth", "overrideBlink", "overrideLookAt")} == {"none"}
    aa = {b["index"]: b["weight"] for b in presets["aa"]["morphTargetBinds"]}
    assert aa == {labels.index("jawOpen"): PRESET_BINDS["aa"]["jawOpen"]}
    for m in ("name", "authors", "licenseUrl"):
        assert ext["meta"][m]


def morph(g: Gltf, name: str) -> tuple[np.ndarray, np.ndarray]:
    prim = face_mesh(g)["primitives"][0]
    base = g.accessor(prim["attributes"]["POSITION"])
    return base, g.accessor(prim["targets"][labels.index(name)]["POSITION"])


def test_every_morph_moves_something_and_sides_mirror(files):
    g, *_ = files
    for name in labels.BLENDSHAPES:
        assert np.abs(morph(g, name)[1]).max() > 1e-3, name
    for name in labels.BLENDSHAPES:
        if name.endswith("Left") and name not in ("jawLeft", "mouthLeft"):  # those two move the middle
            base, left = morph(g, name)
            _, right = morph(g, name[:-4] + "Right")
            moved_l = np.abs(left).max(1) > 1e-4
            moved_r = np.abs(right).max(1) > 1e-4
            assert base[moved_l, 0].mean() > 0 > base[moved_r, 0].mean(), name  # Left is the avatar's +X
            assert np.abs(left).sum() == pytest.approx(np.abs(right).sum(), rel=0.02), name


def test_morphs_move_the_right_way(files):
    g, *_ = files
    base, jaw = morph(g, "jawOpen")
    assert jaw[:, 1].min() < -0.02  # the chin drops by centimetres...
    assert base[np.argmin(jaw[:, 1]), 2] > 0.05  # ...at the front of the face
    assert morph(g, "jawLeft")[1][:, 0].max() > 0.005 > -0.005 > morph(g, "jawRight")[1][:, 0].min()
    moved = np.abs(jaw).max(1) > 1e-4
    assert base[moved, 1].max() < base[np.abs(morph(g, "browInnerUp")[1]).max(1) > 1e-4, 1].min()
    _, blink = morph(g, "eyeBlinkLeft")
    lid = np.abs(blink).max(1) > 1e-4
    assert blink[lid, 1].mean() < 0 and (base[lid, 0] > 0).all()
    _, smile = morph(g, "mouthSmileRight")
    assert smile[np.abs(smile).max(1) > 1e-4, 1].mean() > 0
    _, look = morph(g, "eyeLookOutLeft")
    ball = np.abs(look).max(1) > 1e-4
    front = ball & (base[:, 2] >= base[ball, 2].max() - 1e-3)  # the pupil
    assert look[front, 0].mean() > 0  # the left eye looks out toward +X


def test_reference_paths_build_once_and_rebuild_when_stale(tmp_path):
    glb, vrm = reference_avatar_paths(tmp_path)
    assert glb.exists() and vrm.exists() and vrm.suffix == ".vrm"
    assert (tmp_path / VERSION_FILE).read_text().strip() == REFERENCE_VERSION
    os.utime(glb, (1, 1))
    reference_avatar_paths(tmp_path)
    assert glb.stat().st_mtime == 1  # cached: not rewritten
    (tmp_path / VERSION_FILE).write_text("old\n")
    reference_avatar_paths(tmp_path)
    assert glb.stat().st_mtime > 1


def test_cli_writes_both_files(tmp_path, capsys):
    assert main(["avatar", "-o", str(tmp_path / "out")]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"talkmotion_head.glb", "talkmotion_head.vrm"}
    assert main(["avatar", "--check", str(tmp_path / "out" / "talkmotion_head.vrm")]) == 0
    assert "perfect sync" in capsys.readouterr().out


def test_loading_the_reference_vrm(files):
    *_, vrm = files
    avatar = load_avatar(vrm)
    assert avatar.vrm_version == "1.0" and avatar.mode == "arkit"
    assert set(avatar.arkit) == set(labels.BLENDSHAPES)
    assert avatar.gltf.doc["nodes"][avatar.head_node]["name"] == "head"
    weights = avatar.mesh_weights(np.eye(labels.NUM_BLENDSHAPES, dtype=np.float32))
    (mesh, w), = weights.items()
    np.testing.assert_allclose(w, np.eye(labels.NUM_BLENDSHAPES))


def test_morph_names_are_matched_loosely():
    assert arkit_name("Face.JawOpen") == "jawOpen"
    assert arkit_name("blendShape1.eyeBlink_L") == "eyeBlinkLeft"
    assert arkit_name("MOUTHSMILERIGHT") == "mouthSmileRight"
    assert arkit_name("Fcl_MTH_A") is None


def _without_arkit_names(g: Gltf) -> Gltf:
    """The reference VRM with its morphs renamed and only preset expressions kept."""
    doc = json.loads(json.dumps(g.doc))
    mesh = face_mesh(Gltf(doc))
    mesh["extras"]["targetNames"] = [f"Shape{i:02d}" for i in range(labels.NUM_BLENDSHAPES)]
    doc["extensions"]["VRMC_vrm"]["expressions"].pop("custom")
    return Gltf(doc, g.binary)


def test_avatar_without_arkit_morphs_uses_presets(files, tmp_path):
    _, v, _, _ = files
    path = tmp_path / "presets.vrm"
    path.write_bytes(_without_arkit_names(v).to_glb())
    avatar = load_avatar(path)
    assert avatar.mode == "presets"
    assert "VRM presets" in avatar.describe() and "aa" in avatar.describe()
    open_jaw = np.zeros((1, labels.NUM_BLENDSHAPES), np.float32)
    open_jaw[0, labels.index("jawOpen")] = 0.5
    (mesh, w), = avatar.mesh_weights(open_jaw).items()
    assert w[0, labels.index("jawOpen")] > 0.2  # through the aa preset's bind
    assert w[0, labels.index("eyeBlinkLeft")] == 0


@pytest.mark.parametrize("content, message", [
    (b"not a model at all", "not a binary glTF"),
    (b"glTF\x02\x00\x00\x00\xff\xff\x00\x00", "truncated"),
])
def test_broken_files_are_refused_with_the_path(tmp_path, content, message):
    path = tmp_path / "broken.vrm"
    path.write_bytes(content)
    with pytest.raises(AvatarError, match=message) as info:
        load_avatar(path)
    assert str(path) in str(info.value)


def test_broken_vrm_extension_and_faceless_models(files, tmp_path):
    _, v, _, _ = files
    doc = json.loads(json.dumps(v.doc))
    doc["extensions"]["VRMC_vrm"]["expressions"]["preset"]["aa"]["morphTargetBinds"][0]["node"] = 999
    path = tmp_path / "bad.vrm"
    path.write_bytes(Gltf(doc, v.binary).to_glb())
    with pytest.raises(AvatarError, match="broken VRM extension"):
        load_avatar(path)
    plain = json.loads(json.dumps(v.doc))
    plain.pop("extensions")
    for mesh in plain["meshes"]:
        mesh.pop("extras", None)
    path = tmp_path / "faceless.glb"
    path.write_bytes(Gltf(plain, v.binary).to_glb())
    with pytest.raises(AvatarError, match="no ARKit morph targets and no VRM expressions"):
        load_avatar(path)
    assert main(["avatar", "--check", str(path)]) == 2


def test_glb_round_trip_keeps_the_document(files):
    g, *_ = files
    again = parse_glb(g.to_glb())
    assert again.doc["nodes"] == g.doc["nodes"]
    np.testing.assert_array_equal(again.accessor(0), g.accessor(0))


def test_docs_table_matches_the_preset_mapping():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "avatars.md").read_text()
    for preset, terms in labels.VRM_PRESETS.items():
        row = f"| `{preset}` | " + " ".join(f"{w:+g}·{n}" for n, w in terms.items()) + " |"
        assert row in text, preset
