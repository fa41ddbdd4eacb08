"""The scoring-mode registry: each way of ranking a listener's artists, defined once.

A mode has a name (what configs, the CLI and logs say), the proto enum value it travels as
(``SCORING_MODE_<NAME>`` of ``musicrec.v1.ScoringMode``) and the Triton models it calls. The
gateway implements each mode in its own module (``gateway/modes/<name>.py``); tests check that
the registry, the proto enum and those modules agree.

Adding a mode: an entry here, its module in ``gateway/modes/``, its enum value in the proto,
and a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contract import CANDIDATE_RANKER, CANDIDATE_SCORER, CATALOGUE_SCORER, PAIR_SCORER

PROTO_PREFIX = "SCORING_MODE_"


@dataclass(frozen=True)
class ScoringMode:
    """One scoring mode: its name, the Triton models it calls and whether it ranks stage-1
    candidates (``core/candidates.py``) rather than the whole catalogue."""

    name: str
    models: tuple[str, ...]
    summary: str
    uses_candidates: bool = False

    @property
    def proto_name(self) -> str:
        """Its ``musicrec.v1.ScoringMode`` enum value name."""
        return PROTO_PREFIX + self.name.upper()


MODES: dict[str, ScoringMode] = {
    m.name: m
    for m in (
        ScoringMode("ranked", (CANDIDATE_RANKER,),
                    "stage-1 candidates ranked in one candidate_ranker call: the network, then "
                    "learned LambdaRank trees over its and the sources' scores",
                    uses_candidates=True),
        ScoringMode("two_stage", (CANDIDATE_SCORER,),
                    "similar users', item neighbours' and popular artists ranked by "
                    "candidate_scorer, blended with their stage-1 scores", uses_candidates=True),
        ScoringMode("all_artists", (CATALOGUE_SCORER,),
                    "one catalogue_scorer call: top K over the whole catalogue inside Triton"),
        ScoringMode("pairwise", (PAIR_SCORER,),
                    "user x artist pairs through pair_scorer, summed here (the seed's way)"),
    )
}  # fmt: skip
MODE_NAMES = tuple(MODES)
DEFAULT_MODE = "ranked"  # the best NDCG@10 on every split seed (quality.json)


def mode_from_proto_name(proto_name: str) -> str | None:
    """``SCORING_MODE_PAIRWISE`` -> ``pairwise``; None for an unregistered value."""
    name = proto_name.removeprefix(PROTO_PREFIX).lower()
    return name if name in MODES and proto_name.startswith(PROTO_PREFIX) else None
