"""Issue 13's command-line findings: batch outputs, tracebacks where a one-line error
belongs, values accepted that should be refused, misleading messages, and what a
newcomer tripped on. Each runs the real command (in this process through cli.main, or
as a subprocess where stderr, a terminal or native code matter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from talkmotion.assets import SAMPLE_SPEECH
from talkmotion.cli import main
from talkmotion.frames import Frames
from talkmotion import labels

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(capsys, *argv: str) -> str:
    """Run `talkmotion ARGV` expecting exit status 2 and one error line; that line."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:         # argparse's own refusal
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    path.write_bytes(SAMPLE_SPEECH.read_bytes())
    return path


# --- item 9: batch outputs ------------------------------------------------------------------

def test_several_inputs_need_an_output_folder(capsys, tmp_path, a_file):
    other = tmp_path / "other.wav"
    other.write_bytes(a_file.read_bytes())
    line = one_line_error(capsys, "animate", str(a_file), str(other), "-o", "-")
    assert "-o -: stdout takes one input's frames; with 2 inputs give an output folder" in line
    line = one_line_error(capsys, "animate", str(a_file), str(other), "-o", str(tmp_path / "out.json"))
    assert "out.json: names a file; with 2 inputs give an output folder" in line
    assert not (tmp_path / "-").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_keep_going_reports_each_bad_input_and_animates_the_rest(capsys, tmp_path, a_file):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really audio")
    good2 = tmp_path / "good2.wav"
    good2.write_bytes(a_file.read_bytes())
    out = tmp_path / "out"
    status = main(["animate", str(a_file), str(bad), str(good2), "-o", f"{out}/", "-q", "--keep-going"])
    err = capsys.readouterr().err
    assert status == 2
    assert f"error: {bad}: not a readable audio or video file" in err
    assert "1 of 3 inputs failed" in err and "Traceback" not in err
    assert (out / "speech.json").exists() and (out / "good2.json").exists() and not (out / "bad.json").exists()
    # without --keep-going the first bad input stops the batch
    out2 = tmp_path / "out2"
    assert main(["animate", str(bad), str(a_file), "-o", f"{out2}/", "-q"]) == 2
    assert not (out2 / "speech.json").exists()


# --- item 12: tracebacks -------------------------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    (["--blinks", "maybe"], "argument --blinks: invalid choice: 'maybe'"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--seed", "-1"], "--seed must be a finite number within 0..4294967295, got -1"),
])
def test_bad_animate_flags_are_one_line_errors(capsys, a_file, flags, expected):
    assert expected in one_line_error(capsys, "animate", str(a_file), "-o", str(a_file.with_suffix(".json")), *flags)


@pytest.mark.parametrize("flags, expected", [
    (["--sample-rate", "0"], "--sample-rate 0: stdin PCM must be 4000..384000 Hz"),
    (["--channels", "0"], "--channels 0: stdin PCM has 1..64 channels"),
])
@pytest.mark.slow
def test_bad_stdin_formats_are_one_line_errors(flags, expected):
    run = subprocess.run([sys.executable, "-m", "talkmotion.cli", "animate", "-", "-o", "-", *flags],
                         input=b"\0" * 3200, capture_output=True, cwd=ROOT, timeout=120)
    err = run.stderr.decode()
    assert run.returncode == 2 and expected in err and "Traceback" not in err


def output_under_a_file(tmp_path, name: str = "x.json") -> tuple[Path, str]:
    blocker = tmp_path / "file.wav"
    blocker.write_bytes(b"in the way")
    return blocker, str(blocker / name)


@pytest.mark.slow
def test_outputs_under_a_file_are_one_line_errors(capsys, tmp_path, a_file, tiny_dataset):
    blocker, under = output_under_a_file(tmp_path)
    expected = f"cannot write there: {blocker} is a file, not a folder"
    assert expected in one_line_error(capsys, "animate", str(a_file), "-o", under)
    assert expected in one_line_error(capsys, "avatar", "-o", under)
    assert expected in one_line_error(capsys, "stream", str(a_file), "-o", under)
    assert expected in one_line_error(capsys, "eval", "--model", "default", str(tiny_dataset), "-o", under)
    frames = tmp_path / "f.json"
    frames.write_text(json.dumps(valid_frames_json()))
    assert expected in one_line_error(capsys, "render", str(frames), "-o", str(blocker / "x.mp4"))
    assert str(blocker) in one_line_error(capsys, "corpus", "synth", "-o", under, "--clips", "1")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"sources": [{"path": str(tiny_dataset)}]}}))
    assert str(blocker) in one_line_error(capsys, "train", str(config), "--steps", "1", "--out", under)


