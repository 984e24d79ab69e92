"""Resumable batch jobs: the one mechanism behind `extract`, `corpus synth` and `fetch-dataset`.

A batch is a list of jobs (a video to extract, a clip to synthesize, a video to
download and cut). The parent process plans them against the batch's manifest,
hands the rest one at a time to worker processes and records what they report:

  * progress: a worker may settle part of a job before it ends (a clip of a
    video); every message also restarts the job's timeout, so a long job that
    keeps moving is never cut off, and one that stops is;
  * done / failed: the job ended; a failure is the job's own (a bad file, a
    sentence the engine refuses) and the worker takes the next job;
  * a worker that dies (a crash, the kernel's OOM killer) or stays silent past
    the timeout (it is then killed) fails its job with that reason; the job's
    half-written files are removed and a fresh worker takes over. The rest of
    the batch goes on either way.

Resume: a rerun skips what the manifest says is settled and recognises finished
files that a killed run wrote but had not recorded yet (the manifest is saved
every few seconds, each output the moment it is complete), so nothing is made
twice; it also removes the temporary files a killed run left behind, its own
only (shards of one dataset run side by side). Every file is written atomically
(files.atomic_path), so a file under its final name is whole.

A job kind supplies two halves: a `Runner` (worker side: `setup` once, then
`run(job, progress)` per job; picklable, as workers are spawned) and a `Batch`
subclass (parent side: what is left of a job, what its messages mean for the
manifest, which temporary files are its own).
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterable

from ..errors import TalkmotionError
from ..files import temp_files, temp_files_of, temp_target, write_json

STOP_GRACE_S = 2.0          # how long an idle worker may take to exit once asked


class JobError(TalkmotionError, RuntimeError):
    """A batch that cannot run at all (bad pool settings, an unreadable manifest, workers that cannot start)."""


# --- the manifest -------------------------------------------------------------------------

class Manifest:
    """A JSON file of every entry a batch settled, {key: {"status": ..., ...fields}}, written atomically.

    Subclasses name the file format and the section that holds the entries
    (`{"format": FORMAT, "version": 1, "info": {...}, SECTION: {...}}`).
    """

    FORMAT: ClassVar[str] = "talkmotion.jobs"
    SECTION: ClassVar[str] = "entries"
    Error: ClassVar[type[Exception]] = JobError

    def __init__(self, path: str | Path, info: dict | None = None):
        self.path = Path(path)
        self.info = dict(info or {})
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            try:
                obj = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise self.Error(f"{self.path}: unreadable manifest ({err})") from err
            if not isinstance(obj, dict) or obj.get("format") != self.FORMAT:
                raise self.Error(f"{self.path}: not a {self.FORMAT} manifest")
            self.entries = obj.get(self.SECTION, {})
            self.info = {**obj.get("info", {}), **self.info}

    def record(self, key: str, status: str, save: bool = True, **fields) -> None:
        self.entries[key] = {"status": status, **fields}
        if save:
            self.save()

    def save(self) -> None:
        write_json(self.path, {"format": self.FORMAT, "version": 1, "info": self.info,
                               self.SECTION: self.entries})


# --- the report ------------------------------------------------------------------------------

@dataclass
class Report:
    jobs: int = 0                   # jobs this run was given
    skipped: int = 0                # of those, settled before this run started
    done: int = 0                   # finished by this run
    failed: int = 0                 # failed in this run (their entries say why)
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)     # one line per failed job
    warnings: list[str] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)       # the job kind's own counts (clips kept, seconds...)

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "skipped": self.skipped, "done": self.done, "failed": self.failed,
                "wall_seconds": round(self.wall_seconds, 3), "failures": self.failures,
                "warnings": self.warnings, **{k: round(v, 3) if isinstance(v, float) else v
                                              for k, v in self.tally.items()}}


# --- the pool ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolConfig:
    workers: int = 1                 # worker processes; 0 runs jobs in this process (no timeout: tests, debugging)
    timeout: float | None = None     # seconds a job may go without a message before its worker is killed
    timeout_flag: str = "--timeout"  # the option that sets it, named in the failure message
    progress: bool = True            # a progress bar on stderr
    save_every_s: float = 2.0        # the manifest is saved at most this often while running, always at the end
    poll_s: float = 0.05             # how often the parent looks at workers that have not spoken

    def __post_init__(self):
        if self.workers < 0:
            raise JobError(f"--workers must be at least 1, got {self.workers}")
        if self.timeout is not None and not self.timeout > 0:
            raise JobError(f"{self.timeout_flag} must be a positive number of seconds, got {self.timeout}")


class Runner:
    """Worker side of a job kind. Instances cross to spawned processes, so they hold only plain data."""

    job_errors: ClassVar[tuple[type[BaseException], ...]] = (TalkmotionError,)   # a job's own failure

    def setup(self) -> None:
        """Once per worker before its first job (heavy imports), so no job's timeout pays for it."""

    def run(self, job, progress: Callable[[Any], None]) -> Any:
        """Do one job; `progress(payload)` settles part of it. Returns the done payload; raises job_errors."""
        raise NotImplementedError


