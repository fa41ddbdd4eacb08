"""The gateway's Triton call three ways, against one real Triton: tritonclient's asyncio client
(the gateway's old path), the raw ``grpc.aio`` stub path (``gateway/inference.py``, today's),
and tritonclient's synchronous client.

    .venv/bin/python -m benchmarks.triton_client            # 1,500 requests per client
    .venv/bin/python -m benchmarks.triton_client --quick    # 300

A network of the seed architecture with random weights is exported over HetRec 2011 (as
``benchmarks/two_stage.py`` does) and served by Triton with the CPU configs, every model
loaded. One new listener's ``candidate_scorer`` request (10 similar users, their weights, the
stage-1 candidates of a 10-artist history, the mask: INT64, FP32 and BOOL tensors) is sent
sequentially by each client, in interleaved rounds so that drift on the shared cores reaches
all three alike. Each timing covers what the gateway pays per call: building the inputs from
the numpy arrays, the call, and reading the scores back as an array. Reported: p50/p99 ms per
client, the ratios of the p50s, and the client process's CPU time per call (less sensitive
than wall time to other work on the shared cores). Writes benchmarks/results/triton_client.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from rich.table import Table

from benchmarks.common import benchmark_arguments, history_requests, random_network, summary
from core.console import console
from core.contract import CANDIDATE_SCORER, SERVED_MODELS
from core.paths import HETREC_DIR
from core.similarity import CPU
from export.repository import export_network
from gateway.artifacts import ArtistRef, ModelVersion
from gateway.inference import Inference, open_channel, tensor
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "triton_client.json"
CLIENTS = ("tritonclient_aio", "raw_grpc_aio", "tritonclient_sync")
ROUNDS = 10
WARMUP = 20  # per client, before the measured rounds


def _request(repo: Path, plays, names) -> list[tuple[str, np.ndarray, str]]:
    """One candidate_scorer request as the gateway builds it for a new listener."""
    history = history_requests(plays, names, 1, seed=3)[0]
    mv = ModelVersion.load(repo, 1, CPU)
    row = mv.resolve([ArtistRef(name=n) for n in history]).row
    idx, sims = mv.similarity.query(row, 10)
    found = mv.candidates.candidates(row, idx[0], sims[0])
    keep = idx[0] >= 0
    artists = found.artists.astype(np.int64)
    return [("users", idx[0][keep][None, :].astype(np.int64), "INT64"),
            ("weights", sims[0][keep][None, :].astype(np.float32), "FP32"),
            ("candidates", artists[None, :], "INT64"),
            ("mask", np.ones((1, len(artists)), bool), "BOOL")]  # fmt: skip


def _triton_inputs(module, arrays):
    inputs = []
    for name, array, dtype in arrays:
        inputs.append(module.InferInput(name, list(array.shape), dtype))
        inputs[-1].set_data_from_numpy(array)
    return inputs


async def _aio_loop(client: grpcaio.InferenceServerClient, arrays, n: int):
    """tritonclient.grpc.aio, as the gateway called it before (client_timeout, version pinned,
    a request id)."""
    latencies, scores = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        result = await client.infer(CANDIDATE_SCORER, _triton_inputs(grpcaio, arrays),
                                    model_version="1", client_timeout=5.0,
                                    request_id="bench")  # fmt: skip
        scores = result.as_numpy("scores")
        latencies.append(time.perf_counter() - t0)
    return latencies, scores


async def _raw_loop(inference: Inference, arrays, n: int):
    """The gateway's raw path: tensor() per input, Inference.infer, as_numpy."""
    latencies, scores = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        inputs = [tensor(name, array, dtype) for name, array, dtype in arrays]
        result = await inference.infer(CANDIDATE_SCORER, 1, inputs, timeout_s=5.0)
        scores = result.as_numpy("scores")
        latencies.append(time.perf_counter() - t0)
    return latencies, scores


def _sync_loop(client: grpcclient.InferenceServerClient, arrays, n: int):
    latencies, scores = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        result = client.infer(CANDIDATE_SCORER, _triton_inputs(grpcclient, arrays),
                              model_version="1", client_timeout=5.0,
                              request_id="bench")  # fmt: skip
        scores = result.as_numpy("scores")
        latencies.append(time.perf_counter() - t0)
    return latencies, scores


async def _open(url: str) -> tuple[grpcaio.InferenceServerClient, Inference]:
    return grpcaio.InferenceServerClient(url), Inference(open_channel(url), url)


