"""Team-draft interleaving (core/interleaving.py): balanced teams, no duplicates, deterministic
per seed, and fair credit: identical rankers win half the decisive impressions each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.interleaving import credit, team_draft
from core.sequential_test import interleaving_test

POOL = [f"artist{i}" for i in range(40)]


def _lists(rng: np.random.Generator, n: int = 30) -> tuple[list[str], list[str]]:
    return list(rng.choice(POOL, n, replace=False)), list(rng.choice(POOL, n, replace=False))


def test_teams_are_balanced_on_every_prefix_with_no_duplicates_in_each_lists_order():
    rng = np.random.default_rng(0)
    for seed in range(500):
        a, b = _lists(rng)
        merged = team_draft(a, b, 10, seed=f"rec-{seed}")
        assert len(merged.items) == 10 and len(set(merged.items)) == 10
        for j in range(1, 11):
            picks = merged.teams[:j].count("candidate")
            assert picks in (j // 2, math.ceil(j / 2))
        for team, ranked in (("serving", a), ("candidate", b)):
            mine = [x for x, t in zip(merged.items, merged.teams, strict=True) if t == team]
            assert all(x in ranked for x in mine)
            assert [ranked.index(x) for x in mine] == sorted(ranked.index(x) for x in mine)
            # each pick is its team's best artist not placed before it
            for pos, (x, t) in enumerate(zip(merged.items, merged.teams, strict=True)):
                if t == team:
                    best = next(r for r in ranked if r not in merged.items[:pos])
                    assert x == best


def test_one_seed_one_list_and_short_lists_fill_from_the_other():
    a, b = ["x", "y", "z"], ["y", "q", "r", "s", "t"]
    assert team_draft(a, b, 6, seed="abc") == team_draft(a, b, 6, seed="abc")
    seeds = {team_draft(a, b, 6, seed=s).teams for s in range(50)}
    assert len(seeds) > 1  # the coin does turn
    merged = team_draft(a, b, 8, seed=1)
    assert sorted(merged.items) == sorted(set(a + b)) and len(merged.items) == 7
    assert team_draft(a, [], 2, seed=1).teams == ("serving", "serving")
    assert team_draft(a, a, 3, seed=2).items == ("x", "y", "z")  # identical lists: one order
    with pytest.raises(ValueError):
        team_draft(a, b, -1, seed=0)


def test_credit_counts_played_positions_by_team():
    teams = ("serving", "candidate", "candidate", "serving")
    assert credit(teams, []) == "none"
    assert credit(teams, [1]) == "candidate"
    assert credit(teams, [0, 3, 1]) == "serving"
    assert credit(teams, [0, 1]) == "tie"
    assert credit(teams, [1, 1, 0]) == "tie"  # a position counts once
    with pytest.raises(ValueError):
        credit(teams, [4])


def _replay(better: bool, impressions: int, seed: int) -> dict[str, int]:
    """Listeners who play each shown relevant artist with a chance that falls with its rank;
    the serving list is random, the candidate's the same or relevant artists first."""
    rng = np.random.default_rng(seed)
    tally = {"candidate": 0, "serving": 0, "tie": 0, "none": 0}
    look = 0.6 / np.arange(1, 11) ** 0.5  # position bias
    for i in range(impressions):
        relevant = set(rng.choice(POOL, 8, replace=False))
        serving = list(rng.permutation(POOL))
        candidate = list(serving)
        if better:
            candidate = sorted(serving, key=lambda x: x not in relevant)
        merged = team_draft(serving, candidate, 10, seed=f"rec-{seed}-{i}")
        shown = rng.random(10) < look
        played = [p for p, x in enumerate(merged.items) if x in relevant and shown[p]]
        tally[credit(merged.teams, played)] += 1
    return tally


def test_identical_rankers_split_the_decisive_impressions_evenly():
    tally = _replay(better=False, impressions=20_000, seed=0)
    decisive = tally["candidate"] + tally["serving"]
    share = tally["candidate"] / decisive
    print(f"identical rankers: {tally}, candidate share {share:.4f} of {decisive}")
    assert decisive > 3000 and abs(share - 0.5) < 3 * math.sqrt(0.25 / decisive)
    assert interleaving_test(tally["candidate"], tally["serving"], tally["tie"]).decision == (
        "not yet"
    )


def test_a_better_candidate_wins_the_interleaving():
    tally = _replay(better=True, impressions=600, seed=1)
    result = interleaving_test(tally["candidate"], tally["serving"], tally["tie"])
    print(f"candidate with relevant artists first: {tally}, {result.decision}")
    assert result.decision == "better" and result.win_share > 0.7
