"""What a Recommend costs: CPU milliseconds per request of the gateway, of Triton (the server
and every Python-backend stub) and of the load generator, beside requests/s and p50/p99, in
steady points (>= 10 s and >= 1,000 answers each, after a warm-up).

    .venv/bin/python -m benchmarks.cost                   # both catalogues (~15 min)
    .venv/bin/python -m benchmarks.cost --quick           # HetRec only, ranked only
    .venv/bin/python -m benchmarks.cost --sweep           # + thread settings, chosen here
    .venv/bin/python -m benchmarks.cost --workers         # + gateway workers side by side

Catalogues and models as in ``benchmarks.two_stage`` (``benchmarks/catalogues.py``). Requests
are new listeners' histories (10 artists of a random listener, by name, top 10), sent by a
closed loop at concurrency 1, 8 and 32 in ``ranked`` (the default) and ``two_stage``. The
servers run with the settings they ship with (the gateway's ``--blas-threads``, the Triton
runners' onnxruntime threads and spinning from ``configs/cpu.pbtxt``); ``--sweep`` runs the
served default at concurrency 1 and 8 under other settings too, which is how those defaults
were chosen, and ``--workers`` gateways of 1 and 2 worker processes (``workers.rps_ratio_2_to_1``
at concurrency 32): each such comparison runs both stacks at once and alternates the load
between them in blocks of 4 s (``benchmarks/interleaved.py``), since this machine's speed
drifts by tens of percent within minutes. Writes benchmarks/results/cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.table import Table

from benchmarks.catalogues import CATALOGUES, ExportedCatalogue, export_in_child
from benchmarks.common import history_requests
from benchmarks.interleaved import Side, interleave
from benchmarks.process_cpu import sample_group
from benchmarks.steady_load import LoadShape, burn_in, history_messages, run_point
from core.console import console
from gateway.config import GatewayConfig
from musicrec.v1 import recommender_pb2 as pb
from serving.processes import free_port
from serving.stack import Stack, StackConfig, serving_stack

RESULTS = Path(__file__).parent / "results" / "cost.json"
MODES = ("ranked", "two_stage")
SERVED = "ranked"
CONCURRENCY = (1, 8, 32)
HISTORIES = 2000  # distinct listeners sent round robin


@dataclass(frozen=True)
class Settings:
    """One way of running the servers: the gateway's flags and the Triton runners' environment
    (``MUSICREC_ORT_*`` overrides what ``configs/cpu.pbtxt`` says)."""

    name: str = "shipped"
    gateway: dict = field(default_factory=dict)  # GatewayConfig fields
    triton_env: dict = field(default_factory=dict)


SWEEP = (
    Settings("gateway BLAS on every core (OpenBLAS default)", {"blas_threads": os.cpu_count()}),
    Settings("gateway: every request its own Triton call", {"triton_batch": 1}),
    Settings("gateway: up to 4 requests a Triton call", {"triton_batch": 4}),
    Settings("Triton: onnxruntime on every core, spinning", {},
             {"MUSICREC_ORT_THREADS": "0", "MUSICREC_ORT_SPINNING": "1"}),
    Settings("Triton: onnxruntime on every core, no spinning", {},
             {"MUSICREC_ORT_THREADS": "0", "MUSICREC_ORT_SPINNING": "0"}),
)  # fmt: skip


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _stack(exported: ExportedCatalogue, root: Path, settings: Settings) -> Iterator[Stack]:
    gateway = replace(GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu"),
                      **settings.gateway)  # fmt: skip
    cfg = StackConfig(exported.repository, free_port(), free_port(), free_port(),
                      gateway=gateway, log_dir=root / "logs")  # fmt: skip
    with _environment(settings.triton_env), serving_stack(cfg) as stack:
        yield stack


def _servers(stack: Stack) -> dict:
    return {"gateway": lambda: sample_group(stack.gateway.process.pid),
            "triton": lambda: sample_group(stack.triton.process.pid)}  # fmt: skip


def _points(stack: Stack, requests: dict, points: list[tuple[str, int]], shape: LoadShape,
            label: str) -> dict:  # fmt: skip
    out = {}
    for mode, conc in points:
        row = asyncio.run(run_point(stack.gateway.address, requests[mode],
                                    replace(shape, concurrency=conc), _servers(stack)))  # fmt: skip
        out[f"c{conc}"] = row
        console.print(f"{label} {mode} c{conc}: {row['rps']:.0f} req/s, p50 "
                      f"{row['p50_ms']:.2f} ms, gateway {row['gateway_cpu_ms']:.2f} ms CPU, "
                      f"Triton {row['triton_cpu_ms']:.2f} ms CPU, load generator "
                      f"{row['load_generator_cpu_ms']:.2f} ms CPU per request")  # fmt: skip
    return out


def _compare(
    exported: ExportedCatalogue,
    root: Path,
    requests: dict,
    settings: Settings,
    blocks: int,
    concurrency: tuple[int, ...] = (1, 8),
    connections: int = 4,
    messages: list | None = None,
) -> dict:
    """The served default under the shipped settings (A) and under ``settings`` (B), both
    stacks up at once and the load alternated between them (``benchmarks/interleaved.py``)."""
    out: dict = {**asdict(settings)}
    with _stack(exported, root, Settings()) as a, _stack(exported, root, settings) as b:
        for stack in (a, b):
            burn_in(stack.gateway.address, requests[SERVED], 10)
        for conc in concurrency:
            row = interleave(Side(a.gateway.address, _servers(a)),
                             Side(b.gateway.address, _servers(b)), messages or requests[SERVED],
                             conc,
                             blocks=blocks, connections=connections)  # fmt: skip
            out[f"c{conc}"] = row
            ratio = row["b_over_a"]
            console.print(f"[{settings.name}] c{conc} against shipped: req/s x"
                          f"{ratio['rps']:.2f}, gateway CPU x{ratio['gateway_cpu_ms']:.2f}, "
                          f"Triton CPU x{ratio['triton_cpu_ms']:.2f}")  # fmt: skip
    return out


def _extras(exported: ExportedCatalogue, root: Path, requests: dict, blocks: int) -> dict:
    """Side by side on HetRec: requests sharing Triton calls or not (concurrency 8 and 32), and
    known users' requests with their stage 1 kept or computed each time."""
    users = [pb.RecommendRequest(user_id=u, k=10) for u in exported.vocab.user_ids[:HISTORIES]]
    return {
        "joining": _compare(exported, root, requests,
                            Settings("every request its own Triton call", {"triton_batch": 1}),
                            blocks, concurrency=(8, 32)),
        "known_users": _compare(exported, root, requests,
                                Settings("known users, no stage-1 cache", {"known_user_cache": 0}),
                                blocks, concurrency=(1, 8), messages=users),
    }  # fmt: skip