def measure(url: str, arrays, n: int) -> tuple[dict, dict, dict]:
    """``n`` sequential requests per client, in ``ROUNDS`` interleaved rounds whose order
    rotates (one event loop and one connection per client throughout); returns every client's
    latencies (s), the client process's CPU microseconds per call, and its last scores."""
    sync_client = grpcclient.InferenceServerClient(url)
    with asyncio.Runner() as loop:
        aio_client, inference = loop.run(_open(url))
        runs = {
            "tritonclient_aio": lambda k: loop.run(_aio_loop(aio_client, arrays, k)),
            "raw_grpc_aio": lambda k: loop.run(_raw_loop(inference, arrays, k)),
            "tritonclient_sync": lambda k: _sync_loop(sync_client, arrays, k),
        }
        latencies: dict[str, list[float]] = {c: [] for c in CLIENTS}
        cpu_s = dict.fromkeys(CLIENTS, 0.0)  # this process's CPU (its gRPC threads too)
        scores: dict[str, np.ndarray] = {}
        for name in CLIENTS:
            runs[name](WARMUP)
        per_round = max(1, n // ROUNDS)
        for r in range(ROUNDS):
            order = CLIENTS[r % 3 :] + CLIENTS[: r % 3]
            for name in order:
                cpu0 = time.process_time()
                lat, scores[name] = runs[name](per_round)
                cpu_s[name] += time.process_time() - cpu0
                latencies[name] += lat
        loop.run(aio_client.close())
        loop.run(inference.close())
    sync_client.close()
    cpu_us = {name: 1e6 * cpu_s[name] / len(latencies[name]) for name in CLIENTS}
    return latencies, cpu_us, scores


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "300 requests per client, not 1,500", argv)
    n = 300 if args.quick else 1500
    t0 = time.perf_counter()
    data = load_hetrec(HETREC_DIR)
    plays, vocab = data.matrix, data.vocab
    n_users, n_artists = plays.shape
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "model_repository"
        vocab.save(root / "vocab")
        provenance = {"source_run": "benchmark (random weights)"}
        export_network(random_network(n_users, n_artists), repo, vocab_dir=root / "vocab",
                       plays=plays, provenance=provenance)  # fmt: skip
        arrays = _request(repo, plays, vocab.artist_names)
        triton = TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                           load_models=SERVED_MODELS,
                                           log_file=root / "triton.log"))  # fmt: skip
        triton.start()
        try:
            latencies, cpu_us, scores = measure(triton.grpc_url, arrays, n)
        finally:
            triton.stop()
    for name in CLIENTS[1:]:  # the same request gives the same answer on every path
        np.testing.assert_array_equal(scores[name], scores[CLIENTS[0]])
    rows = {name: summary(lat, sum(lat), 1) | {"mean_ms": 1e3 * float(np.mean(lat)),
                                                "client_cpu_us_per_call": cpu_us[name]}
            for name, lat in latencies.items()}  # fmt: skip
    p50 = {name: row["p50_ms"] for name, row in rows.items()}
    result = {
        "device": "CPU (2 cores; client and Triton share them)",
        "request": {
            "model": CANDIDATE_SCORER,
            "catalogue": "HetRec 2011 (random weights)",
            "shapes": {name: list(a.shape) for name, a, _ in arrays},
            "dtypes": {name: d for name, _, d in arrays},
        },
        "timed": "building the inputs, the call, reading the scores as an array; sequential",
        "rounds": ROUNDS,
        "rows": rows,
        "aio_over_raw_p50": p50["tritonclient_aio"] / p50["raw_grpc_aio"],
        "raw_over_sync_p50": p50["raw_grpc_aio"] / p50["tritonclient_sync"],
        "aio_minus_raw_p50_ms": p50["tritonclient_aio"] - p50["raw_grpc_aio"],
        "aio_minus_raw_mean_ms": rows["tritonclient_aio"]["mean_ms"]
        - rows["raw_grpc_aio"]["mean_ms"],
        "aio_over_raw_client_cpu": cpu_us["tritonclient_aio"] / cpu_us["raw_grpc_aio"],
        "total_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="One candidate_scorer request to Triton, sequential (2 CPU cores)")
    for col in ("client", "requests", "p50 ms", "mean ms", "p99 ms", "p50 / raw p50",
                "client CPU µs"):  # fmt: skip
        table.add_column(col, justify="right")
    for name, row in rows.items():
        table.add_row(name, str(row["requests"]), f"{row['p50_ms']:.2f}", f"{row['mean_ms']:.2f}",
                      f"{row['p99_ms']:.2f}",
                      f"{row['p50_ms'] / p50['raw_grpc_aio']:.2f}",
                      f"{row['client_cpu_us_per_call']:.0f}")  # fmt: skip
    console.print(table)
    for key in ("aio_over_raw_p50", "raw_over_sync_p50", "aio_minus_raw_p50_ms",
                "aio_minus_raw_mean_ms", "aio_over_raw_client_cpu"):  # fmt: skip
        console.print(f"{key}: {result[key]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
