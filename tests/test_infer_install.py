"""The inference-only install (`pip install talkmotion[infer]`, no torch) animates, streams and serves.

scripts/setup.sh builds it as .venv-infer beside .venv, from this working tree; each test runs
the real `talkmotion` command of that venv in its own process.
"""

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from talkmotion.assets import SAMPLE_SPEECH
from talkmotion.frames import read_frames

VENV = Path(__file__).resolve().parents[1] / ".venv-infer"


@pytest.fixture(scope="module")
def infer():
    exe = VENV / "bin" / "talkmotion"
    assert exe.is_file(), f"{VENV} is missing: `make setup` (scripts/setup.sh) builds it"
    return exe


def test_it_has_no_torch(infer):
    proc = subprocess.run([str(VENV / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr


def test_it_animates_the_default_model_as_the_full_install_does(infer, tmp_path):
    from talkmotion.animate import animate_file
    from talkmotion.runtime import load_model

    proc = subprocess.run([str(infer), "animate", str(SAMPLE_SPEECH), "-q", "-o", str(tmp_path / "a.json"),
                           "-o", str(tmp_path / "a.csv")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    here = animate_file(load_model(), SAMPLE_SPEECH)
    np.testing.assert_allclose(read_frames(tmp_path / "a.json").values, here.values, atol=1e-5)   # JSON rounding
    assert (tmp_path / "a.csv").stat().st_size > 10_000


def test_it_streams_and_refuses_what_needs_torch_in_one_line(infer, tmp_path):
    proc = subprocess.run([str(infer), "stream", str(SAMPLE_SPEECH), "--fast", "-o", str(tmp_path / "s.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_frames(tmp_path / "s.json")) > 30
    for args in (["train", "configs/default.toml"], ["animate", str(SAMPLE_SPEECH), "--backend", "torch"]):
        proc = subprocess.run([str(infer), *args, "-o", str(tmp_path / "x.json")] if args[0] == "animate"
                              else [str(infer), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and "torch" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_it_serves(infer, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(infer), "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        info = None
        for _ in range(100):                      # up to ~20 s for the server to listen
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                time.sleep(0.2)
        assert info is not None and info["model"].startswith("talkmotion-default")
    finally:
        server.terminate()
        server.wait(timeout=10)