def measure(name: str, args: argparse.Namespace) -> dict:
    """Export over catalogue ``name`` and run every point (and the sweep or workers, if
    asked) on it."""
    shape = LoadShape(1, args.seconds, args.min_requests, args.warmup_s)
    modes = (SERVED,) if args.quick else MODES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exported = export_in_child(name, root)
        histories = history_requests(exported.plays, exported.vocab.artist_names, HISTORIES)
        requests = {m: history_messages(histories, m) for m in MODES}
        out: dict = {"catalogue": exported.describe()}
        if args.extras_only:
            return {**out, **_extras(exported, root, requests, args.blocks)}
        with _stack(exported, root, Settings()) as stack:
            burn_in(stack.gateway.address, requests[SERVED], args.burn_in_s)
            for mode in modes:
                out[mode] = _points(stack, requests, [(mode, c) for c in CONCURRENCY], shape,
                                    name)  # fmt: skip
        if args.sweep and name == "hetrec":
            out["sweep"] = [_compare(exported, root, requests, settings, args.blocks)
                            for settings in SWEEP]  # fmt: skip
        if args.workers and name == "hetrec":
            workers = Settings("2 gateway workers (A: 1)", {"workers": 2})
            out["workers"] = _compare(exported, root, requests, workers, args.blocks,
                                      concurrency=(8, 32), connections=16)  # fmt: skip
    return out


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="HetRec only, ranked only")
    parser.add_argument("--catalogues", nargs="+", choices=CATALOGUES, default=list(CATALOGUES))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window, at least")
    parser.add_argument("--min-requests", type=int, default=1000, help="answers, at least")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--burn-in-s", type=float, default=30.0, help="unmeasured load first")
    parser.add_argument("--sweep", action="store_true", help="thread settings on HetRec")
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks a sweep side")
    parser.add_argument(
        "--extras-only",
        action="store_true",
        help="only the joining and known-user comparisons (HetRec), merged into "
        "the existing output file",
    )
    parser.add_argument(
        "--workers", action="store_true", help="gateways of 1 and 2 workers side by side on HetRec"
    )
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.catalogues = ["hetrec"]
    return args


