"""``musicrec generate``: a seeded synthetic Spotify Playlists CSV."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.console import console
from core.paths import DEFAULT_GENERATED_CSV
from training.data.generator import GeneratorConfig, generate_spotify_csv


def ensure_generated(source: str, seed: int) -> None:
    """Generate the default data set on first use."""
    if Path(source) == DEFAULT_GENERATED_CSV and not DEFAULT_GENERATED_CSV.exists():
        console.print(f"generating the default data set at {DEFAULT_GENERATED_CSV}")
        generate_spotify_csv(DEFAULT_GENERATED_CSV, GeneratorConfig(seed=seed), progress=True)


def _generate(args: argparse.Namespace) -> None:
    cfg = GeneratorConfig(rows=args.rows, users=args.users, artists=args.artists,
                          seed=args.seed, malformed_rate=args.malformed_rate)  # fmt: skip
    t0 = time.perf_counter()
    path = generate_spotify_csv(args.out, cfg, progress=True)
    console.print(f"wrote {cfg.rows:,} rows to {path} in {time.perf_counter() - t0:.1f}s")


def register(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    g = sub.add_parser(
        "generate", help="write a seeded synthetic Spotify Playlists CSV", formatter_class=fmt
    )
    g.add_argument("-o", "--out", type=Path, default=DEFAULT_GENERATED_CSV)
    g.add_argument("-r", "--rows", type=int, default=GeneratorConfig.rows)
    g.add_argument("-u", "--users", type=int, default=GeneratorConfig.users)
    g.add_argument("-a", "--artists", type=int, default=GeneratorConfig.artists)
    g.add_argument("--malformed-rate", type=float, default=GeneratorConfig.malformed_rate)
    g.add_argument("-s", "--seed", type=int, default=GeneratorConfig.seed)
    g.set_defaults(func=_generate)