def exit_reason(code: int | None) -> str:
    """How a worker process ended, in words."""
    if code is not None and code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _worker_main(conn, runner: Runner) -> None:
    """A worker process: do the jobs the parent sends until it sends None or goes away."""
    runner.setup()
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:                                 # the parent is gone
            return
        if job is None:
            return
        try:
            conn.send(("done", runner.run(job, lambda payload: conn.send(("progress", payload)))))
        except runner.job_errors as err:
            conn.send(("failed", str(err)))


class _Worker:
    """A worker process and the job it holds; the parent can always get rid of it."""

    def __init__(self, ctx, runner: Runner):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, runner), daemon=True)
        self.process.start()
        child.close()
        self.ready = False     # it has said it is set up
        self.job = None        # the job it is working on, None when idle
        self.since = 0.0       # monotonic time of its last message about that job

    def give(self, job) -> None:
        self.job, self.since = job, time.monotonic()
        self.conn.send(job)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass                # already gone: nothing to ask
        self.process.join(timeout=STOP_GRACE_S)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# --- the batch ------------------------------------------------------------------------------------

class Batch:
    """Parent side of a batch. Subclasses say what a job's key, leftovers, files and messages mean."""

    name: ClassVar[str] = "batch"          # the command, in messages and on the progress bar
    unit: ClassVar[str] = "job"            # what one job is, on the progress bar

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.report = Report()

    # --- what a job kind supplies ---

    def key(self, job) -> Hashable:
        """The job's identity; also what `owner` returns for its files."""
        raise NotImplementedError

    def describe(self, job) -> str:
        """The job in a failure line (a path, a clip id)."""
        return str(self.key(job))

    def remaining(self, job):
        """What is left of the job, None when nothing is.

        Settled in the manifest, or finished on disk though not yet recorded: a
        subclass records such files in the manifest here instead of remaking them.
        """
        return job

    def output_folders(self) -> Iterable[Path]:
        """Folders the jobs write into, searched for temporary files a killed run left."""
        return ()

    def owner(self, target: Path) -> Hashable | None:
        """The key of the job that writes `target`, None when it is none of this batch's."""
        return None

    def pace(self, job) -> None:
        """Called just before a job starts (fetch spaces its downloads here)."""

    def on_progress(self, job, payload) -> None:
        """A worker settled part of a job."""

    def on_done(self, job, payload) -> None:
        raise NotImplementedError

    def on_failed(self, job, reason: str) -> None:
        """Record the failure in the manifest (the report line is kept by `run`)."""
        raise NotImplementedError

    # --- the mechanism ---

    def run(self, jobs: list, runner: Runner, config: PoolConfig) -> Report:
        """Every job not yet settled, by `config.workers` workers; failures are recorded, not raised."""
        started = time.monotonic()
        self.report.jobs = len(jobs)
        todo = self.plan(jobs)
        try:
            if config.workers == 0:
                self._run_inline(todo, runner, config)
            else:
                self._run_pool(todo, runner, config)
        finally:
            self.report.wall_seconds = time.monotonic() - started
            self.manifest.save()
        return self.report

    def plan(self, jobs: list) -> list:
        """The jobs' leftovers, finished files recognised; then the jobs' stale temporary files go."""
        todo = []
        for job in jobs:
            left = self.remaining(job)
            if left is None:
                self.report.skipped += 1
            else:
                todo.append(left)
        for tmp in temp_files_of(self.manifest.path):
            tmp.unlink(missing_ok=True)
        self.remove_temp_files({self.key(job) for job in jobs})
        return todo

    def remove_temp_files(self, keys: set) -> None:
        """Temporary files of these jobs' outputs (a killed process cannot remove its own)."""
        for folder in self.output_folders():
            for tmp in temp_files(folder):
                if self.owner(temp_target(tmp)) in keys:
                    tmp.unlink(missing_ok=True)

    def _settle(self, job, status: str, payload) -> None:
        if status == "done":
            self.report.done += 1
            self.on_done(job, payload)
            return
        what = self.describe(job)
        self.report.failed += 1
        self.report.failures.append(payload if what in payload else f"{what}: {payload}")
        self.on_failed(job, payload)

    def _run_inline(self, todo: list, runner: Runner, config: PoolConfig) -> None:
        runner.setup()
        with self._progress_bar(len(todo), config.progress) as bar:
            last_save = time.monotonic()
            for job in todo:
                self.pace(job)
                try:
                    result = runner.run(job, lambda payload, job=job: self.on_progress(job, payload))
                    self._settle(job, "done", result)
                except runner.job_errors as err:
                    self._settle(job, "failed", str(err))
                bar.update(1)
                last_save = self._save_now_and_then(last_save, config)

    def _run_pool(self, todo: list, runner: Runner, config: PoolConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = list(reversed(todo))
        pool = [_Worker(ctx, runner) for _ in range(min(config.workers, len(todo)))]
        with self._progress_bar(len(todo), config.progress) as bar:
            last_save = time.monotonic()
            try:
                while queue or any(w.job is not None for w in pool):
                    for w in pool:
                        if w.ready and w.job is None and queue:
                            job = queue.pop()
                            self.pace(job)
                            w.give(job)
                    waiting = [w for w in pool if w.job is not None or not w.ready]
                    wait([w.conn for w in waiting] + [w.process.sentinel for w in waiting], timeout=config.poll_s)
                    for k, w in enumerate(pool):
                        settled = self._serve(w, config)
                        bar.update(settled)
                        if queue and w.ready and w.job is None and not w.process.is_alive():
                            pool[k] = _Worker(ctx, runner)     # it died and its job is settled: replace it
                    last_save = self._save_now_and_then(last_save, config)
            finally:
                for w in pool:
                    w.stop()

    def _serve(self, w: _Worker, config: PoolConfig) -> int:
        """Take a worker's messages; fail its job if it died or went silent. → jobs settled (0 or 1)."""
        if not w.ready:
            return self._start_up(w)
        while w.job is not None and w.conn.poll():
            try:
                kind, payload = w.conn.recv()
            except (EOFError, OSError):                  # it died: the pipe closed
                break
            w.since = time.monotonic()
            if kind == "progress":
                self.on_progress(w.job, payload)
            else:
                job, w.job = w.job, None
                self._settle(job, kind, payload)
                return 1
        if w.job is None:
            return 0
        if not w.process.is_alive():
            reason = f"the worker {exit_reason(w.process.exitcode)}"
        elif config.timeout is not None and time.monotonic() - w.since > config.timeout:
            w.kill()
            reason = f"no progress for {config.timeout:g} s ({config.timeout_flag}); worker killed"
        else:
            return 0
        job, w.job = w.job, None
        self.remove_temp_files({self.key(job)})
        self._settle(job, "failed", reason)
        return 1

    def _start_up(self, w: _Worker) -> int:
        """Mark a worker ready once it says so; one that dies first stops the batch."""
        if w.conn.poll():
            try:
                w.ready = w.conn.recv()[0] == "ready"
            except (EOFError, OSError):
                pass
        if not w.ready and not w.process.is_alive():
            raise JobError(f"a {self.name} worker failed to start: it {exit_reason(w.process.exitcode)}")
        return 0

    def _save_now_and_then(self, last_save: float, config: PoolConfig) -> float:
        if time.monotonic() - last_save < config.save_every_s:
            return last_save
        self.manifest.save()
        return time.monotonic()

    def _progress_bar(self, total: int, shown: bool):
        from tqdm import tqdm

        return tqdm(total=total, unit=self.unit, disable=not shown, file=sys.stderr, desc=self.name)
