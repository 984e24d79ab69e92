"""A child process fed jobs over a pipe, for the long batch jobs (corpus synth, extract).

The parent hands it one job at a time (`give`), watches how long it has been busy
(`since`), and can always get rid of it: `stop()` asks politely then kills, `kill()`
does not ask. What the child sends back is the caller's protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict

STOP_GRACE_S = 2.0   # how long a worker may take to exit after being asked


class WorkerProcess:
    def __init__(self, ctx, target, args: tuple = ()):
        """Start `target(conn, *args)` in a daemon process of multiprocessing context `ctx`."""
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()
        self.job = None        # the dataclass job it is working on, None when idle
        self.since = 0.0       # monotonic time it got the job (callers may refresh it on progress)

    def give(self, job) -> None:
        self.job, self.since = job, time.monotonic()
        self.conn.send(asdict(job))

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
