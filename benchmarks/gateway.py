"""Latency and requests/s of the gateway's ``Recommend``, against the seed-style path.

    .venv/bin/python -m benchmarks.gateway            # HetRec catalogue, ~5 min on 2 cores
    .venv/bin/python -m benchmarks.gateway --quick    # fewer requests

A network of the seed architecture with random weights is exported over HetRec 2011's real
vocabulary and play matrix (1,892 users x 17,632 artists), so the similar-user lookup works on
real histories; Triton and the gateway run as in the demo. Requests are new-user histories drawn
from HetRec (10 artists of a listener, by name), sent by the asyncio client at concurrency 1, 8
and 32, in both scoring modes (``all_artists``: one in-graph top-K call; ``pairwise``: user x
artist pairs through ``pair_scorer``).

The seed-style path answers the same requests in-process as the report did: the 10 most similar
users, then the Keras model's ``predict`` over every artist once per similar user, summed and
ranked. With Keras' default ``batch_size`` (32) and, for a fairer bar, one batch per call.
Writes benchmarks/results/gateway.json; ``gateway_vs_seed_style`` = the gateway's requests/s
(all_artists, concurrency 8) over the seed-style path's (default predict).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.table import Table

from benchmarks.common import benchmark_arguments, drive, history_requests, random_network, summary
from core.console import console
from core.contract import ARTIST_INPUT, USER_INPUT
from core.paths import HETREC_DIR
from core.similarity import SimilarityIndex
from export.repository import export_network
from gateway.config import GatewayConfig
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "gateway.json"
HISTORY = 10  # artists per new-user request
K = 10


def histories(data, n: int, seed: int = 0) -> list[list[str]]:
    """``n`` new-listener histories: 10 artist names of a random HetRec user each."""
    return history_requests(data.matrix, data.vocab.artist_names, n, HISTORY, seed)


async def _drive(address: str, requests: list[list[str]], concurrency: int, mode: str) -> dict:
    return await drive(address, requests, concurrency, mode, K)


def seed_style(model, data, requests: list[list[str]], batch_size: int | None) -> dict:
    """The report's way, in-process: similar users, then ``predict`` per similar user."""
    index = SimilarityIndex(data.matrix)
    by_name = {n: i for i, n in enumerate(data.vocab.artist_names)}
    n_artists = data.matrix.shape[1]
    artists = np.arange(n_artists, dtype=np.int32).reshape(-1, 1)
    latencies = []
    t_start = time.perf_counter()
    for history in requests:
        t0 = time.perf_counter()
        cols = [by_name[a] for a in history]
        row = sp.csr_matrix((np.ones(len(cols)), ([0] * len(cols), cols)), shape=(1, n_artists))
        idx, sims = index.query(row, 10)
        scores = np.zeros(n_artists, np.float32)
        for u, w in zip(idx[0], sims[0], strict=True):
            if u < 0:
                continue
            users = np.full((n_artists, 1), u, np.int32)
            kwargs = {"batch_size": batch_size} if batch_size else {}
            pred = model.predict({USER_INPUT: users, ARTIST_INPUT: artists}, verbose=0, **kwargs)
            scores += w * pred.ravel()
        scores[cols] = -np.inf
        np.argsort(-scores)[:K]
        latencies.append(time.perf_counter() - t0)
    return summary(latencies, time.perf_counter() - t_start, 1)


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "fewer requests", argv)
    scale = 4 if args.quick else 1
    data = load_hetrec(HETREC_DIR)
    n_users, n_artists = data.matrix.shape
    model = random_network(n_users, n_artists)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data.vocab.save(root / "vocab")
        export_network(
            model,
            root / "model_repository",
            vocab_dir=root / "vocab",
            plays=data.matrix,
            provenance={"source_run": "benchmark (random weights)"},
        )
        cfg = StackConfig(root / "model_repository", free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                                log_json=True),
                          log_dir=root / "logs")  # fmt: skip
        with serving_stack(cfg) as stack:
            for mode, counts in (("all_artists", {1: 120, 8: 320, 32: 480}),
                                 ("pairwise", {1: 24, 8: 48, 32: 64})):  # fmt: skip
                for conc, n in counts.items():
                    requests = histories(data, max(conc, n // scale), seed=conc)
                    rows[f"{mode}_c{conc}"] = asyncio.run(
                        _drive(stack.gateway.address, requests, conc, mode)
                    )
                    console.print(f"{mode} c{conc}: {rows[f'{mode}_c{conc}']['rps']:.1f} req/s")
    seed_requests = histories(data, 2 if args.quick else 4, seed=99)
    rows["seed_style_predict_default"] = seed_style(model, data, seed_requests, None)
    rows["seed_style_predict_one_batch"] = seed_style(model, data, seed_requests * 3, n_artists)
    gateway_rps = rows["all_artists_c8"]["rps"]
    result = {
        "device": "CPU (2 cores; load generator, gateway and Triton share them)",
        "catalogue": {"users": n_users, "artists": n_artists},
        "history_length": HISTORY,
        "k": K,
        "rows": rows,
        "gateway_vs_seed_style": gateway_rps / rows["seed_style_predict_default"]["rps"],
        "gateway_vs_seed_style_one_batch": gateway_rps
        / rows["seed_style_predict_one_batch"]["rps"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="Recommend for a new listener (HetRec, 10 similar users, top 10)")
    for col in ("path", "conc", "requests", "req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for name, row in rows.items():
        table.add_row(name.rsplit("_c", 1)[0] if "_c" in name[-4:] else name,
                      str(row["concurrency"]), str(row["requests"]), f"{row['rps']:.2f}",
                      f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}")  # fmt: skip
    console.print(table)
    console.print(
        f"gateway_vs_seed_style: {result['gateway_vs_seed_style']:.0f}x "
        f"(vs one-batch predict: {result['gateway_vs_seed_style_one_batch']:.0f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
