"""Where things live by default."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
HETREC_DIR = SHARED_DATA / "hetrec2011-lastfm-2k"
DEFAULT_GENERATED_CSV = PROJECT_ROOT / "data" / "generated" / "spotify_playlists.csv"
DEFAULT_RUNS_DIR = PROJECT_ROOT / "runs"
DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
