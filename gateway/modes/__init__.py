"""The gateway's implementation of each scoring mode of the registry (``core/modes.py``), one
module per mode."""

from __future__ import annotations

from core.modes import MODES
from gateway.inference import Inference
from gateway.modes.all_artists import AllArtists
from gateway.modes.base import ModeScorer, Ranked, ScoringRequest
from gateway.modes.pairwise import Pairwise
from gateway.modes.ranked import RankedMode
from gateway.modes.two_stage import TwoStage

IMPLEMENTATIONS: dict[str, type[ModeScorer]] = {
    "ranked": RankedMode, "two_stage": TwoStage, "all_artists": AllArtists, "pairwise": Pairwise,
}  # fmt: skip
if set(IMPLEMENTATIONS) != set(MODES):  # pragma: no cover - a registry edit without its module
    raise ImportError(
        f"scoring modes {sorted(MODES)} but implementations {sorted(IMPLEMENTATIONS)}"
    )


def mode_scorers(inference: Inference) -> dict[str, ModeScorer]:
    """One scorer per registered mode, sharing the Triton client."""
    return {name: cls(inference) for name, cls in IMPLEMENTATIONS.items()}


__all__ = ["IMPLEMENTATIONS", "ModeScorer", "Ranked", "ScoringRequest", "mode_scorers"]
