"""Follow the model version Triton serves and keep that version's artifacts loaded.

The tracker asks Triton (explicit model control) which versions are READY in every served model,
loads each one's vocabulary and known plays off the event loop, and serves the newest loaded one
by swapping one immutable :class:`ModelVersion` reference, so each request sees one whole
version. During a deploy both versions are ready, so a switch (or a rollback, once the newer one
is unloaded) needs no loading. A version the repository's rollout file names (a canary or a
shadow, ``core/traffic_split.py``, read at each poll) is loaded too but never served as the
gateway's own; ``gateway/rollout.py`` routes a share of requests to it. While that file is
unreadable (corrupt, half-written), the gateway fails safe: it keeps the version it serves (at
a start, the lowest version ready in Triton, since a rollout's version is loaded beside the one
that served before it), routes nobody to a canary or shadow, and says so (``rollout_error``).

Readiness is per model: a version serves the gateway's default mode when that mode's models
are ready in it, and each other mode only while its own models are (:meth:`check_mode`), so a
broken model outside the default mode never stops the default, and every gateway names it
the same way (from the same poll of Triton).

A version whose artifacts cannot be loaded, for any reason (a truncated file, a wrong JSON
shape, MemoryError, a GPU out of memory), is logged with its cause, counted, and retried with
backoff; the newest loadable version keeps serving. When Triton serves no version the gateway
could load, there is nothing to answer with: health says NOT_SERVING and requests get
UNAVAILABLE with the reason. No failure of one poll ends the polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import traffic_split
from core.modes import DEFAULT_MODE, MODES
from core.similarity import ArrayBackend
from gateway.artifacts import ModelVersion
from gateway.errors import GatewayError, Unavailable
from gateway.inference import Inference

log = logging.getLogger(__name__)
MODES_MODELS = tuple(dict.fromkeys(m for mode in MODES.values() for m in mode.models))


@dataclass
class LoadFailure:
    """Why a version could not be loaded, and when to try again."""

    attempts: int
    cause: str
    retry_at: float


class VersionTracker:
    """The served :class:`ModelVersion` (or None) and whether Triton answers."""

    def __init__(
        self,
        triton: Inference,
        repository: Path,
        backend: ArrayBackend,
        *,
        timeout_s: float = 2.0,
        on_change: Callable[[VersionTracker], None] = lambda _: None,
        on_load_error: Callable[[int, BaseException], None] = lambda *_: None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        default_mode: str = DEFAULT_MODE,
        allow_unverified: bool = False,
        on_poll: Callable[[VersionTracker], None] = lambda _: None,
    ) -> None:
        self.triton = triton
        self.repository = Path(repository)
        self.backend = backend
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.on_load_error = on_load_error
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.default_mode = default_mode
        self.allow_unverified = allow_unverified  # load versions whose manifest has no checksums
        self.on_poll = on_poll  # after every poll (the rollout gauges)
        self.ready_models: dict[int, frozenset[str]] = {}  # per version, at the last poll
        self.rollout_error: str | None = None  # why .rollout.json is unreadable (fail safe)
        self.current: ModelVersion | None = None
        self.triton_up = False
        self.reason = "no model version is ready in Triton yet"  # why current is None
        self.failures: dict[int, LoadFailure] = {}
        # The repository's canary/shadow split (core/traffic_split.py), read at every poll: its new
        # version is loaded like any ready version but never served as the gateway's own.
        self.rollout: traffic_split.Rollout | None = None
        self._loaded: dict[int, ModelVersion] = {}
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.triton_up and self.current is not None

    def serving(self) -> ModelVersion:
        """The version to answer with; :class:`Unavailable` (with the reason) when none."""
        if not self.triton_up:
            raise Unavailable(f"Triton at {self.triton.url} is not reachable")
        if self.current is None:
            raise Unavailable(self.reason)
        return self.current

    def _state(self) -> tuple:
        """What health reports: a change of it calls ``on_change``."""
        current = self.current.version if self.current else None
        return (self.triton_up, current, self.rollout_error, self.not_ready(current))

    def not_ready(self, version: int | None) -> tuple[str, ...]:
        """The served models not ready in ``version`` at the last poll, as health names them."""
        if version is None or version not in self.ready_models:
            return ()
        missing = set(MODES_MODELS) - self.ready_models[version]
        return tuple(f"{m} version {version}" for m in sorted(missing))

    def check_mode(self, version: int, mode: str) -> None:
        """:class:`Unavailable` naming the models of ``mode`` not ready in ``version``."""
        ready = self.ready_models.get(version)
        if ready is None:
            return  # not polled yet (or a version Triton no longer lists): the call says
        missing = [m for m in MODES[mode].models if m not in ready]
        if missing:
            names = ", ".join(f"{m} version {version}" for m in missing)
            raise Unavailable(f"scoring mode {mode} is not available: {names} is not ready in "
                              "Triton (see Triton's log)")  # fmt: skip

    async def refresh(self) -> None:
        """Ask Triton once; load newly ready versions and serve the newest loaded one."""
        async with self._lock:
            before = self._state()
            try:
                ready_models = await self.triton.ready_models(self.repository, self.timeout_s)
                self.triton_up = True
            except GatewayError as exc:
                if self.triton_up:
                    log.warning("Triton unreachable: %s", exc)
                self.triton_up = False
            else:
                self.ready_models = ready_models
                needed = set(MODES[self.default_mode].models)
                self._read_rollout()
                await self._follow({v for v, ready in ready_models.items() if needed <= ready})
            if before != self._state():
                self.on_change(self)
            self.on_poll(self)

    async def _follow(self, ready: set[int]) -> None:
        """Serve the newest of the gateway's own versions among ``ready`` (those whose default
        mode's models are ready)."""
        if not ready:  # mid-swap past the default mode's models, or nothing loaded
            self.current = None
            self.reason = "no model version is ready in Triton"
            failed = getattr(self.triton, "not_ready", ())  # a model that failed to load
            if failed:
                self.reason += f" (not ready: {', '.join(failed)}; see Triton's log)"
            return
        now = time.monotonic()
        for version in sorted(ready - self._loaded.keys()):
            failure = self.failures.get(version)
            if failure is None or failure.retry_at <= now:
                await self._load(version)  # preloaded, so a swap or rollback switches at once
        self._loaded = {v: m for v, m in self._loaded.items() if v in ready}
        self.failures = {v: f for v, f in self.failures.items() if v in ready}
        newest = max(self._own(ready), default=None)
        self.current = self._loaded[newest] if newest is not None else None
        if self.current is None:
            causes = "; ".join(f"version {v}: {f.cause}" for v, f in sorted(self.failures.items()))
            self.reason = f"Triton serves no version the gateway can load ({causes})"
            if self.rollout_error:
                self.reason += f"; {self.rollout_error}"

    def _own(self, ready: set[int]) -> set[int]:
        """The loaded versions the gateway may serve as its own. A rollout's versions never,
        unless alone; while the split is unreadable, only the version served so far (at a
        start: the lowest ready, the one a rollout's version was loaded beside)."""
        if self.rollout_error is not None:
            served = self.current.version if self.current else None
            return {served if served in ready else min(ready)} & set(self._loaded)
        own = set(self._loaded) - (self.rollout.versions if self.rollout else set())
        return own or set(self._loaded)

    def loaded(self, version: int) -> ModelVersion | None:
        """``version``'s artifacts if it is ready in Triton and loaded (a canary, a shadow)."""
        return self._loaded.get(version)

    def _read_rollout(self) -> None:
        """Read the split; an unreadable one fails safe (see the module) until it is fixed."""
        try:
            rollout = traffic_split.read(self.repository)
        except traffic_split.RolloutError as exc:
            if str(exc) != self.rollout_error:
                log.error("%s; serving one version, routing nobody to a canary or shadow", exc)
            self.rollout_error, self.rollout = str(exc), None
            return
        if self.rollout_error is not None:
            log.info("the rollout split is readable again")
        self.rollout_error = None
        if rollout != self.rollout:
            log.info("rollout split: %s", rollout)
        self.rollout = rollout

    async def _load(self, version: int) -> None:
        try:
            loaded = await asyncio.to_thread(ModelVersion.load, self.repository, version,
                                             self.backend, self.allow_unverified)  # fmt: skip
        except Exception as exc:  # any cause; the next poll (after a backoff) tries again
            self._failed(version, exc)
            return
        if version in self.failures:
            log.info("model version %d loads now", version)
        self.failures.pop(version, None)
        log.info("loaded model version %d (%d users, %d artists)", version,
                 loaded.vocab.n_users, loaded.n_artists)  # fmt: skip
        self._loaded[version] = loaded

    def _failed(self, version: int, exc: Exception) -> None:
        attempts = self.failures[version].attempts + 1 if version in self.failures else 1
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
        cause = f"{type(exc).__name__}: {exc}"
        self.failures[version] = LoadFailure(attempts, cause, time.monotonic() + delay)
        log.error("cannot load model version %d (attempt %d, next in %.0f s): %s",
                  version, attempts, delay, cause,
                  extra={"version": version, "attempt": attempts})  # fmt: skip
        self.on_load_error(version, exc)

    async def run(self, interval_s: float) -> None:
        """Refresh forever (cancel the task to stop); a failed poll is logged, never fatal."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("version poll failed; polling again in %.1f s", interval_s)
            await asyncio.sleep(interval_s)
