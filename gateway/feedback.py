"""What the gateway served under each recommendation id, and feedback credited to it.

Every ``Recommend`` answer gets a ``recommendation_id`` (16 random bytes, hex) and its list is
kept in an :class:`ImpressionStore`: at most ``feedback_max_entries`` lists for at most
``feedback_ttl_s`` each. ``Feedback`` looks the id up and credits each event to the version
(and the interleaving team) that placed the artist; no model call, a few dictionary operations
on the event loop.

Public API, for whatever builds an answer (the interleaving gives each position its own
version and team)::

    store = ImpressionStore(max_entries=100_000, ttl_s=3600)
    store.put(rec_id, version, artist_ids, teams=None, versions=None)  # -> Impression
    store.get(rec_id)  # -> Impression; UnknownRecommendation / ExpiredRecommendation

Online metrics, per version (``gateway/metrics.py``): impressions served with an id, hits
(impressions with a PLAYED artist, counted once, at the first play), feedback events by
action, and the reciprocal rank of each impression's first played artist (a summary:
``..._sum / impressions`` is the mean reciprocal rank, unplayed lists counting 0). Events that
cannot be credited are counted by reason in ``musicrec_gateway_feedback_unattributed_total``.

**Interleaving.** An interleaved list (``gateway/rollout.py``: each position placed by the
serving or the candidate team) gives ONE outcome, decided at the first Feedback call that
carries a PLAYED event: ``core.interleaving.credit`` over the positions that call plays (the
team with more played positions wins; as many is a tie), counted in
``musicrec_gateway_interleave_outcomes_total{candidate_version,outcome}``; later calls on the
same id change nothing. Why one outcome, at that call, is valid under H0 (identical rankers):
the draft's coin makes each position's team a fair coin whatever the listener does, and the
decision moment (the first call with a play) depends on what was played, never on the team
labels, so candidate and serving wins are exchangeable and the candidate wins half of the
decisive impressions: the null ``interleaving_test`` tests. Counting every later call again
would weigh a listener who sends many calls more, and waiting for "all" feedback has no end.
An interleaved list counts as an impression (and a hit) of the answering serving version.

The store lives in the gateway process: a ``Feedback`` must reach the gateway (with
``--workers``, the worker) that answered, which one client channel does.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.interleaving import credit as interleave_credit
from core.vocabulary import name_key
from gateway.errors import InvalidArgument, NotFound
from gateway.metrics import GatewayMetrics

ACTIONS = ("played", "skipped", "saved", "dismissed")
PLAYED = "played"
MAX_EVENTS = 500


class UnknownRecommendation(NotFound):
    """An id this gateway never served, or whose list it dropped (the store was full)."""

    reason = "unknown_id"


class ExpiredRecommendation(NotFound):
    """An id whose list outlived the store's TTL."""

    reason = "expired"


def new_recommendation_id() -> str:
    """32 hex digits from the OS's CSPRNG: nobody can guess another listener's id."""
    return secrets.token_hex(16)


@dataclass(slots=True)
class Impression:
    """One served list: the answering ``version``, each position's artist id, the version and
    team that placed it, the listener's key (event log), and whether it was played yet; an
    interleaved list also its ``candidate`` version and whether its outcome was counted."""

    rec_id: str
    version: int
    artists: tuple[str, ...]
    versions: tuple[int, ...]
    teams: tuple[str, ...]
    created: float
    listener: str = ""
    names: tuple[str, ...] = ()
    played: bool = False
    candidate: int | None = None  # interleaved with this candidate version
    judged: bool = False  # the interleaving outcome was counted
    _name_keys: dict[str, int] | None = field(default=None, repr=False)

    def position(self, artist_id: str | None = None, name: str | None = None) -> int | None:
        """The 0-based position of an artist given by id or by name (case-insensitive)."""
        if artist_id is not None:
            try:
                return self.artists.index(artist_id)
            except ValueError:
                return None
        if self._name_keys is None:  # built on the first lookup by name only
            self._name_keys = {}
            for i, n in enumerate(self.names):
                self._name_keys.setdefault(name_key(n), i)
        return self._name_keys.get(name_key(name or ""))


