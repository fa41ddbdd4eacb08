"""Requests/s and latency of the two Triton models on the local (CPU) Triton.

    .venv/bin/python -m benchmarks.triton_models            # HetRec and 290k-artist catalogues
    .venv/bin/python -m benchmarks.triton_models --quick    # fewer requests

For each catalogue (HetRec's 17,632 artists; 290,000 artists, the full Spotify scale) a network
of the seed architecture with random weights is exported and served, then measured:
(a) ``pairwise``: the scores of 10 users x all artists through ``pair_scorer`` (split into
requests of at most max_batch_size pairs, as a client must), summed per artist;
(b) ``all_artists``: one ``catalogue_scorer`` request for the same 10 users, top-100;
each at concurrency 1 and 8. (c) ``batching``: single-pair requests at concurrency 32 on
``pair_scorer`` with dynamic batching on, then reloaded with it off.
Writes benchmarks/results/triton_models.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from rich.table import Table

from benchmarks.common import random_network, summary
from core.console import console
from core.contract import ARTIST_INPUT, CATALOGUE_SCORER, PAIR_SCORER, USER_INPUT
from core.vocabulary import Vocabulary
from export.repository import export_network
from export.triton_config import model_config
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer

RESULTS = Path(__file__).parent / "results" / "triton_models.json"
N_USERS = 1_892
GROUP = 10
PAIR_CHUNK = 65_536


def _export(n_artists: int, root: Path) -> Path:
    vocab = Vocabulary(
        tuple(f"u{i}" for i in range(N_USERS)),
        tuple(f"a{i}" for i in range(n_artists)),
        tuple(f"Artist {i}" for i in range(n_artists)),
    )
    vocab.save(root / "vocab")
    repo = root / "model_repository"
    export_network(
        random_network(N_USERS, n_artists), repo, vocab_dir=root / "vocab",
        plays=sp.csr_matrix((N_USERS, n_artists), dtype=np.float32),
        provenance={"source_run": "benchmark", "users": N_USERS, "artists": n_artists},
    )  # fmt: skip
    return repo


def _pairwise(client: grpcclient.InferenceServerClient, users: np.ndarray, n_artists: int):
    pairs_u = np.repeat(users, n_artists).astype(np.int32).reshape(-1, 1)
    pairs_a = np.tile(np.arange(n_artists, dtype=np.int32), len(users)).reshape(-1, 1)
    scores = []
    for s in range(0, len(pairs_u), PAIR_CHUNK):
        u, a = pairs_u[s : s + PAIR_CHUNK], pairs_a[s : s + PAIR_CHUNK]
        inputs = [grpcclient.InferInput(USER_INPUT, list(u.shape), "INT32"),
                  grpcclient.InferInput(ARTIST_INPUT, list(a.shape), "INT32")]  # fmt: skip
        inputs[0].set_data_from_numpy(u)
        inputs[1].set_data_from_numpy(a)
        scores.append(client.infer(PAIR_SCORER, inputs, client_timeout=120).as_numpy("score"))
    summed = np.concatenate(scores).reshape(len(users), n_artists).sum(axis=0)
    return np.argsort(-summed)[:100]


def _all_artists(client: grpcclient.InferenceServerClient, users: np.ndarray, n_artists: int):
    inputs = [grpcclient.InferInput("users", [1, len(users)], "INT64"),
              grpcclient.InferInput("weights", [1, len(users)], "FP32"),
              grpcclient.InferInput("k", [1, 1], "INT64")]  # fmt: skip
    inputs[0].set_data_from_numpy(users.reshape(1, -1).astype(np.int64))
    inputs[1].set_data_from_numpy(np.ones((1, len(users)), np.float32))
    inputs[2].set_data_from_numpy(np.array([[100]], np.int64))
    return client.infer(CATALOGUE_SCORER, inputs, client_timeout=120).as_numpy("artists")


def _single_pair(client: grpcclient.InferenceServerClient, users: np.ndarray, n_artists: int):
    inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
              grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(users[:1].reshape(1, 1).astype(np.int32))
    inputs[1].set_data_from_numpy(np.array([[int(users[0]) % n_artists]], np.int32))
    return client.infer(PAIR_SCORER, inputs, client_timeout=60).as_numpy("score")


def measure(server: TritonServer, call, n_artists: int, concurrency: int, requests: int) -> dict:
    """Run ``requests`` calls from ``concurrency`` threads (one client each)."""
    per_thread = max(1, requests // concurrency)
    rng = np.random.default_rng(0)
    groups = rng.integers(0, N_USERS, (concurrency, per_thread, GROUP))

    def worker(t: int) -> list[float]:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        call(client, groups[t, 0], n_artists)  # warm the connection
        out = []
        for i in range(per_thread):
            t0 = time.perf_counter()
            call(client, groups[t, i], n_artists)
            out.append(time.perf_counter() - t0)
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        latencies = np.concatenate([np.array(x) for x in pool.map(worker, range(concurrency))])
    return summary(latencies, time.perf_counter() - t0, concurrency)


def _set_batching(server: TritonServer, enabled: bool) -> None:
    cfg = model_config(PAIR_SCORER, production=False)
    if not enabled:
        cfg.ClearField("dynamic_batching")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.load_model(PAIR_SCORER, config=json_format.MessageToJson(cfg),
                      headers=server.admin_headers)  # fmt: skip


def run_catalogue(n_artists: int, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        repo = _export(n_artists, Path(tmp))
        cfg = TritonConfig(repo, free_port(), free_port(), free_port(),
                           load_models=(PAIR_SCORER, CATALOGUE_SCORER),
                           log_file=Path(tmp) / "triton.log")  # fmt: skip
        with TritonServer(cfg) as server:
            out: dict = {"artists": n_artists}
            scale = 1 if n_artists < 100_000 else 4
            for mode, call in (("pairwise", _pairwise), ("all_artists", _all_artists)):
                for conc in (1, 8):
                    n = (
                        (8 if quick else 32) // scale
                        if mode == "pairwise"
                        else (32 if quick else 160)
                    )
                    out[f"{mode}_c{conc}"] = measure(server, call, n_artists, conc, max(conc, n))
            if n_artists < 100_000:  # the batching gain is a property of the server, not the size
                small = 640 if quick else 3_200
                out["batching_on_c32"] = measure(server, _single_pair, n_artists, 32, small)
                _set_batching(server, enabled=False)
                out["batching_off_c32"] = measure(server, _single_pair, n_artists, 32, small)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--big-artists", type=int, default=290_000)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    hetrec = run_catalogue(17_632, args.quick)
    big = run_catalogue(args.big_artists, args.quick)
    result = {
        "device": "CPU (2 cores), Triton 2.51 Python backend + onnxruntime",
        "group_size": GROUP,
        "hetrec": hetrec,
        "spotify_scale": big,
        "all_artists_vs_pairwise": hetrec["all_artists_c8"]["rps"] / hetrec["pairwise_c8"]["rps"],
        "batching_gain": hetrec["batching_on_c32"]["rps"] / hetrec["batching_off_c32"]["rps"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="Triton models on CPU (10 users per recommendation)")
    for col in ("catalogue", "case", "conc", "requests", "req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for label, block in (("17,632", hetrec), (f"{args.big_artists:,}", big)):
        for case, row in block.items():
            if isinstance(row, dict):
                table.add_row(label, case.rsplit("_c", 1)[0], str(row["concurrency"]),
                              str(row["requests"]), f"{row['rps']:.1f}",
                              f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"all_artists_vs_pairwise (HetRec, c8): {result['all_artists_vs_pairwise']:.1f}x;"
                  f" batching_gain (c32): {result['batching_gain']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
