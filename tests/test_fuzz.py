"""A bounded fuzz pass over the decoders and loaders (issue 13): WAV, MP3, frames JSON,
.glb, .vrm and config files, mutated and random, through the functions the commands use.

Every case must end in a clean result or a TalkmotionError with a one-line message: no
traceback, no crash of the process, no hang. Each target runs in a process of its own
(tests/fuzz_worker.py), watched from here: a case that runs past CASE_TIMEOUT_S or kills
its process is named with its seed, so it reruns exactly. TALKMOTION_FUZZ_SECONDS sets each
target's time budget (default below; CI keeps it short).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "fuzz_worker.py"
TARGETS = ("wav", "mp3", "frames", "glb", "vrm", "config")
SEED = 13
BUDGET_S = float(os.environ.get("TALKMOTION_FUZZ_SECONDS", "8"))    # per target
MAX_CASES = 2000
# Slow: a budget of seconds per target, plus each worker's start-up.
pytestmark = pytest.mark.slow
MIN_CASES = 10               # fewer means the machine is too slow for the pass to mean anything
CASE_TIMEOUT_S = 60.0        # one case; a decode of the 60 s the loader allows takes a second
START_TIMEOUT_S = 120.0      # imports and the seed files


def run_target(target: str, folder: Path) -> tuple[int, float, list[dict]]:
    """Run one target's worker; (cases, seconds, findings). Hangs and crashes are findings too."""
    proc = subprocess.Popen([sys.executable, str(WORKER), target, str(SEED), str(MAX_CASES), str(BUDGET_S),
                             str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    findings, case, wait = [], None, START_TIMEOUT_S
    try:
        while True:
            if not selector.select(timeout=wait):
                proc.kill()
                findings.append({"case": case, "problem": f"no answer within {wait:g} s (a hang)"})
                return 0, 0.0, findings
            line = proc.stdout.readline()
            if not line:                                   # the worker ended
                break
            if line.startswith("case "):
                case, wait = int(line.split()[1]), CASE_TIMEOUT_S
            elif line.startswith("done "):
                _, cases, seconds = line.split()
                proc.wait(30)
                return int(cases), float(seconds), findings
            elif line.startswith("{"):
                findings.append(json.loads(line))
        proc.wait(30)
        findings.append({"case": case, "problem": f"the process died (exit status {proc.returncode})",
                         "message": proc.stderr.read()[-500:]})
        return 0, 0.0, findings
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        selector.close()


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_loader(target, tmp_path):
    cases, seconds, findings = run_target(target, tmp_path)
    print(f"fuzz {target}: {cases} cases in {seconds:.1f} s, {len(findings)} findings (seed {SEED})")
    assert not findings, f"{target} (seed {SEED}): " + "; ".join(json.dumps(f) for f in findings[:5])
    assert cases >= MIN_CASES
