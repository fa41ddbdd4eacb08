"""Replicated Triton and replicated gateways under load: failed requests and throughput.

    .venv/bin/python -m benchmarks.scale_out            # ~5 min on 2 cores
    .venv/bin/python -m benchmarks.scale_out --quick    # 1,000 requests a phase, not 5,000

A network of the seed architecture with random weights is exported over HetRec's real plays
and served by two Triton replicas on one model repository. Known users are asked for their top
10 (the default two_stage mode) at concurrency 8 by the asyncio client, every answer checked:

* ``replica_kill``: one gateway over both replicas; one replica is SIGKILLed under load;
* ``swap_two_replicas``: ``deploy`` swaps version 1 -> 2 on both replicas under load;
* ``gateway_kill``: a client over two gateways (``round_robin``); one is SIGKILLed under load;
* ``throughput_two_replicas_vs_one``: the same load through a gateway over one replica and
  through one over both, alternated (side by side, in one run). On 2 shared cores the replicas
  compete for the same CPUs, so ~1 is expected there: it is the shape that matters.

Writes benchmarks/results/scale_out.json.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import benchmark_arguments, random_network, summary
from core.console import console
from core.contract import SERVED_MODELS
from core.paths import HETREC_DIR
from export.repository import export_network
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version
from serving.admin_key import new_key
from serving.deploy import DeployConfig, deploy
from serving.gateway_process import GatewayProcess
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "scale_out.json"
CONCURRENCY = 8


def _phase(load: AsyncLoad, requests: int, fault=None) -> dict:
    """Wait for ``requests`` // 5 answers, inject ``fault``, then wait for the rest."""
    assert load.wait_for(requests // 5, timeout_s=300), "no traffic before the fault"
    if fault is not None:
        fault()
    finished = load.wait_for(load.ok + requests - requests // 5, timeout_s=600)
    return {"requests": load.ok + len(load.failures), "failed": len(load.failures),
            "finished": finished, "first_failures": load.failures[:3]}  # fmt: skip


def _gateway(target: str, repo: Path, logs: Path, name: str) -> GatewayProcess:
    config = GatewayConfig(port=free_port(), metrics_port=0, backend="cpu", triton_url=target,
                           repository=repo, poll_interval_s=0.2)  # fmt: skip
    return GatewayProcess(config, log_file=logs / f"{name}.log").start()


def _throughput(address: str, users: list[str], requests: int) -> dict:
    with AsyncLoad(address, users, CONCURRENCY) as load:
        load.wait_for(50, timeout_s=120)  # warm
        start_ok, t0 = load.ok, time.perf_counter()
        load.wait_for(start_ok + requests, timeout_s=600)
        wall = time.perf_counter() - t0
    return summary(load.latencies[start_ok:], wall, CONCURRENCY)


def run(requests: int) -> dict:
    data = load_hetrec(HETREC_DIR)
    users = [u for i, u in enumerate(data.vocab.user_ids) if data.matrix[i].nnz]
    out: dict = {"device": "CPU (2 cores shared by the load, the gateways and both Tritons)",
                 "concurrency": CONCURRENCY}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, logs = root / "model_repository", root / "logs"
        logs.mkdir()
        data.vocab.save(root / "vocab")
        export_network(random_network(*data.matrix.shape), repo, vocab_dir=root / "vocab",
                       plays=data.matrix, provenance={"source_run": "benchmark"})  # fmt: skip
        for name in SERVED_MODELS:
            write_configs(repo / name, name, serving=[1])
        key = new_key()
        tritons = [TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                             load_models=SERVED_MODELS, admin_key=key,
                                             log_file=logs / f"triton{i}.log")).start()
                   for i in range(2)]  # fmt: skip
        both = ",".join(t.grpc_url for t in tritons)
        gateways = [_gateway(both, repo, logs, f"gateway{i}") for i in range(2)]
        single = _gateway(tritons[0].grpc_url, repo, logs, "gateway-one-replica")
        try:
            rows = {"one": [], "two": []}
            for _ in range(2):  # alternated, so drift hits both alike
                rows["one"].append(_throughput(single.address, users, requests // 5))
                rows["two"].append(_throughput(gateways[0].address, users, requests // 5))
            out["throughput"] = rows
            rps = {k: sum(r["rps"] for r in v) / len(v) for k, v in rows.items()}
            out["throughput_two_replicas_vs_one"] = rps["two"] / rps["one"]
            single.stop()

            with AsyncLoad(gateways[0].address, users, CONCURRENCY) as load:
                kill = lambda: tritons[0].process.send_signal(signal.SIGKILL)  # noqa: E731
                out["replica_kill"] = _phase(load, requests, kill)
            tritons[0].stop()
            tritons[0].start()
            time.sleep(1.0)  # a poll or two, so the gateway sees it again

            clone_version(repo, 1, 2)
            cfg = DeployConfig(repo, triton_url=both, gateway=gateways[0].address,
                               admin_key=key, timeout_s=120)  # fmt: skip
            with AsyncLoad(gateways[0].address, users, CONCURRENCY) as load:
                out["swap_two_replicas"] = _phase(load, requests,
                                                  lambda: deploy(cfg, version=2))  # fmt: skip
                out["swap_two_replicas"]["versions_seen"] = sorted({v for _, v in load.switches})

            target = "ipv4:" + ",".join(g.address for g in gateways)
            with AsyncLoad(target, users, CONCURRENCY) as load:
                kill = lambda: gateways[1].process.send_signal(signal.SIGKILL)  # noqa: E731
                out["gateway_kill"] = _phase(load, requests, kill)
        finally:
            for process in (single, *gateways, *tritons):
                process.stop()
    for name in ("replica_kill", "swap_two_replicas", "gateway_kill"):
        out[f"{name}_failed"] = out[name]["failed"]
        out[f"{name}_requests"] = out[name]["requests"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "1,000 requests a phase", argv)
    t0 = time.perf_counter()
    result = run(1_000 if args.quick else 5_000)
    result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name in ("replica_kill", "swap_two_replicas", "gateway_kill"):
        console.print(f"{name}: {result[f'{name}_failed']} failed of "
                      f"{result[f'{name}_requests']:,} requests")  # fmt: skip
    console.print(f"throughput two replicas vs one: "
                  f"{result['throughput_two_replicas_vs_one']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