def test_imitate_refuses_an_output_under_a_file_before_tracking(capsys, tmp_path):
    blocker, under = output_under_a_file(tmp_path)
    line = one_line_error(capsys, "imitate", str(tmp_path / "no-such-video.mp4"), "-o", under)
    assert f"{blocker} is a file, not a folder" in line    # not the missing video: checked first


@pytest.mark.parametrize("flags, expected", [
    (["--size", "0"], "--size 0: must be an even number of pixels within 64..4096"),
    (["--size", "100000"], "--size 100000: must be an even number of pixels within 64..4096"),
    (["--window", "-1"], "--window -1.0: must be 0.5..60 seconds"),
])
def test_bad_render_flags_are_one_line_errors(capsys, tmp_path, flags, expected):
    frames = tmp_path / "f.json"
    frames.write_text(json.dumps(valid_frames_json()))
    assert expected in one_line_error(capsys, "render", str(frames), "-o", str(tmp_path / "x.mp4"), *flags)


def valid_frames_json() -> dict:
    return Frames(np.zeros((3, labels.NUM_CHANNELS), np.float32)).to_json()


@pytest.mark.parametrize("mutate, expected", [
    (lambda obj: "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    (lambda obj: "{not json", "not valid JSON"),
    (lambda obj: [1, 2, 3], "not a talkmotion frames file"),
    (lambda obj: {**obj, "frames": [[1, 2], [3]]}, "'frames' must be rows of numbers"),
    (lambda obj: {**obj, "frames": [[0.0] * 5]}, "each frame must have 55 numbers"),
    (lambda obj: {**obj, "frames": [["a"] * 55]}, "'frames' must be rows of numbers"),
    (lambda obj: {**obj, "fps": 0}, "fps must be a number within 1..240"),
    (lambda obj: {**obj, "fps": "30"}, "fps must be a number within 1..240"),
    (lambda obj: {**obj, "blendshapes": 7}, "'blendshapes' must be a list of channel names"),
    (lambda obj: {**obj, "duration": -1}, "duration must be a finite number ≥ 0"),
])
def test_malformed_frames_files_are_one_line_errors(capsys, tmp_path, mutate, expected):
    bad = mutate(valid_frames_json())
    path = tmp_path / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    line = one_line_error(capsys, "render", str(path), "-o", str(tmp_path / "x.mp4"))
    assert f"{path}: " in line and expected in line


def test_non_finite_frames_are_refused(tmp_path):
    """JSON has no NaN, but Python's writer emits it and its reader takes it back."""
    from talkmotion.frames import FramesFileError, read_frames

    obj = valid_frames_json()
    obj["frames"][1][0] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(FramesFileError, match="1 values are NaN or infinite"):
        read_frames(path)


def glb_with(tmp_path, name: str, change) -> Path:
    """The reference avatar's .glb with its glTF JSON changed by `change(doc)`."""
    from talkmotion.preview.avatar import reference_avatar_paths
    from talkmotion.preview.gltf import read_glb

    gltf = read_glb(reference_avatar_paths()[0])
    change(gltf.doc)
    path = tmp_path / name
    path.write_bytes(gltf.to_glb())
    return path


def test_avatar_check_on_deeply_nested_json_is_a_one_line_error(capsys, tmp_path):
    from talkmotion.preview.gltf import GLB_MAGIC, HEADER, CHUNK_HEADER, CHUNK_JSON, GLB_VERSION

    text = ("[" * 50_000 + "]" * 50_000).encode()
    body = CHUNK_HEADER.pack(len(text), CHUNK_JSON) + text
    path = tmp_path / "deep.glb"
    path.write_bytes(HEADER.pack(GLB_MAGIC, GLB_VERSION, HEADER.size + len(body)) + body)
    assert "JSON nested too deeply" in one_line_error(capsys, "avatar", "--check", str(path))


def test_avatar_check_and_render_agree(capsys, tmp_path):
    """A .glb whose meshes are all points: nothing to draw. `--check` passed it; `render` refused."""
    def points_only(doc):
        for mesh in doc["meshes"]:
            for prim in mesh["primitives"]:
                prim["mode"] = 0

    def broken_indices(doc):
        for mesh in doc["meshes"]:
            for prim in mesh["primitives"]:
                prim["indices"] = 10_000

    frames = tmp_path / "f.json"
    frames.write_text(json.dumps(valid_frames_json()))
    for name, change in (("points.glb", points_only), ("broken.glb", broken_indices)):
        avatar = glb_with(tmp_path, name, change)
        checked = one_line_error(capsys, "avatar", "--check", str(avatar))
        rendered = one_line_error(capsys, "render", str(frames), "--avatar", str(avatar), "-o", str(tmp_path / "x.mp4"))
        assert checked.split("error: ", 1)[1] == rendered.split("error: ", 1)[1]
    assert main(["avatar", "--check", str(glb_with(tmp_path, "fine.glb", lambda doc: None))]) == 0


# --- items 13, 14: wrong acceptances and misleading messages --------------------------------

def test_imitate_refuses_max_side_zero(capsys, tmp_path):
    from face_videos import rotating_face_video

    video = rotating_face_video(tmp_path / "face.mp4", seconds=0.5)
    line = one_line_error(capsys, "imitate", str(video), "-o", str(tmp_path / "x.json"), "--max-side", "0")
    assert "--max-side 0: frames must keep at least 128 px" in line and "no face" not in line


def test_an_unknown_format_is_named_with_its_flag(capsys, a_file):
    line = one_line_error(capsys, "animate", str(a_file), "--format", "json,bogus")
    assert "--format 'json,bogus': unknown format bogus; known formats: json, csv" in line
    assert "x:" not in line


# --- what a newcomer tripped on -------------------------------------------------------------

@pytest.mark.slow
def test_eval_takes_dash_o_and_says_where_it_wrote(capsys, tmp_path, tiny_dataset):
    out = tmp_path / "scores"
    assert main(["eval", "--model", "default", str(tiny_dataset), "-o", str(out), "--figure-clips", "0"]) == 0
    assert f"wrote {out / 'report.json'}" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["sources"]["model"]


def test_set_takes_lists_in_toml_syntax(tmp_path, tiny_dataset):
    from talkmotion.config import ConfigError, load
    from talkmotion.train import TrainConfig, parse_sets

    value = f'[{{ path = "{tiny_dataset}", weight = 3.0 }}]'
    cfg = load(TrainConfig, None, parse_sets([f"data.sources={value}"]))
    assert [(s.path, s.weight) for s in cfg.data.sources] == [(str(tiny_dataset), 3.0)]
    json_value = json.dumps([{"path": str(tiny_dataset), "weight": 2}])
    assert load(TrainConfig, None, parse_sets([f"data.sources={json_value}"])).data.sources[0].weight == 2.0
    with pytest.raises(ConfigError, match="--set data.sources: .* is neither JSON nor a TOML value"):
        load(TrainConfig, None, parse_sets(["data.sources=[{ path = "]))


def run_in_terminal(*argv: str) -> str:
    """`talkmotion ARGV` with stdout and stderr on a pseudo-terminal 120 columns wide: what a user sees."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "talkmotion.cli", *argv], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, cwd=ROOT)
    os.close(slave)
    out = b""
    try:
        while select.select([master], [], [], 120)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:    # the other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(60)
    return out.decode("utf-8", "replace")


@pytest.mark.slow
def test_render_and_imitate_show_progress_and_mediapipe_stays_quiet(tmp_path):
    from face_videos import rotating_face_video

    video = rotating_face_video(tmp_path / "face.mp4", seconds=1.0)
    shown = run_in_terminal("imitate", str(video), "-o", str(tmp_path / "face.json"))
    assert "face.mp4:" in shown and "frame/s" in shown                 # a progress bar
    for native in ("W0000", "INFO:", "InitGoogle", "inference_feedback_manager"):
        assert native not in shown, shown
    assert "imitate: 30 frames" in shown
    loud = run_in_terminal("imitate", str(video), "-o", str(tmp_path / "face.json"), "--verbose")
    assert "W0000" in loud or "INFO:" in loud
    shown = run_in_terminal("render", str(tmp_path / "face.json"), "-o", str(tmp_path / "face_preview.mp4"))
    assert "face_preview.mp4:" in shown and "frame/s" in shown
