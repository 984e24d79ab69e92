"""`talkmotion extract`: real MediaPipe on a real face (scikit-image's astronaut), real PyAV videos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from face_videos import (astronaut_face, faceless_video, roll_angle, rotated, rotating_face_video, tone,
                         write_video)
from talkmotion import labels
from talkmotion.assets import LANDMARKER
from talkmotion.audio import SAMPLE_RATE
from talkmotion.cli import main
from talkmotion.data.clips import Manifest, clip_path, load_clip, read_dataset
from talkmotion.data.extract import ExtractError, video_id
from talkmotion.data.facetrack import pose_from_matrix
from talkmotion.rotation import head_quaternions, quaternion_matrices

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

ROLL = labels.index("roll")
TONGUE = labels.index("tongueOut")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The test videos, made once: 2 s each, 256 x 256."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    gaps = rng.uniform(1 / 50, 1 / 15, 200)   # 15..50 fps, changing every frame
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    return {
        "face": rotating_face_video(root / "face.mp4"),
        "noface": faceless_video(root / "noface.mp4"),
        "vfr": rotating_face_video(root / "vfr.mp4", times=times[times < 2.0]),
        "silent": rotating_face_video(root / "silent.mp4", with_audio=False),
    }


def extract(*args) -> int:
    return main(["extract", *map(str, args), "--workers", "1", "-q"])


def manifest(root: Path, name: str = "manifest.json") -> dict:
    return json.loads((root / name).read_text())["clips"]


def roll_fit(clip, start_s: float = 0.0) -> tuple[float, float]:
    """(slope, residual std) of tracked roll against the known in-plane angle at each label time."""
    t = start_s + np.arange(len(clip.labels)) / clip.fps
    known = np.array([roll_angle(x) for x in t])
    roll = clip.labels[:, ROLL]
    slope, offset = np.polyfit(known, roll, 1)
    return float(slope), float(np.std(roll - (slope * known + offset)))


# --- head pose convention ------------------------------------------------------------

@pytest.mark.parametrize("angles", [(10.0, 0.0, 0.0), (0.0, -20.0, 0.0), (0.0, 0.0, 15.0), (8.0, -12.0, 20.0)])
def test_pose_from_matrix_inverts_the_label_convention(angles):
    rotation = quaternion_matrices(head_quaternions(np.array(angles)))
    matrix = np.eye(4)
    matrix[:3, :3] = 1.3 * rotation                 # MediaPipe's matrix may carry scale
    matrix[:3, 3] = [1.5, -2.0, -60.0]
    got, translation = pose_from_matrix(matrix)
    np.testing.assert_allclose(got, angles, atol=1e-3)
    np.testing.assert_allclose(translation, [1.5, -2.0, -60.0], atol=1e-5)


def test_mediapipe_blendshape_names_are_the_arkit_ones():
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(LANDMARKER)),
                                           output_face_blendshapes=True, num_faces=1)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        found = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=astronaut_face()))
    names = {c.category_name for c in found.face_blendshapes[0]} - {"_neutral"}
    assert names == set(labels.BLENDSHAPES) - {"tongueOut"}


# --- the real face ---------------------------------------------------------------------

def test_rotating_face_roll_follows_the_known_angle(videos, tmp_path):
    out = tmp_path / "data"
    assert extract(videos["face"], "-o", out, "--clip-seconds", "2") == 0
    entries = manifest(out)
    vid = video_id(videos["face"])
    assert entries[vid]["status"] == "done"
    clip = load_clip(clip_path(out, f"{vid}-0000"))
    assert clip.labels.shape == (60, labels.NUM_CHANNELS)
    assert clip.audio.size == 2 * SAMPLE_RATE
    slope, spread = roll_fit(clip)
    # Positive slope: a counter-clockwise image turn is a tilt toward the subject's right shoulder.
    assert 0.85 < slope < 1.15 and spread < 1.5, (slope, spread)
    assert not clip.mask[:, TONGUE].any()
    assert clip.mask[:, [i for i in range(labels.NUM_CHANNELS) if i != TONGUE]].all()
    # The audio is the 220 Hz tone, from the start: its level is there in the first and last 0.1 s.
    edge = int(0.1 * SAMPLE_RATE)
    assert np.sqrt(np.mean(clip.audio[edge:2 * edge] ** 2)) > 0.15
    assert np.sqrt(np.mean(clip.audio[-2 * edge:-edge] ** 2)) > 0.15
    translation = np.array(clip.meta["head_translation_cm"], float)
    assert translation.shape == (60, 3) and (translation[:, 2] < 0).all()   # in front of the camera
    quality = clip.meta["quality"]
    assert quality["face_ratio"] == 1.0 and quality["audio_present"] and clip.meta["source"] == "video"
    assert clip.meta["video"] == str(videos["face"])


def test_variable_frame_rate_is_resampled_by_timestamp(videos, tmp_path):
    out = tmp_path / "data"
    assert extract(videos["vfr"], "-o", out, "--clip-seconds", "2") == 0
    entry = manifest(out)[f"{video_id(videos['vfr'])}-0000"]
    assert entry["status"] == "ok" and entry["quality"]["variable_fps"]
    clip = load_clip(out / entry["file"])
    assert len(clip.labels) == 60                      # 2 s at the model's 30 fps, whatever the source did
    slope, spread = roll_fit(clip)
    assert 0.85 < slope < 1.15 and spread < 2.0, (slope, spread)


def test_no_face_is_masked_and_filtered_and_scene_cut_counted(videos, tmp_path):
    out = tmp_path / "data"
    assert extract(videos["noface"], "-o", out, "--clip-seconds", "2") == 0
    entry = manifest(out)[f"{video_id(videos['noface'])}-0000"]
    assert entry["status"] == "skipped" and "--min-face-ratio" in entry["reason"]
    assert entry["quality"]["scene_cuts"] == 1 and entry["quality"]["no_face_ratio"] == 1.0
    assert not clip_path(out, f"{video_id(videos['noface'])}-0000").exists()

    kept = tmp_path / "kept"
    assert extract(videos["noface"], "-o", kept, "--clip-seconds", "2", "--min-face-ratio", "0") == 0
    clip = load_clip(clip_path(kept, f"{video_id(videos['noface'])}-0000"))
    assert not clip.mask.any()                         # every row invalid: no face anywhere


def test_video_without_audio_is_skipped_unless_allowed(videos, tmp_path):
    out = tmp_path / "data"
    assert extract(videos["silent"], "-o", out, "--clip-seconds", "2") == 0
    cid = f"{video_id(videos['silent'])}-0000"
    entry = manifest(out)[cid]
    assert entry["status"] == "skipped" and "no audio track" in entry["reason"]
    assert extract(videos["silent"], "-o", out, "--clip-seconds", "2", "--allow-no-audio") == 0
    # The first run settled the clip; a rerun with other filters keeps that decision (resume).
    assert manifest(out)[cid]["status"] == "skipped"
    other = tmp_path / "other"
    assert extract(videos["silent"], "-o", other, "--clip-seconds", "2", "--allow-no-audio") == 0
    clip = load_clip(clip_path(other, cid))
    assert not clip.audio.any() and clip.meta["quality"]["audio_track"] is False and clip.mask[:, ROLL].all()


# --- bad input -----------------------------------------------------------------------------

def test_corrupt_and_truncated_files_fail_clearly_and_the_rest_is_made(videos, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.mp4").write_text("not a video")
    data = videos["face"].read_bytes()
    (inputs / "cut.mp4").write_bytes(data[: len(data) // 3])        # mp4 without its index
    long = rotating_face_video(tmp_path / "long.mkv", seconds=3.0)
    whole = long.read_bytes()
    (inputs / "half.mkv").write_bytes(whole[: len(whole) // 2])      # streamable, decodes part way
    shutil.copy(videos["face"], inputs / "good.mp4")
    out = tmp_path / "data"
    assert extract(inputs, "-o", out, "--clip-seconds", "1") == 1
    err = capsys.readouterr().err
    entries = manifest(out)
    assert entries[video_id(inputs / "notes.mp4")]["status"] == "failed"
    assert "notes.mp4: not a readable video file" in entries[video_id(inputs / "notes.mp4")]["error"]
    assert "cut.mp4" in entries[video_id(inputs / "cut.mp4")]["error"]
    assert "failed: " in err and "cut.mp4" in err
    good = [e for k, e in entries.items() if k.startswith(video_id(inputs / "good.mp4") + "-")]
    assert [e["status"] for e in good] == ["ok", "ok"]
    half = entries[video_id(inputs / "half.mkv")]
    assert half["status"] == "done" and "truncated" in half["warning"]
    assert entries[f"{video_id(inputs / 'half.mkv')}-0000"]["status"] == "ok"   # what decoded is kept
    for entry in read_dataset(out).values():
        load_clip(entry["path"])


def test_duplicate_names_unreadable_folders_and_shards(videos, tmp_path, capsys):
    inputs = tmp_path / "in"
    for sub in ("a", "b", "c"):
        (inputs / sub).mkdir(parents=True)
    face = rotating_face_video(tmp_path / "short.mp4", seconds=1.0)
    shutil.copy(face, inputs / "a" / "talk.mp4")
    shutil.copy(face, inputs / "b" / "talk.mp4")
    shutil.copy(face, inputs / "c" / "other.mp4")
    (inputs / "loop").symlink_to(inputs / "loop")                   # a folder that cannot be listed
    out = tmp_path / "data"
    for shard in ("0/2", "1/2"):
        extract(inputs, "-o", out, "--clip-seconds", "1", "--shard", shard, "--workers", "2")
    assert "loop" in capsys.readouterr().err
    shard0, shard1 = manifest(out, "manifest.shard-0-of-2.json"), manifest(out, "manifest.shard-1-of-2.json")
    ids = {video_id(inputs / "a" / "talk.mp4"), video_id(inputs / "b" / "talk.mp4"),
           video_id(inputs / "c" / "other.mp4")}
    assert len(ids) == 3
    done0 = {k for k, e in shard0.items() if e["status"] == "done"}
    done1 = {k for k, e in shard1.items() if e["status"] == "done"}
    assert done0 | done1 == ids and not done0 & done1
    assert any(e.get("kind") == "input" and "loop" in e["video"] for e in shard0.values())
    assert sorted(read_dataset(out)) == sorted(f"{v}-0000" for v in ids)
    assert not (out / "manifest.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_reported(videos, tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "locked").mkdir(parents=True)
    shutil.copy(videos["face"], inputs / "good.mp4")
    (inputs / "locked").chmod(0)
    try:
        assert extract(inputs, "-o", tmp_path / "data", "--clip-seconds", "2") == 1
    finally:
        (inputs / "locked").chmod(0o755)
    assert "locked" in capsys.readouterr().err


def test_landmarker_with_the_wrong_hash_is_refused_and_nothing_is_lost(videos, tmp_path):
    out = tmp_path / "data"
    assert extract(videos["face"], "-o", out, "--clip-seconds", "2") == 0
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(LANDMARKER.read_bytes() + b"\0")
    from talkmotion.data.extract import add_arguments, run
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ExtractError, match=r"face_landmarker\.task: .*SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}"):
        run(parser.parse_args([str(videos["noface"]), "-o", str(out), "--landmarker", str(bad)]))
    assert (out / "manifest.json").read_bytes() == before
    assert main(["extract", str(videos["noface"]), "-o", str(out), "--landmarker", str(bad)]) == 2


# --- resume -----------------------------------------------------------------------------------

def test_resume_continues_a_video_from_its_first_unsettled_clip(tmp_path):
    video = rotating_face_video(tmp_path / "three.mp4", seconds=3.0)
    out = tmp_path / "data"
    assert extract(video, "-o", out, "--clip-seconds", "1") == 0
    vid = video_id(video)
    files = [clip_path(out, f"{vid}-{k:04d}") for k in range(3)]
    stamps = [f.stat().st_mtime_ns for f in files]
    # As if killed while writing clip 2: its entry and the video's are missing, a temp file is left.
    man = Manifest(out)
    del man.entries[f"{vid}-0002"], man.entries[vid]
    man.save()
    files[2].unlink()
    stale = files[2].with_name(f".{files[2].name}.99999.tmp")
    stale.write_bytes(b"half a clip")
    assert extract(video, "-o", out, "--clip-seconds", "1") == 0
    assert [f.stat().st_mtime_ns for f in files[:2]] == stamps[:2]   # settled clips untouched
    assert files[2].exists() and not stale.exists()
    clip = load_clip(files[2])
    slope, _ = roll_fit(clip, start_s=2.0)
    assert slope > 0.8                                   # tracked afresh from the middle of the video
    assert manifest(out)[vid]["status"] == "done"


def test_clips_made_but_not_recorded_are_recognised_around_a_gap(tmp_path):
    # Clips 0 and 2 are to be made again, clip 1 is on disk but not in the manifest (the run was
    # killed before its next save): clip 1 is recognised and not tracked again, 0 and 2 are remade.
    video = rotating_face_video(tmp_path / "three.mp4", seconds=3.0)
    out = tmp_path / "data"
    assert extract(video, "-o", out, "--clip-seconds", "1") == 0
    vid = video_id(video)
    files = [clip_path(out, f"{vid}-{k:04d}") for k in range(3)]
    before = Manifest(out).entries
    man = Manifest(out)
    for key in (vid, *(f"{vid}-{k:04d}" for k in range(3))):
        del man.entries[key]
    man.save()
    files[0].unlink()
    files[2].unlink()
    stamp = files[1].stat().st_mtime_ns
    assert extract(video, "-o", out, "--clip-seconds", "1") == 0
    after = Manifest(out)
    assert files[1].stat().st_mtime_ns == stamp
    assert after.entries[f"{vid}-0001"] == before[f"{vid}-0001"]
    assert after.info["summary"]["clips_recognised"] == 1 and after.info["summary"]["clips_ok"] == 2
    for k, start in ((0, 0.0), (2, 2.0)):
        clip = load_clip(files[k])
        assert len(clip.labels) == 30 and clip.audio.size == SAMPLE_RATE
        slope, _ = roll_fit(clip, start_s=start)
        assert slope > 0.8                               # each tracked at its own place in the video
    assert after.entries[vid]["status"] == "done" and after.entries[vid]["clip_ids"] == before[vid]["clip_ids"]


def test_killed_run_leaves_no_half_written_clip_and_resumes(tmp_path):
    video = rotating_face_video(tmp_path / "four.mp4", seconds=4.0)
    out = tmp_path / "data"
    cmd = [sys.executable, "-c", "import sys; from talkmotion.cli import main; sys.exit(main(sys.argv[1:]))",
           "extract", str(video), "-o", str(out), "--clip-seconds", "1", "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = clip_path(out, f"{video_id(video)}-0000")
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                   # the parent and its worker
    proc.wait()
    assert first.exists()
    for path in (out / "clips").glob("*.clip.safetensors"):
        load_clip(path)                                   # every clip file there is whole
    assert extract(video, "-o", out, "--clip-seconds", "1") == 0
    entries = read_dataset(out)
    assert sorted(entries) == [f"{video_id(video)}-{k:04d}" for k in range(4)]
    for entry in entries.values():
        load_clip(entry["path"])
    assert not list((out / "clips").glob(".*.tmp"))


def test_finished_videos_are_skipped(tmp_path, capsys):
    frames = [(i / 30, rotated(astronaut_face(), 0.0, 256)) for i in range(30)]
    video = write_video(tmp_path / "still.mp4", frames, audio=tone(1.0))
    out = tmp_path / "data"
    assert main(["extract", str(video), "-o", str(out), "--workers", "1"]) == 0
    stamp = clip_path(out, f"{video_id(video)}-0000").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["extract", str(video), "-o", str(out), "--workers", "1"]) == 0
    assert "1 videos already done" in capsys.readouterr().out
    assert clip_path(out, f"{video_id(video)}-0000").stat().st_mtime_ns == stamp


def test_two_faces_are_masked_and_the_clip_filtered(tmp_path):
    face = rotated(astronaut_face(), 0.0, 256)
    pair = np.ascontiguousarray(np.concatenate([face, face], axis=1))
    video = write_video(tmp_path / "two.mp4", [(i / 30, pair) for i in range(30)], audio=tone(1.0))
    out = tmp_path / "data"
    assert extract(video, "-o", out, "--max-multi-face-ratio", "0.5") == 0
    entry = manifest(out)[f"{video_id(video)}-0000"]
    assert entry["status"] == "skipped" and "several faces" in entry["reason"]
    assert entry["quality"]["multi_face_ratio"] > 0.9
    kept = tmp_path / "kept"
    assert extract(video, "-o", kept, "--max-multi-face-ratio", "1", "--min-face-ratio", "0") == 0
    assert not load_clip(clip_path(kept, f"{video_id(video)}-0000")).mask.any()


def test_audio_starting_after_the_picture_stays_aligned(tmp_path):
    face = rotated(astronaut_face(), 0.0, 256)
    video = write_video(tmp_path / "late.mp4", [(i / 30, face) for i in range(60)], audio=tone(1.5),
                        audio_start=0.5)
    out = tmp_path / "data"
    assert extract(video, "-o", out, "--clip-seconds", "2") == 0
    clip = load_clip(clip_path(out, f"{video_id(video)}-0000"))
    assert clip.audio.size == 2 * SAMPLE_RATE

    def level(a, b):
        return float(np.sqrt(np.mean(clip.audio[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)] ** 2)))

    assert level(0.0, 0.45) < 0.01 and level(0.55, 1.9) > 0.15     # silence until the sound starts at 0.5 s