def _summary(result: dict) -> dict:
    """The headline figures: the served default's cost on HetRec at concurrency 8, its p50 at
    concurrency 1 on each catalogue, and the workers' ratio."""
    out = {}
    hetrec = result.get("hetrec", {}).get(SERVED, {})
    if "c8" in hetrec:
        for key in ("gateway_cpu_ms", "triton_cpu_ms", "load_generator_cpu_ms", "rps"):
            out[f"{SERVED}.hetrec.c8.{key}"] = hetrec["c8"][key]
    for cat in ("hetrec", "290k"):
        row = result.get(cat, {}).get(SERVED, {}).get("c1")
        if row:
            out[f"{SERVED}.{cat}.c1.p50_ms"] = row["p50_ms"]
    workers = result.get("hetrec", {}).get("workers")
    if workers:
        out["workers.rps_ratio_2_to_1"] = workers["c32"]["b_over_a"]["rps"]
    return out


def _table(result: dict) -> Table:
    table = Table(title="Recommend for a new listener: cost per request (2 shared CPU cores)")
    for col in ("catalogue", "mode", "conc", "s", "requests", "req/s", "p50 ms", "p99 ms",
                "gateway CPU ms", "Triton CPU ms", "load gen CPU ms"):  # fmt: skip
        table.add_column(col, justify="right")
    for cat in CATALOGUES:
        for mode in MODES:
            for key, row in result.get(cat, {}).get(mode, {}).items():
                table.add_row(cat, mode, key[1:], f"{row['seconds']:.1f}", str(row["requests"]),
                              f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}",
                              f"{row['p99_ms']:.2f}", f"{row['gateway_cpu_ms']:.2f}",
                              f"{row['triton_cpu_ms']:.2f}",
                              f"{row['load_generator_cpu_ms']:.2f}")  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    t0 = time.perf_counter()
    result: dict = {
        "device": f"CPU ({os.cpu_count()} cores; load generator, gateway and Triton share them)",
        "requests": "new listeners: 10 artists of a random listener, by name; top 10",
        "shape": {"seconds_at_least": args.seconds, "requests_at_least": args.min_requests,
                  "warmup_s": args.warmup_s, "burn_in_s": args.burn_in_s},  # fmt: skip
        "cpu": "user + system seconds of every process of the group (/proc), per answered "
               "request inside the window; Triton: the server and its Python-backend stubs",
    }  # fmt: skip
    if args.extras_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else result
        result.setdefault("hetrec", {}).update(measure("hetrec", args))
        console.print(f"merged the joining and known-user comparisons into {args.out}")
    else:
        for name in args.catalogues:
            result[name] = measure(name, args)
    result["summary"] = _summary(result)
    result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(_table(result))
    for key, value in result["summary"].items():
        console.print(f"{key}: {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
