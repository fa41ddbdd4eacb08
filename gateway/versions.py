"""Follow the model version Triton serves and keep that version's artifacts loaded.

The tracker asks Triton (explicit model control) which versions are READY in every served model,
loads each one's vocabulary and known plays off the event loop, and serves the newest by swapping
one immutable :class:`ModelVersion` reference, so each request sees one whole version. During a
deploy both versions are ready, so a switch (or a rollback, once the newer one is unloaded)
needs no loading. A version whose artifacts cannot be read is reported once and skipped; the
previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from core.similarity import ArrayBackend
from gateway.artifacts import ArtifactError, ModelVersion
from gateway.errors import GatewayError, Unavailable
from gateway.inference import Inference

log = logging.getLogger(__name__)


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
    ) -> None:
        self.triton = triton
        self.repository = Path(repository)
        self.backend = backend
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.current: ModelVersion | None = None
        self.triton_up = False
        self._broken: set[int] = set()
        self._loaded: dict[int, ModelVersion] = {}
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.triton_up and self.current is not None

    def serving(self) -> ModelVersion:
        """The version to answer with; :class:`Unavailable` when there is none."""
        if not self.triton_up:
            raise Unavailable(f"Triton at {self.triton.url} is not reachable")
        if self.current is None:
            raise Unavailable("no model version is ready in Triton yet")
        return self.current

    async def refresh(self) -> None:
        """Ask Triton once; load newly ready versions and serve the newest of them."""
        async with self._lock:
            before = (self.triton_up, self.current.version if self.current else None)
            try:
                ready = await self.triton.ready_versions(self.timeout_s)
                self.triton_up = True
            except GatewayError as exc:
                if self.triton_up:
                    log.warning("Triton unreachable: %s", exc)
                self.triton_up = False
            else:
                await self._follow(ready)
            if before != (self.triton_up, self.current.version if self.current else None):
                self.on_change(self)

    async def _follow(self, ready: set[int]) -> None:
        if not ready:  # mid-swap (the models on different versions) or nothing loaded
            if self.current and not await self._still_ready():
                self.current = None
            return
        for version in sorted(ready - self._loaded.keys() - self._broken):
            await self._load(version)  # preloaded, so a swap or rollback switches at once
        self._loaded = {v: m for v, m in self._loaded.items() if v in ready}
        if self._loaded:
            self.current = self._loaded[max(self._loaded)]

    async def _still_ready(self) -> bool:
        try:
            return await self.triton.is_ready(self.current.version, self.timeout_s)
        except GatewayError:
            return False

    async def _load(self, version: int) -> None:
        try:
            loaded = await asyncio.to_thread(
                ModelVersion.load, self.repository, version, self.backend
            )
        except ArtifactError as exc:
            log.error("cannot serve version %d, keeping the previous one: %s", version, exc)
            self._broken.add(version)
            return
        log.info("loaded model version %d (%d users, %d artists)", version,
                 loaded.vocab.n_users, loaded.n_artists)  # fmt: skip
        self._loaded[version] = loaded

    async def run(self, interval_s: float) -> None:
        """Refresh forever (cancel the task to stop)."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
