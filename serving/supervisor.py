"""Keep a child server running: restart it with exponential backoff when it dies or never becomes
ready, and never kill one that is (or was made) ready.

The embedded stack supervises Triton this way, so a Triton killed under load comes back by
itself while the gateway stays up (answering UNAVAILABLE meanwhile, then SERVING again). Before
each restart the dead server's whole process group is killed, so no Python-backend stub of the
old server is left behind, and what the dead server leaves on the host (Triton's Python-backend
shared-memory regions) is released.

Convergence:

* a start that does not become ready within the child's start timeout (a model that fails to
  load, say) is stopped and tried again after a delay that doubles with each failure in a row
  (``backoff_s``, 2x, 4x ... up to ``max_backoff_s``), not on a fixed loop; the delay starts
  over only once a start has stayed up and ready for ``healthy_after_s``;
* readiness is watched for the whole life of a start: one that a deploy repairs (loading a
  working version through the model-control API) is ready from then on and is never killed;
* while another process holds the repository's lock (a deploy, rollback or export in progress)
  a start that is not ready yet is given time instead of being killed mid-repair, and a pending
  restart does not wait out its delay: the deploy needs a running server.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import Self

from core.files import LOCK_FILE
from serving.processes import ChildProcess, stop_group

log = logging.getLogger(__name__)


def repository_busy(repository: Path | None) -> bool:
    """Whether another process holds ``repository``'s lock now (``core.files``)."""
    if repository is None or not (Path(repository) / LOCK_FILE).is_file():
        return False
    with open(Path(repository) / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


class Supervisor:
    """``with Supervisor(child):`` starts ``child`` and restarts it whenever it exits or a start
    never becomes ready; see the module docstring for the rules."""

    def __init__(self, child: ChildProcess, *, backoff_s: float = 1.0,
                 max_backoff_s: float = 300.0, healthy_after_s: float = 60.0,
                 start_timeout_s: float | None = None,
                 repository: Path | None = None) -> None:  # fmt: skip
        self.child = child
        self.backoff_s, self.max_backoff_s, self.healthy_after_s = (
            backoff_s, max_backoff_s, healthy_after_s)  # fmt: skip
        config = getattr(child, "config", None)
        self.start_timeout_s = start_timeout_s or getattr(config, "ready_timeout_s", 60.0)
        self.repository = repository or getattr(config, "repository", None)
        self.restarts = 0
        self.starts: list[float] = []  # monotonic time of each restart (tests, benchmarks)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{child.name}",
                                        daemon=True)  # fmt: skip

    def start(self) -> Self:
        self.child.start()
        self._thread.start()
        return self

    def delay(self, failures: int) -> float:
        """Seconds before the next start after ``failures`` failed starts in a row."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1))

    def _watch(self) -> None:
        failures = 0
        ready_since: float | None = time.monotonic()  # the first start waited until ready
        deadline = 0.0
        while not self._stopping.wait(0.2):
            proc = self.child.process
            now = time.monotonic()
            if proc is not None and proc.poll() is None:
                if ready_since is not None:  # ready once: never killed by this supervisor
                    if failures and now - ready_since > self.healthy_after_s:
                        failures = 0  # up long enough: the next failure starts over
                    continue
                if self._is_ready():
                    ready_since = now
                    log.warning("%s is ready (after %d failed starts)", self.child.name, failures)
                    continue
                if now < deadline:
                    continue
                if repository_busy(self.repository):
                    continue  # a deploy may be repairing it: never kill it mid-repair
                failures += 1
                why = self._not_ready_reason()
                log.error("%s not ready %.0f s after its start%s; stopping it and starting again "
                          "in %.0f s", self.child.name, self.start_timeout_s,
                          f" ({why})" if why else "", self.delay(failures))  # fmt: skip
            else:
                code = proc.returncode if proc is not None else None
                if ready_since is None or now - ready_since < self.healthy_after_s:
                    failures += 1
                else:
                    failures = 1
                tail = self.child.log_tail()
                log.error("%s exited (%s); restarting in %.0f s%s", self.child.name, code,
                          self.delay(failures),
                          f"; its log ends: {tail}" if tail else "")  # fmt: skip
            stop_group(proc)  # its helpers too
            self.child.process = None
            self.child.after_exit()  # e.g. Triton's shared-memory regions
            if self._pause(self.delay(failures)):
                return
            ready_since = None
            deadline = time.monotonic() + self.start_timeout_s
            try:
                self.child.launch()
                self.restarts += 1
                self.starts.append(time.monotonic())
                log.warning("%s restarted (restart %d)", self.child.name, self.restarts)
            except Exception as exc:  # the next turn tries again, later
                log.error("restarting %s failed: %s", self.child.name, exc)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` before the next start, cut short when a deploy or rollback holds the
        repository's lock (it needs a running server to repair); True when stopping."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stopping.wait(min(0.5, left)):
                return True
            if repository_busy(self.repository):
                break
        return self._stopping.is_set()

    def _is_ready(self) -> bool:
        try:
            return bool(self.child.is_ready())
        except Exception:  # a probe that fails means "not ready"
            return False

    def _not_ready_reason(self) -> str:
        reason = getattr(self.child, "not_ready_reason", None)
        if reason is None:
            return ""
        with contextlib.suppress(Exception):
            return reason()
        return ""

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
