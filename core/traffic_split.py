"""The traffic split of a canary, shadow or interleave rollout, beside the serving pin in the
repository.

``deploy --canary P`` / ``--shadow P`` / ``--interleave P`` writes ``<repository>/.rollout.json``
(atomically, under the repository lock) and ``promote`` / ``abort`` remove it. Every gateway
already polls the repository's versions once a ``poll_interval_s``; it reads this file at the
same poll, so all gateways (and all their Triton replicas, which share the repository) agree
on one split without talking to each other. The file names the version that serves, the new
version and the percentages::

    {"serving": 3, "canary": 4, "percent": 10.0, "shadow": null, "shadow_percent": 0.0,
     "interleave": null, "interleave_percent": 0.0}

An interleave rollout names its candidate in ``interleave``: ``interleave_percent`` of listeners
get a team-draft interleaving of the serving and the candidate version's lists
(``core/interleaving.py``, ``gateway/rollout.py``); it runs alone (no canary, no shadow beside
it). A file without the interleave keys (an older one) reads as no interleaving.

Which listener sees the canary (or the interleaving) is a stable hash (blake2b, never Python's
salted ``hash()``) of the canary version and the listener's key: a known user's id, or a
history's sorted, distinct artists. So one listener sees one version on every gateway, and
each canary exposes another share of listeners.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import MusicrecError
from core.files import write_atomically

ROLLOUT_FILE = ".rollout.json"
_BUCKETS = 10_000  # percentages to 0.01


class RolloutError(MusicrecError):
    """The rollout file is unreadable or says something impossible; the message names it."""


@dataclass(frozen=True)
class Rollout:
    """A new version beside the serving one: as a canary (``percent`` of listeners answered
    by it), as a shadow (``shadow_percent`` of requests copied to it), or both; or, alone, as
    an interleaving candidate (``interleave_percent`` of listeners get both versions' lists
    merged)."""

    serving: int
    canary: int | None = None
    percent: float = 0.0
    shadow: int | None = None
    shadow_percent: float = 0.0
    interleave: int | None = None
    interleave_percent: float = 0.0

    def __post_init__(self) -> None:
        for name in ("percent", "shadow_percent", "interleave_percent"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise ValueError(f"{name} must be in 0..100, got {value}")
        if self.canary is None and self.shadow is None and self.interleave is None:
            raise ValueError("a rollout needs a canary, a shadow or an interleave version")
        if self.interleave is not None and (self.canary is not None or self.shadow is not None):
            raise ValueError("an interleave rollout runs alone (no canary or shadow beside it)")
        if self.serving in (self.canary, self.shadow, self.interleave):
            raise ValueError(f"version {self.serving} already serves")

    @property
    def new(self) -> int:
        """The version being rolled out (canary, else shadow, else the interleave candidate)."""
        for v in (self.canary, self.shadow, self.interleave):
            if v is not None:
                return v
        raise AssertionError("unreachable: __post_init__ needs one")

    @property
    def versions(self) -> set[int]:
        """Versions that answer only through the split, never as the gateway's own."""
        return {v for v in (self.canary, self.shadow, self.interleave) if v is not None}

    @property
    def kind(self) -> str:
        """``interleave``, ``canary`` or ``shadow`` (the rollout's main role)."""
        if self.interleave is not None:
            return "interleave"
        return "canary" if self.canary is not None else "shadow"


def read(repository: Path) -> Rollout | None:
    """The repository's rollout, or None when none runs."""
    path = Path(repository) / ROLLOUT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RolloutError(f"{path} (the rollout split) is unreadable: {exc}") from exc
    try:
        data = json.loads(text)
        return Rollout(**data)
    except (ValueError, TypeError) as exc:
        raise RolloutError(f"{path} (the rollout split) is unreadable: {exc}; `musicrec deploy "
                           "abort` removes it") from exc  # fmt: skip


def write(repository: Path, rollout: Rollout) -> None:
    """Publish ``rollout`` (callers hold the repository lock)."""
    write_atomically(Path(repository) / ROLLOUT_FILE, json.dumps(asdict(rollout)))


def refuse_running(repository: Path) -> None:
    """Refuse a deploy, rollback or second rollout while a rollout runs."""
    running = read(repository)
    if running is not None:
        raise RolloutError(f"a rollout of version {running.new} runs beside version "
                           f"{running.serving}: `musicrec deploy promote` or `musicrec deploy "
                           "abort` first")  # fmt: skip


def clear(repository: Path) -> None:
    (Path(repository) / ROLLOUT_FILE).unlink(missing_ok=True)


def listener_key(user_id: str | None, artists: Iterable[str] = ()) -> str:
    """What identifies a listener across requests: the user id, or the history's distinct
    artists (ids or names, case-folded), sorted, so their order and play counts do not
    matter."""
    if user_id is not None:
        return "user:" + user_id
    return "history:" + "\x1f".join(sorted({a.casefold() for a in artists}))


def bucket(version: int, key: str) -> float:
    """The listener's place in 0..100 for ``version``'s split (stable across processes)."""
    digest = hashlib.blake2b(f"{version}\x1e{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % _BUCKETS) * 100 / _BUCKETS


def in_canary(rollout: Rollout | None, key: str) -> bool:
    """Whether the listener with ``key`` is sent to the rollout's canary."""
    if rollout is None or rollout.canary is None:
        return False
    return bucket(rollout.canary, key) < rollout.percent


def in_interleave(rollout: Rollout | None, key: str) -> bool:
    """Whether the listener with ``key`` gets the interleaved list (the canary's hash, of the
    candidate version: sticky, and another share of listeners for each candidate)."""
    if rollout is None or rollout.interleave is None:
        return False
    return bucket(rollout.interleave, key) < rollout.interleave_percent
