"""Several Triton replicas behind one gateway, tracked one by one.

gRPC's ``round_robin`` would spread calls, but it cannot know which replica has which model
version ready, and the gateway must answer with a version only from a replica that serves it.
So each replica gets its own client (:class:`~gateway.inference.Inference`), and every poll
asks each one which versions it has ready. The gateway serves the newest version ready on every
replica that answers (a deploy reaches them all before the gateway switches); a call goes to the
next replica, in turn, that had the call's version ready at the last poll, and a call that meets
UNAVAILABLE there is retried once on another such replica. A replica that fails is left out
until a poll finds it again. A ``dns:///`` target is resolved again at each poll, so replicas
behind a headless Service are followed as they come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from core.contract import SERVED_MODELS
from core.endpoints import resolve_endpoints
from gateway.errors import GatewayError, Unavailable
from gateway.inference import Inference, InferResult, Tensor, open_channel

log = logging.getLogger(__name__)


@dataclass
class Replica:
    """One Triton server: its client, whether it answered the last poll, what it has ready."""

    inference: Inference
    up: bool = False
    ready: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.inference.url


class ReplicaSet:
    """The replicas a target names, with :class:`Inference`'s interface (infer, is_ready,
    ready_versions, ready_models) spread over them."""

    def __init__(self, target: str, *, on_poll: Callable[[int, int], None] = lambda up, n: None,
                 connect: Callable[[str], grpc.aio.Channel] = open_channel) -> None:  # fmt: skip
        self.target = target
        self.url = target  # for messages, as Inference.url
        self.replicas: dict[str, Replica] = {}
        self._connect = connect
        self._on_poll = on_poll
        self._turn = itertools.count()
        self.not_ready: tuple[str, ...] = ()  # as Inference.not_ready, over the replicas up

    async def _follow_target(self) -> None:
        """Open a client for each replica the target names now; close the ones it no longer
        names. A DNS failure keeps the replicas known so far."""
        try:
            urls = await asyncio.to_thread(resolve_endpoints, self.target)
        except OSError as exc:
            log.warning("cannot resolve %s (%s); keeping %d known replicas", self.target, exc,
                        len(self.replicas))  # fmt: skip
            return
        for url in urls:
            if url not in self.replicas:
                self.replicas[url] = Replica(Inference(self._connect(url), url))
        for url in set(self.replicas) - set(urls):
            gone = self.replicas.pop(url)
            with contextlib.suppress(Exception):
                await gone.inference.close()

    async def ready_versions(self, repository: Path, timeout_s: float) -> set[int]:
        """Versions whose every served model is ready on every replica that answers."""
        ready = await self.ready_models(repository, timeout_s)
        return {v for v, models in ready.items() if models == set(SERVED_MODELS)}

    async def ready_models(self, repository: Path, timeout_s: float) -> dict[int, frozenset[str]]:
        """Per version, the models ready on every replica that answers; UNAVAILABLE when none
        answers."""
        await self._follow_target()
        replicas = list(self.replicas.values())
        answers = await asyncio.gather(
            *(r.inference.ready_models(repository, timeout_s) for r in replicas),
            return_exceptions=True,
        )
        by_replica: list[dict[int, frozenset[str]]] = []
        for replica, answer in zip(replicas, answers, strict=True):
            replica.up = not isinstance(answer, BaseException)
            if isinstance(answer, BaseException) and not isinstance(answer, GatewayError):
                raise answer
            found = {} if isinstance(answer, BaseException) else answer
            replica.ready = {v for v, models in found.items() if models}
            if replica.up:
                by_replica.append(found)
        up = [r for r in replicas if r.up]
        self.not_ready = tuple(sorted({m for r in up for m in r.inference.not_ready}))
        self._on_poll(len(up), len(replicas))
        if not up:
            raise Unavailable(f"no Triton replica of {self.target} answers")
        versions = set.intersection(*(set(found) for found in by_replica))
        return {v: frozenset.intersection(*(found[v] for found in by_replica)) for v in versions}

    async def is_ready(self, version: int, timeout_s: float) -> bool:
        """Whether some replica still serves ``version`` (true mid-swap)."""
        for replica in self._candidates(version):
            with contextlib.suppress(GatewayError):
                if await replica.inference.is_ready(version, timeout_s):
                    return True
        return False

    def _candidates(self, version: int) -> list[Replica]:
        """Replicas to try for ``version``, in turn: those that had it ready, then (only if
        none did) every replica that answered, then any."""
        replicas = list(self.replicas.values())
        if not replicas:
            return []
        start = next(self._turn) % len(replicas)
        turned = replicas[start:] + replicas[:start]
        for keep in (lambda r: r.up and version in r.ready, lambda r: r.up, lambda r: True):
            chosen = [r for r in turned if keep(r)]
            if chosen:
                return chosen
        return []

    async def infer(self, model: str, version: int, inputs: list[Tensor],
                    timeout_s: float) -> InferResult:  # fmt: skip
        """One inference on a replica that serves ``version``; on UNAVAILABLE, once more on
        another."""
        candidates = self._candidates(version)
        if not candidates:
            raise Unavailable(f"no Triton replica of {self.target} is known")
        for attempt, replica in enumerate(candidates[:2]):
            try:
                return await replica.inference.infer(model, version, inputs, timeout_s)
            except Unavailable:
                replica.up = False  # until a poll finds it again
                if attempt == 1 or len(candidates) == 1:
                    raise
                log.warning("Triton replica %s unavailable; retrying on %s", replica.url,
                            candidates[1].url)  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        for replica in self.replicas.values():
            with contextlib.suppress(Exception):
                await replica.inference.close()
