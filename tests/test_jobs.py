"""The batch-job mechanism (data/jobs.py) with a toy job kind in real worker processes.

Each toy job writes one text file atomically, or misbehaves as its name says:
"fail-*" raises a job error, "crash-*" kills its own process, "hang-*" never
returns, "slow-*" takes long but reports progress all along.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from talkmotion.data import jobs
from talkmotion.errors import TalkmotionError
from talkmotion.files import atomic_path

pytestmark = pytest.mark.slow   # `make test-fast` leaves these out: see tests/conftest.py

TEXT_SUFFIX = ".txt"


class ToyError(TalkmotionError, ValueError):
    pass


@dataclass
class ToyRunner(jobs.Runner):
    root: str

    def run(self, name: str, progress) -> dict:
        out = Path(self.root) / "out" / f"{name}{TEXT_SUFFIX}"
        if name.startswith("fail"):
            raise ToyError(f"{name}: refused")
        if name.startswith("slow"):
            for step in range(8):
                time.sleep(0.25)
                progress(step)
        with atomic_path(out) as tmp:
            tmp.write_text(f"made {name} in {os.getpid()}")
            if name.startswith("crash"):
                os.kill(os.getpid(), signal.SIGKILL)        # dies mid-write, leaving its temp file
            if name.startswith("hang"):
                time.sleep(120)
        return {"file": out.name, "pid": os.getpid()}


class ToyManifest(jobs.Manifest):
    FORMAT, SECTION = "talkmotion.toy", "made"


class ToyBatch(jobs.Batch):
    name = "toy"

    def __init__(self, root: Path):
        super().__init__(ToyManifest(root / "toy.json"))
        self.root = root
        self.progress: list[tuple[str, int]] = []

    def key(self, name: str) -> str:
        return name

    def remaining(self, name: str) -> str | None:
        if self.manifest.entries.get(name, {}).get("status") == "ok":
            return None
        out = self.root / "out" / f"{name}{TEXT_SUFFIX}"
        if out.is_file() and out.read_text().startswith(f"made {name} "):
            self.manifest.record(name, "ok", save=False, file=out.name, recognised=True)
            return None
        return name

    def output_folders(self) -> list[Path]:
        return [self.root / "out"]

    def owner(self, target: Path) -> str:
        return target.name.removesuffix(TEXT_SUFFIX)

    def on_progress(self, name: str, step: int) -> None:
        self.progress.append((name, step))

    def on_done(self, name: str, payload: dict) -> None:
        self.manifest.record(name, "ok", save=False, **payload)

    def on_failed(self, name: str, reason: str) -> None:
        self.manifest.record(name, "failed", save=False, error=reason)


def run_toy(root: Path, names: list[str], workers: int = 2, timeout: float | None = 3.0):
    batch = ToyBatch(root)
    report = batch.run(names, ToyRunner(str(root)), jobs.PoolConfig(workers=workers, timeout=timeout,
                                                                     progress=False))
    entries = json.loads((root / "toy.json").read_text())["made"]
    return batch, report, entries


def test_misbehaving_jobs_fail_with_their_reason_and_the_rest_is_made(tmp_path):
    names = ["a", "crash-1", "b", "hang-1", "fail-1", "c", "slow-1"]
    batch, report, entries = run_toy(tmp_path, names)
    assert {n: e["status"] for n, e in entries.items()} == {
        "a": "ok", "b": "ok", "c": "ok", "slow-1": "ok", "crash-1": "failed", "hang-1": "failed", "fail-1": "failed"}
    assert "killed by signal 9 (SIGKILL)" in entries["crash-1"]["error"]
    assert "no progress for 3 s (--timeout); worker killed" in entries["hang-1"]["error"]
    assert entries["fail-1"]["error"] == "fail-1: refused"
    # every progress message reached the parent, in order, before the job was done
    assert [s for n, s in batch.progress if n == "slow-1"] == list(range(8))
    assert (report.jobs, report.done, report.failed, report.skipped) == (7, 4, 3, 0)
    assert sorted(report.failures) == sorted(["crash-1: the worker was killed by signal 9 (SIGKILL)",
                                              "hang-1: no progress for 3 s (--timeout); worker killed",
                                              "fail-1: refused"])
    # the dead workers' half-written files are gone; two workers shared the work and dead ones were replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt", "c.txt", "slow-1.txt"]
    assert len({entries[n]["pid"] for n in ("a", "b", "c", "slow-1")}) >= 2


def test_progress_restarts_the_timeout(tmp_path):
    # 8 steps of 0.25 s: 2 s in all, under a 1 s timeout that only a silent job would break
    _, report, entries = run_toy(tmp_path, ["slow-1", "hang-1"], workers=1, timeout=1.0)
    assert entries["slow-1"]["status"] == "ok" and entries["hang-1"]["status"] == "failed"


def test_resume_recognises_unrecorded_outputs_and_removes_stale_temp_files(tmp_path):
    run_toy(tmp_path, ["a", "b", "fail-1"])
    manifest = json.loads((tmp_path / "toy.json").read_text())
    del manifest["made"]["b"]                                   # written, then killed before the manifest was
    (tmp_path / "toy.json").write_text(json.dumps(manifest))
    stale = [tmp_path / ".toy.json.99999.tmp", tmp_path / "out" / ".c.txt.99999.tmp"]
    foreign = tmp_path / "out" / ".other-shard.txt.99999.tmp"   # not one of this batch's jobs: left alone
    for path in (*stale, foreign):
        path.write_text("half")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.txt")}
    _, report, entries = run_toy(tmp_path, ["a", "b", "c", "fail-1"])
    assert entries["b"] == {"status": "ok", "file": "b.txt", "recognised": True}
    assert {p: t for p, t in stamps.items()} == {p.name: p.stat().st_mtime_ns
                                                  for p in (tmp_path / "out").glob("*.txt") if p.name in stamps}
    assert (report.skipped, report.done, report.failed) == (2, 1, 1)    # a, b settled; c made; fail-1 again
    assert not any(p.exists() for p in stale) and foreign.exists()


def test_in_process_mode_runs_the_same_jobs(tmp_path):
    batch, report, entries = run_toy(tmp_path, ["a", "fail-1", "slow-1"], workers=0, timeout=None)
    assert {n: e["status"] for n, e in entries.items()} == {"a": "ok", "fail-1": "failed", "slow-1": "ok"}
    assert entries["a"]["pid"] == os.getpid() and len(batch.progress) == 8


def test_bad_settings_and_manifests_are_refused(tmp_path):
    with pytest.raises(jobs.JobError, match="--workers must be at least 1, got -1"):
        jobs.PoolConfig(workers=-1)
    with pytest.raises(jobs.JobError, match="--stall-timeout must be a positive number of seconds, got 0"):
        jobs.PoolConfig(timeout=0, timeout_flag="--stall-timeout")
    (tmp_path / "toy.json").write_text('{"format": "talkmotion.dataset"}')
    with pytest.raises(jobs.JobError, match="toy.json: not a talkmotion.toy manifest"):
        ToyBatch(tmp_path)
    (tmp_path / "toy.json").write_text('{"format": ')
    with pytest.raises(jobs.JobError, match="toy.json: unreadable manifest"):
        ToyBatch(tmp_path)
