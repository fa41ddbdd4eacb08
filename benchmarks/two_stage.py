"""Two-stage serving against the exhaustive modes, through the real gateway and Triton.

    .venv/bin/python -m benchmarks.two_stage            # HetRec and 290k artists (~25 min)
    .venv/bin/python -m benchmarks.two_stage --quick    # fewer requests

Catalogues: HetRec 2011 (real plays, 1,892 users x 17,632 artists) and a Spotify-scale synthetic
one (15,918 users x 290,000 artists, 12.9M plays from the project's generator). A network of the
seed architecture with random weights, a learned ranker of the production size fitted on
synthetic rows, and ALS factors fitted on the catalogue's plays are exported over each with the
default settings (speed does not depend on training); Triton (CPU, Python backend) and the
gateway run as in the demo. Requests are new listeners' histories (10 artists of a random
listener, by name), sent at concurrency 1, 8 and 32 in each mode: ``ranked`` (the default) and
``two_stage`` in steady points (``benchmarks/steady_load.py``: at least 10 s and 1,000 answers
after a warm-up; a quarter of that with ``--quick``), ``all_artists`` and ``pairwise`` (seconds
a request at 290k artists) by a fixed count of requests.

Top-level figures, all of the served default ``ranked``: ``two_stage_vs_all_artists_290k``
(requests/s at concurrency 8 over ``all_artists``', measured side by side), ``p50_ms_290k_c1``
(end to end), ``gateway_overhead_ms_p50`` (HetRec, concurrency 1: the end-to-end p50 minus the
p50 of the very same ``candidate_ranker`` requests sent straight to Triton), the gateway's own
time per stage at concurrency 1 (its metrics: ``gateway_own_ms_mean_c1`` is its whole Recommend
minus its Triton stage), the export's time per source (``export_seconds``, ``als_seconds``),
and NDCG@10 (mean over seeds) copied from ``quality.json`` (run that first).
Writes benchmarks/results/two_stage.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from benchmarks.catalogues import export_in_child
from benchmarks.common import (
    benchmark_arguments,
    drive,
    history_requests,
    summary,
)
from benchmarks.steady_load import LoadShape, burn_in, history_messages, run_point
from core.console import console
from core.contract import CANDIDATE_RANKER, CANDIDATE_SCORER
from core.ranker_features import candidate_features
from core.similarity import CPU
from gateway.artifacts import ArtistRef, ModelVersion
from gateway.config import GatewayConfig
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack

RESULTS = Path(__file__).parent / "results" / "two_stage.json"
QUALITY = Path(__file__).parent / "results" / "quality.json"
MODES = ("ranked", "two_stage", "all_artists", "pairwise")
SERVED = "ranked"
# Requests per (mode, concurrency): the exhaustive modes cost 10-1000x more at 290k artists.
COUNTS = {
    "hetrec": {"ranked": {1: 300, 8: 600, 32: 800}, "two_stage": {1: 300, 8: 600, 32: 800},
               "all_artists": {1: 100, 8: 200, 32: 300}, "pairwise": {1: 16, 8: 32, 32: 64}},
    "290k": {"ranked": {1: 300, 8: 600, 32: 800}, "two_stage": {1: 300, 8: 600, 32: 800},
             "all_artists": {1: 12, 8: 32, 32: 64}, "pairwise": {1: 3, 8: 8, 32: 32}},
}  # fmt: skip
STEADY = ("ranked", "two_stage")  # measured in steady points; the others by request count
STAGES = ("resolve", "similarity", "candidates", "triton", "response")


def _direct_triton_ms(repo: Path, url: str, requests: list[list[str]],
                      model: str = CANDIDATE_RANKER) -> dict:  # fmt: skip
    """The same ``model`` requests the gateway sends, straight to Triton, one at a time
    (``candidate_scorer``'s without the features: the network alone)."""
    mv = ModelVersion.load(repo, 1, CPU)
    client = grpcclient.InferenceServerClient(url)
    latencies = []
    for history in requests:
        row = mv.resolve([ArtistRef(name=n) for n in history]).row
        idx, sims = mv.similarity.query(row, 10)
        found = mv.candidates.candidates(row, idx[0], sims[0])
        keep = idx[0] >= 0
        arrays = [("users", idx[0][keep][None, :].astype(np.int64), "INT64"),
                  ("weights", sims[0][keep][None, :].astype(np.float32), "FP32"),
                  ("candidates", found.artists[None, :], "INT64"),
                  ("mask", np.ones((1, len(found.artists)), bool), "BOOL"),
                  ("features", candidate_features(found, False)[None], "FP32")]  # fmt: skip
        if model != CANDIDATE_RANKER:
            arrays = arrays[:-1]
        inputs = []
        for name, array, dtype in arrays:
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        t0 = time.perf_counter()
        client.infer(model, inputs, model_version="1")
        latencies.append(time.perf_counter() - t0)
    client.close()
    return summary(latencies[1:], sum(latencies[1:]), 1)


def _stage_totals(metrics_port: int) -> dict[str, tuple[float, float]]:
    """(seconds, count) so far per request stage and for the whole Recommend, from the
    gateway's own histograms."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "musicrec_gateway_stage_seconds":
            key = "stage"
        elif family.name == "musicrec_gateway_request_seconds":
            key = "method"
        else:
            continue
        for sample in family.samples:
            name = sample.labels.get(key, "")
            slot = totals.setdefault(name, [0.0, 0.0])
            if sample.name.endswith("_sum"):
                slot[0] = sample.value
            elif sample.name.endswith("_count"):
                slot[1] = sample.value
    return {name: (s, c) for name, (s, c) in totals.items()}


def _means_ms(before: dict, after: dict) -> dict[str, float]:
    """Mean milliseconds per request of each stage (and of the whole Recommend) between two
    snapshots."""
    out = {}
    for name in (*STAGES, "Recommend"):
        s0, c0 = before.get(name, (0.0, 0.0))
        s1, c1 = after.get(name, (0.0, 0.0))
        if c1 > c0:
            out[name] = 1e3 * (s1 - s0) / (c1 - c0)
    return out


def measure(name: str, scale: int) -> dict:
    """Export a random network over one catalogue, serve it, and drive every mode."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exported = export_in_child(name, root)
        plays, vocab = exported.plays, exported.vocab
        out: dict = {"catalogue": exported.describe(), "rows": {},
                     "als_seconds": exported.als_seconds,
                     "export_seconds": exported.export_seconds}  # fmt: skip
        metrics_port = free_port()
        cfg = StackConfig(root / "model_repository", free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=metrics_port,
                                                backend="cpu", log_json=True),
                          log_dir=root / "logs")  # fmt: skip
        with serving_stack(cfg) as stack:
            warm = history_requests(plays, vocab.artist_names, 500, seed=99)
            burn_in(stack.gateway.address, history_messages(warm, SERVED), 30 / scale)
            for mode in MODES:
                for conc, n in COUNTS[name][mode].items():
                    requests = history_requests(plays, vocab.artist_names,
                                                max(conc, n // scale), seed=conc)  # fmt: skip
                    before = _stage_totals(metrics_port)
                    if mode in STEADY:  # >= 10 s and >= 1,000 answers (benchmarks/cost.py)
                        shape = LoadShape(conc, seconds=10 / scale, min_requests=1000 // scale)
                        messages = history_messages(requests, mode)
                        row = asyncio.run(run_point(stack.gateway.address, messages, shape, {}))
                    else:  # the exhaustive modes: a fixed count (seconds each at 290k)
                        row = asyncio.run(drive(stack.gateway.address, requests, conc, mode))
                    out["rows"][f"{mode}_c{conc}"] = row
                    if mode == SERVED and conc == 1:
                        out["stage_means_ms_c1"] = _means_ms(before, _stage_totals(metrics_port))
                    console.print(f"{name} {mode} c{conc}: {row['rps']:.1f} req/s, "
                                  f"p50 {row['p50_ms']:.1f} ms")  # fmt: skip
            requests = history_requests(plays, vocab.artist_names, 300 // scale, seed=1)
            direct = _direct_triton_ms(root / "model_repository", stack.triton.grpc_url, requests)
            out["triton_direct_c1"] = direct
            # What the trees add inside Triton: the same requests without them.
            out["triton_direct_network_only_c1"] = _direct_triton_ms(
                root / "model_repository", stack.triton.grpc_url, requests, CANDIDATE_SCORER
            )
    return out


def _quality() -> dict[str, float | None]:
    models = json.loads(QUALITY.read_text())["models"] if QUALITY.is_file() else {}
    names = ("dnn", "dnn_two_stage", "dnn_ranked", "ease")
    return {m: ((models.get(m) or {}).get("ndcg@10") or {}).get("mean") for m in names}


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "fewer requests", argv)
    scale = 4 if args.quick else 1
    t0 = time.perf_counter()
    hetrec, big = measure("hetrec", scale), measure("290k", scale)
    rows = big["rows"]
    result = {
        "device": "CPU (2 cores; load generator, gateway and Triton share them)",
        "requests": "new listeners: 10 artists of a random listener, by name; top 10",
        "hetrec": hetrec,
        "290k": big,
        "mode": SERVED,
        "two_stage_vs_all_artists_290k": rows[f"{SERVED}_c8"]["rps"]
        / rows["all_artists_c8"]["rps"],
        "p50_ms_290k_c1": rows[f"{SERVED}_c1"]["p50_ms"],
        "p50_ms_290k_c1_two_stage_blend": rows["two_stage_c1"]["p50_ms"],
        "gateway_overhead_ms_p50": hetrec["rows"][f"{SERVED}_c1"]["p50_ms"]
        - hetrec["triton_direct_c1"]["p50_ms"],
        # The learned ranker's cost per request inside Triton (p50, concurrency 1).
        "ranker_in_triton_ms_p50": {
            cat: r["triton_direct_c1"]["p50_ms"] - r["triton_direct_network_only_c1"]["p50_ms"]
            for cat, r in (("hetrec", hetrec), ("290k", big))
        },
        # The gateway's own clock, concurrency 1: its whole Recommend minus its Triton stage.
        "gateway_own_ms_mean_c1": hetrec["stage_means_ms_c1"]["Recommend"]
        - hetrec["stage_means_ms_c1"]["triton"],
        "ndcg@10": _quality(),
        "ndcg_source": "benchmarks/results/quality.json (HetRec, per-user 20% holdout, mean "
        "over split seeds)",
        "total_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="Recommend for a new listener through the gateway (2 CPU cores)")
    for col in ("catalogue", "mode", "conc", "requests", "req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for cat in ("hetrec", "290k"):
        for key, row in result[cat]["rows"].items():
            mode = key.rsplit("_c", 1)[0]
            cells = (row["concurrency"], row["requests"], f"{row['rps']:.1f}",
                     f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}")  # fmt: skip
            table.add_row(cat, mode, *map(str, cells))
    console.print(table)
    for key in (
        "two_stage_vs_all_artists_290k",
        "p50_ms_290k_c1",
        "gateway_overhead_ms_p50",
        "gateway_own_ms_mean_c1",
    ):
        console.print(f"{key}: {result[key]:.2f}")
    console.print(f"stage means at concurrency 1 (HetRec, ms): {hetrec['stage_means_ms_c1']}")
    console.print(f"ndcg@10: {result['ndcg@10']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
