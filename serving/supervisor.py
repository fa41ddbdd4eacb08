"""Keep a child server running: restart it with bounded backoff when it dies.

The embedded stack supervises Triton this way, so a Triton killed under load comes back by
itself while the gateway stays up (answering UNAVAILABLE meanwhile, then SERVING again). Before
each restart the dead server's whole process group is killed, so no Python-backend stub of the
old server is left behind, and what the dead server leaves on the host (Triton's Python-backend
shared-memory regions) is released.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Self

from serving.processes import ChildProcess, stop_group

log = logging.getLogger(__name__)


class Supervisor:
    """``with Supervisor(child):`` starts ``child`` and restarts it whenever it exits."""

    def __init__(self, child: ChildProcess, *, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, healthy_after_s: float = 60.0) -> None:  # fmt: skip
        self.child = child
        self.backoff_s, self.max_backoff_s, self.healthy_after_s = (
            backoff_s, max_backoff_s, healthy_after_s)  # fmt: skip
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{child.name}",
                                        daemon=True)  # fmt: skip

    def start(self) -> Self:
        self.child.start()
        self._thread.start()
        return self

    def _watch(self) -> None:
        delay, started = self.backoff_s, time.monotonic()
        while not self._stopping.wait(0.2):
            proc = self.child.process
            if proc is not None and proc.poll() is None:
                if time.monotonic() - started > self.healthy_after_s:
                    delay = self.backoff_s  # up long enough: the next failure starts over
                continue
            code = proc.returncode if proc is not None else None
            log.error("%s exited (%s); restarting in %.0f s", self.child.name, code, delay)
            stop_group(proc)  # its helpers too
            self.child.process = None
            self.child.after_exit()  # e.g. Triton's shared-memory regions
            if self._stopping.wait(delay):
                return
            try:
                self.child.start()
                self.restarts += 1
                started = time.monotonic()
                log.warning("%s restarted (restart %d)", self.child.name, self.restarts)
            except Exception as exc:  # the next turn tries again, later
                log.error("restarting %s failed: %s", self.child.name, exc)
            delay = min(self.max_backoff_s, delay * 2)

    def stop(self) -> None:
        """Stop watching, then stop the child and its whole group."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.child.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
