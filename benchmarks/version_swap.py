"""Redeploys under continuous load: three swaps and a rollback, counting every request.

    .venv/bin/python -m benchmarks.version_swap              # HetRec catalogue, ~4 min
    .venv/bin/python -m benchmarks.version_swap --requests 20000

Four versions of the seed network (random weights, seeds 0..3) are exported over HetRec 2011's
vocabulary and plays; version 1 serves. While 8 concurrent asyncio clients ask for known users'
recommendations, ``deploy`` swaps in 2, 3 and 4 and ``rollback`` returns to 3, then traffic
runs on until at least ``--requests`` answers. ``switch_seconds``: from each command's start
to the first answer from its target version. Writes benchmarks/results/version_swap.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from benchmarks.common import random_network
from core.console import console
from core.contract import SERVED_MODELS
from core.paths import HETREC_DIR
from export.repository import export_network
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from serving.deploy import DeployConfig, deploy, rollback
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "version_swap.json"


def _export_versions(root: Path, n: int) -> Path:
    data = load_hetrec(HETREC_DIR)
    data.vocab.save(root / "vocab")
    repo = root / "model_repository"
    for seed in range(n):
        source = {"source_run": f"benchmark (random weights, seed {seed})"}
        export_network(random_network(*data.matrix.shape, seed=seed), repo,
                       vocab_dir=root / "vocab", plays=data.matrix, provenance=source)  # fmt: skip
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    return repo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="answers to wait for")
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = _export_versions(Path(tmp), 4)
        users = list(load_hetrec(HETREC_DIR).vocab.user_ids)
        cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu"),
                          log_dir=Path(tmp) / "logs")  # fmt: skip
        with serving_stack(cfg) as stack:
            ops = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address,
                               admin_key=stack.triton.admin_key)  # fmt: skip
            steps = []
            with AsyncLoad(stack.gateway.address, users) as load:
                load.wait_for(300)
                for action in (2, 3, 4, "rollback"):
                    start = time.monotonic()
                    report = rollback(ops) if action == "rollback" else deploy(ops, version=action)
                    first = load.first_answer_from(report.version, start)
                    steps.append({
                        "action": report.action, "version": report.version,
                        "previous": report.previous, "command_seconds": report.seconds,
                        "switch_seconds": None if first is None else first - start,
                    })  # fmt: skip
                    console.print(f"{report.action} -> {report.version}: {report.seconds:.1f}s")
                load.wait_for(max(args.requests, load.ok + 500))
    lat = np.array(load.latencies)
    switch = [s["switch_seconds"] for s in steps]
    result = {
        "device": "CPU (2 cores; load generator, gateway and Triton share them)",
        "catalogue": "HetRec 2011 (1,892 users x 17,632 artists), known-user requests, k=10",
        "concurrency": load.concurrency,
        "requests": load.ok + len(load.failures),
        "failed": len(load.failures),
        "swaps": sum(s["action"] == "deploy" for s in steps),
        "rollbacks": sum(s["action"] == "rollback" for s in steps),
        "switch_seconds": switch,
        "steps": steps,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "failures_sample": load.failures[:5],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title=f"Version swaps under load: {result['requests']:,} requests, "
                        f"{result['failed']} failed")  # fmt: skip
    for col in ("action", "version", "from", "command s", "deploy -> first answer s"):
        table.add_column(col, justify="right")
    for s in steps:
        switch = "-" if s["switch_seconds"] is None else f"{s['switch_seconds']:.2f}"
        table.add_row(s["action"], str(s["version"]), str(s["previous"]),
                      f"{s['command_seconds']:.2f}", switch)  # fmt: skip
    console.print(table)
    console.print(f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
