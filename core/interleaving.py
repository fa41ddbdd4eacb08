"""Team-draft interleaving of two ranked lists (Radlinski, Kurup and Joachims 2008, "How does
clickthrough data reflect retrieval quality?", algorithm 2).

The two versions are two teams picking in turns, as captains pick players: the team with fewer
picks so far picks next, a coin decides when they have as many, and a team picks its highest
ranked artist not already in the merged list (so an artist both lists hold is placed once,
by whichever team reached it first, and credited to that team only). Among the first ``j``
positions each team therefore holds ``floor(j/2)`` or ``ceil(j/2)``. When one list has nothing
left to give, the other fills the remaining places (its team's; the paper stops there, a
served list must be ``k`` long). The coin is a seeded generator (blake2b of the seed, e.g. the
recommendation id), so one id always gives one merged list.

:func:`credit` turns the positions a listener played into one impression's outcome: the team
with more played positions wins; as many (and at least one) is a tie; none played is "none"
(no evidence either way). ``core/sequential_test.py``'s ``interleaving_test`` reads the
wins, losses and ties.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TEAMS = ("serving", "candidate")
OUTCOMES = ("candidate", "serving", "tie", "none")


@dataclass(frozen=True)
class Interleaved:
    """The merged list and, position by position, the team that placed each artist."""

    items: tuple[str, ...]
    teams: tuple[str, ...]  # one of TEAMS per position


def _coin(seed: int | str | bytes) -> random.Random:
    raw = seed if isinstance(seed, bytes) else str(seed).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big"))


def _next(ranked: Sequence[str], start: int, placed: set[str]) -> int:
    """The index of ``ranked``'s first artist at or after ``start`` not yet placed."""
    while start < len(ranked) and ranked[start] in placed:
        start += 1
    return start


def team_draft(serving: Sequence[str], candidate: Sequence[str], k: int,
               seed: int | str | bytes) -> Interleaved:  # fmt: skip
    """Interleave the two ranked lists into at most ``k`` distinct artists (see the module)."""
    if k < 0:
        raise ValueError("k must be >= 0")
    lists, cursor = {"serving": serving, "candidate": candidate}, {t: 0 for t in TEAMS}
    picks, coin = {t: 0 for t in TEAMS}, _coin(seed)
    items: list[str] = []
    teams: list[str] = []
    placed: set[str] = set()
    while len(items) < k:
        for t in TEAMS:
            cursor[t] = _next(lists[t], cursor[t], placed)
        left = [t for t in TEAMS if cursor[t] < len(lists[t])]
        if not left:
            break
        if len(left) == 1:
            team = left[0]
        elif picks["serving"] != picks["candidate"]:
            team = min(TEAMS, key=picks.__getitem__)
        else:
            team = TEAMS[coin.getrandbits(1)]
        artist = lists[team][cursor[team]]
        items.append(artist)
        teams.append(team)
        placed.add(artist)
        picks[team] += 1
    return Interleaved(tuple(items), tuple(teams))


def credit(teams: Sequence[str], played_positions: Iterable[int]) -> str:
    """One impression's outcome (one of OUTCOMES) from the 0-based positions played (each
    counted once; a position outside the list is an error)."""
    played = set(played_positions)
    if any(not 0 <= p < len(teams) for p in played):
        raise ValueError(f"played positions must lie in 0..{len(teams) - 1}")
    won = {t: sum(teams[p] == t for p in played) for t in TEAMS}
    if not played:
        return "none"
    if won["candidate"] == won["serving"]:
        return "tie"
    return "candidate" if won["candidate"] > won["serving"] else "serving"
