"""Full-scale load test of the Spotify Playlists loader: time and peak memory.

    .venv/bin/python -m benchmarks.loader                 # 12.9M rows, the real file's scale
    .venv/bin/python -m benchmarks.loader --csv /path/to/spotify_dataset.csv

Generates a file of the real data set's shape (15,918 users, 290k artists, 12.9M rows, a few
malformed rows) unless ``--csv`` is given, then loads it in a child process so that the peak
resident memory measured is the loader's alone. Writes benchmarks/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "loader.json"

_CHILD = """
import json, sys, time
from training.data.spotify import load_spotify_playlists
t0 = time.perf_counter()
data, report = load_spotify_playlists(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0, "summary": data.summary(),
                  "report": report.as_dict()}))
"""


def main(argv: list[str] | None = None) -> int:
    from core.console import console
    from training.data.generator import GeneratorConfig, generate_spotify_csv

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, help="load this file instead of generating one")
    parser.add_argument("--rows", type=int, default=12_900_000)
    parser.add_argument("--users", type=int, default=15_918)
    parser.add_argument("--artists", type=int, default=290_000)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path, gen_seconds = args.csv, None
        if path is None:
            cfg = GeneratorConfig(rows=args.rows, users=args.users, artists=args.artists)
            t0 = time.perf_counter()
            path = generate_spotify_csv(Path(tmp) / "spotify_playlists.csv", cfg, progress=True)
            gen_seconds = time.perf_counter() - t0
        size = path.stat().st_size
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], check=True, capture_output=True, text=True
        )
    loaded = json.loads(child.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows = loaded["report"]["records"] + loaded["report"]["malformed"]
    result = {
        "file": "generated" if args.csv is None else str(args.csv),
        "file_bytes": size,
        "generate_seconds": gen_seconds,
        "load_seconds": loaded["seconds"],
        "rows_per_second": rows / loaded["seconds"],
        "peak_rss_mb": peak_mb,
        "summary": loaded["summary"],
        "report": {k: v for k, v in loaded["report"].items() if k != "malformed_lines"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="Spotify Playlists loader, full scale")
    for col in ("rows", "file MB", "load s", "rows/s", "peak RSS MB", "malformed", "pairs"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{rows:,}", f"{size / 2**20:,.0f}", f"{loaded['seconds']:.1f}",
        f"{result['rows_per_second']:,.0f}", f"{peak_mb:,.0f}",
        str(loaded["report"]["malformed"]), f"{loaded['summary']['pairs']:,}",
    )  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