class ImpressionStore:
    """Served lists by recommendation id, bounded by count and age.

    Entries are kept in insertion order; every entry lives ``ttl_s``, so the oldest is always
    first: :meth:`put` drops expired entries from the front and, past ``max_entries``, the
    oldest (each O(1) amortised). :meth:`get` of an expired entry raises
    :class:`ExpiredRecommendation`; of one never stored or already dropped,
    :class:`UnknownRecommendation`. ``clock``: seconds, monotonic (tests pass their own)."""

    def __init__(self, max_entries: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries, self.ttl_s, self.clock = max_entries, ttl_s, clock
        self._entries: OrderedDict[str, Impression] = OrderedDict()
        self.evicted = 0  # dropped for room (not expired)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, rec_id: str, version: int, artists: Sequence[str],
            teams: Sequence[str] | None = None, versions: Sequence[int] | None = None, *,
            listener: str = "", names: Sequence[str] = (),
            candidate: int | None = None) -> Impression:  # fmt: skip
        """Keep a served list: ``artists`` are ids, best first; ``teams`` (interleaving: the
        team that placed each position, ``""`` when not interleaved) and ``versions`` (the
        version that placed each, default ``version``) have one item per artist; ``candidate``:
        the interleaving's candidate version."""
        n = len(artists)
        teams = tuple(teams) if teams is not None else ("",) * n
        placed = tuple(versions) if versions is not None else (version,) * n
        if len(teams) != n or len(placed) != n:
            raise ValueError("teams and versions need one item per artist")
        now = self.clock()
        entry = Impression(rec_id, version, tuple(artists), placed, teams, now, listener,
                           tuple(names), candidate=candidate)  # fmt: skip
        self._expire(now)
        self._entries[rec_id] = entry
        self._entries.move_to_end(rec_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1
        return entry

    def get(self, rec_id: str) -> Impression:
        """The list served under ``rec_id``; raises when unknown or expired."""
        entry = self._entries.get(rec_id)
        if entry is None:
            raise UnknownRecommendation(
                f"recommendation_id {rec_id!r} is unknown to this gateway: never served here, "
                f"or dropped (it keeps the last {self.max_entries} lists for {self.ttl_s:g} s)"
            )
        if self.clock() - entry.created > self.ttl_s:
            del self._entries[rec_id]
            raise ExpiredRecommendation(f"recommendation_id {rec_id!r} expired: feedback is "
                                        f"taken for {self.ttl_s:g} s after the answer")  # fmt: skip
        return entry

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.created <= self.ttl_s:
                return
            entries.popitem(last=False)


@dataclass(frozen=True)
class Event:
    """One feedback event, checked: the artist by ``artist_id`` or ``name``, an action of
    :data:`ACTIONS`, plays (PLAYED only; 1 when unset)."""

    action: str
    artist_id: str | None = None
    name: str | None = None
    play_count: float = 1.0


@dataclass(frozen=True)
class Credit:
    """Where an event was credited: the artist, the version and team that placed it, its
    1-based rank."""

    artist_id: str
    version: int
    rank: int
    team: str


class EventSink:
    """Where impressions and feedback go besides the metrics (``gateway/event_log.py``)."""

    def impression(self, entry: Impression, mode: str) -> None: ...

    def feedback(
        self, entry: Impression, events: Sequence[Event], credits: Sequence[Credit]
    ) -> None: ...  # fmt: skip


class FeedbackService:
    """Records what was served (:meth:`served`) and credits feedback to it (:meth:`feedback`)."""

    def __init__(self, store: ImpressionStore, metrics: GatewayMetrics,
                 sink: EventSink | None = None) -> None:  # fmt: skip
        self.store, self.metrics, self.sink = store, metrics, sink or EventSink()
        self.logs_listeners = sink is not None  # the event log records who was served

    def served(self, rec_id: str, version: int, artists: Sequence[tuple[str, str]], mode: str,
               *, listener: str = "", teams: Sequence[str] | None = None,
               versions: Sequence[int] | None = None,
               candidate: int | None = None) -> Impression:  # fmt: skip
        """Keep a served list (``artists``: ``(id, name)`` best first), count the impression
        and log it (``candidate``: an interleaved list's candidate version)."""
        entry = self.store.put(rec_id, version, [a for a, _ in artists], teams, versions,
                               listener=listener, names=[n for _, n in artists],
                               candidate=candidate)  # fmt: skip
        self.metrics.impression(version, len(self.store))
        self.sink.impression(entry, mode)
        return entry

    def feedback(self, rec_id: str, events: Sequence[Event]) -> list[Credit]:
        """Credit ``events`` to the list served under ``rec_id``: all of them or, when one
        names an artist not in the list, none (INVALID_ARGUMENT naming it)."""
        try:
            entry = self.store.get(rec_id)
        except (UnknownRecommendation, ExpiredRecommendation) as exc:
            self.metrics.unattributed(exc.reason, len(events))
            raise
        credits = [self._credit(entry, i, event) for i, event in enumerate(events)]
        for event, credit in zip(events, credits, strict=True):
            self.metrics.feedback_event(credit.version, event.action)
            if event.action == PLAYED and not entry.played:
                entry.played = True
                self.metrics.first_play(entry.version, credit.rank)
        self._judge(entry, events, credits)
        self.sink.feedback(entry, events, credits)
        return credits

    def _judge(self, entry: Impression, events: Sequence[Event],
               credits: Sequence[Credit]) -> None:  # fmt: skip
        """An interleaved list's one outcome, at its first call with a PLAYED event (see the
        module)."""
        if entry.candidate is None or entry.judged:
            return
        played = [c.rank - 1 for e, c in zip(events, credits, strict=True) if e.action == PLAYED]
        if not played:
            return
        entry.judged = True
        self.metrics.interleave_outcome(entry.candidate, interleave_credit(entry.teams, played))

    def _credit(self, entry: Impression, i: int, event: Event) -> Credit:
        pos = entry.position(event.artist_id, event.name)
        if pos is None:
            self.metrics.unattributed("not_served")
            given = f"id {event.artist_id!r}" if event.artist_id is not None else (
                f"name {event.name!r}")  # fmt: skip
            raise InvalidArgument(f"events[{i}]: artist {given} is not in the list served "
                                  f"under recommendation_id {entry.rec_id!r}; nothing of this "
                                  "request was recorded")  # fmt: skip
        return Credit(entry.artists[pos], entry.versions[pos], pos + 1, entry.teams[pos])


def check_events(count: int) -> None:
    """INVALID_ARGUMENT unless a request carries 1..:data:`MAX_EVENTS` events."""
    if not 1 <= count <= MAX_EVENTS:
        raise InvalidArgument(f"events: give 1..{MAX_EVENTS} events, got {count}")
