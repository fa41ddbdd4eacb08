"""Reliability under faults and bad input, against the real Triton and gateway.

    python -m benchmarks.reliability            # writes benchmarks/results/reliability.json
    python -m benchmarks.reliability --quick    # fewer requests and deploys

* ``fuzz``: Recommend / SimilarUsers requests across the whole field space and raw bytes on
  every method (``loadtests/fuzz.py``), 8 at a time; counts INTERNAL / UNKNOWN answers and
  gateway crashes, and the gateway's memory growth.
* ``triton_kill``: SIGKILL Triton under load; seconds until the gateway serves again (the stack
  restarts Triton), requests and failures meanwhile, by status.
* ``corrupt_version``: under load, deploy a version whose plays file is truncated (refused);
  then make Triton serve it behind deploy's back and check that health turns NOT_SERVING.
* ``concurrent_deploys``: deploys started at once from threads; records lost, and whether one
  pinned version serves in Triton and the gateway at the end.
* ``open_ports``: the addresses each process listens on.

The model is the tests' size (a random network of the seed architecture over a generated
200-user, 400-artist catalogue): these are proofs of behaviour, not speed figures.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.table import Table

from benchmarks.common import benchmark_arguments, random_network
from client import RecommenderClient
from core.console import console
from core.contract import CATALOGUE_SCORER, PLAYS, SERVED_MODELS
from export.repository import export_network
from export.triton_config import serving_policy, write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version, listening, truncate
from loadtests.fuzz import (
    DOCUMENTED,
    METHODS,
    answer,
    recommend_request,
    request_fields,
    similar_users_request,
)
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.deploy import DeployConfig, DeployError, deploy
from serving.gateway_process import health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.data import load_dataset
from training.data.generator import GeneratorConfig, generate_spotify_csv

RESULTS = Path(__file__).parent / "results" / "reliability.json"


def _stack(root: Path, name: str) -> tuple[StackConfig, Path]:
    repo = root / name / "model_repository"
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.2),
                      log_dir=root / name / "logs")  # fmt: skip
    return cfg, repo


def _export(root: Path, repo: Path, versions: int = 1) -> list[str]:
    csv = root / "plays.csv"
    if not csv.exists():
        generate_spotify_csv(csv, GeneratorConfig(rows=20_000, users=200, artists=400, seed=5))
    data, _ = load_dataset(str(csv))
    if not (root / "vocab").exists():
        data.vocab.save(root / "vocab")
    model = random_network(*data.matrix.shape)
    for _ in range(versions):
        export_network(model, repo, vocab_dir=root / "vocab", plays=data.matrix,
                       provenance={"source_run": "reliability benchmark"})  # fmt: skip
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    return [u for i, u in enumerate(data.vocab.user_ids) if data.matrix[i].nnz]


def _words(users: list[str], repo: Path) -> list[str]:
    artists = json.loads((repo / CATALOGUE_SCORER / "1" / "vocab" / "artists.json").read_text())
    return users[:20] + artists["names"][:20] + artists["ids"][:20]


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def _submit_examples(count: int, strategy: st.SearchStrategy, submit) -> None:
    """Draw ``count`` examples of ``strategy`` with hypothesis and hand each to ``submit``."""

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def draw(example) -> None:
        submit(example)

    draw()


def fuzz(root: Path, requests: int) -> tuple[dict, dict]:
    cfg, repo = _stack(root, "fuzz")
    words = _words(_export(root, repo), repo)
    codes: collections.Counter[str] = collections.Counter()
    pool = cf.ThreadPoolExecutor(8)
    with serving_stack(cfg) as running, grpc.insecure_channel(running.gateway.address) as ch:
        stub, pid = pb_grpc.RecommenderStub(ch), running.gateway.process.pid
        rss_before, pending = _rss_kb(pid), []
        calls = [
            (requests * 2 // 5, request_fields(words),
             lambda r: stub.Recommend(recommend_request(r), timeout=20)),
            (requests * 2 // 5, request_fields(words),
             lambda r: stub.SimilarUsers(similar_users_request(r), timeout=20)),
            (requests - 4 * (requests // 5), st.tuples(st.sampled_from(METHODS), st.binary(
                max_size=2048)), lambda mb: ch.unary_unary(mb[0])(mb[1], timeout=20)),
        ]  # fmt: skip
        for count, strategy, send in calls:
            _submit_examples(count, strategy, lambda example, send=send: pending.append(
                pool.submit(answer, lambda: send(example))))  # fmt: skip
        for future in pending:
            code, _ = future.result()
            codes[code.name] += 1
        pool.shutdown()
        alive = running.gateway.process.poll() is None
        serving = health_status(running.gateway.address) == "SERVING"
        triton_ports = (cfg.triton_http_port, cfg.triton_grpc_port, cfg.triton_metrics_port)
        ports = {
            "triton": sorted(f"{a}:{p}" for p in triton_ports for a in listening(p)),
            "gateway": sorted(f"{a}:{cfg.gateway.port}" for a in listening(cfg.gateway.port)),
        }
        rss_growth = _rss_kb(pid) - rss_before
    result = {"requests": sum(codes.values()), "internal": codes["INTERNAL"],
              "unknown": codes["UNKNOWN"], "crashes": int(not alive),
              "undocumented": sum(n for c, n in codes.items()
                                  if grpc.StatusCode[c] not in DOCUMENTED),
              "serving_after": serving, "rss_growth_mb": round(rss_growth / 1024, 1),
              "codes": dict(codes)}  # fmt: skip
    return result, ports


def _restarted(running, old_pid: int, timeout_s: float = 120.0) -> float:
    """Seconds until a new Triton runs and the gateway is SERVING again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        proc = running.triton.process
        new = proc is not None and proc.pid != old_pid
        if new and health_status(running.gateway.address) == "SERVING":
            break
        time.sleep(0.05)
    return time.monotonic() - start


def triton_kill(root: Path) -> dict:
    cfg, repo = _stack(root, "kill")
    users = _export(root, repo)
    with serving_stack(cfg) as running, AsyncLoad(running.gateway.address, users, 4) as load:
        load.wait_for(200, timeout_s=60)
        old = running.triton.process.pid
        os.kill(old, signal.SIGKILL)
        recovery = _restarted(running, old)
        load.wait_for(load.ok + 500, timeout_s=60)
    codes = collections.Counter(f.split(":", 1)[0] for f in load.failures)
    return {"recovery_s": round(recovery, 2), "requests": load.ok + len(load.failures),
            "failed": len(load.failures), "codes": dict(codes),
            "restarts": running.supervisor.restarts}  # fmt: skip


def corrupt_version(root: Path) -> dict:
    cfg, repo = _stack(root, "corrupt")
    users = _export(root, repo)
    with serving_stack(cfg) as running:
        ops = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                           admin_key=running.triton.admin_key, timeout_s=30)  # fmt: skip
        with AsyncLoad(running.gateway.address, users, concurrency=4) as load:
            load.wait_for(300, timeout_s=60)
            clone_version(repo, 1, 2)
            truncate(repo / CATALOGUE_SCORER / "2" / PLAYS)
            refused = ""
            try:
                deploy(ops, version=2)
            except DeployError as exc:
                refused = str(exc)
            load.wait_for(load.ok + 300, timeout_s=60)
        requests, failed = load.ok + len(load.failures), len(load.failures)
        # Behind deploy's back: Triton serves only the corrupt version. Health must say so.
        client = grpcclient.InferenceServerClient(running.triton.grpc_url)
        for name in SERVED_MODELS:
            write_configs(repo / name, name, serving=[2])
            client.load_model(name, headers=running.triton.admin_headers)
        deadline, truthful = time.monotonic() + 30, False
        while time.monotonic() < deadline and not truthful:
            truthful = health_status(running.gateway.address) == "NOT_SERVING"
            time.sleep(0.1)
        with RecommenderClient(running.gateway.address, timeout_s=5) as gateway:
            try:
                gateway.recommend(users[0], k=3)
                answered_while_broken = "OK"
            except Exception as exc:  # the reason the caller sees
                answered_while_broken = str(exc)[:160]
    return {
        "requests": requests,
        "failed": failed,
        "deploy_refused": refused[:200],
        "health_truthful": truthful,
        "recommend_while_unloadable": answered_while_broken,
    }


def concurrent_deploys(root: Path, deploys: int) -> dict:
    cfg, repo = _stack(root, "deploys")
    _export(root, repo, versions=deploys + 1)
    with serving_stack(cfg) as running:
        ops = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                           admin_key=running.triton.admin_key, keep=deploys + 2)  # fmt: skip
        errors: list[str] = []
        start = threading.Barrier(deploys)

        def one(version: int) -> None:
            start.wait()
            try:
                deploy(ops, version=version, force=True)
            except DeployError as exc:
                errors.append(str(exc))

        with cf.ThreadPoolExecutor(deploys) as pool:
            list(pool.map(one, range(2, deploys + 2)))
        history = json.loads((repo / "deployments.json").read_text())
        last = history[-1]["version"] if history else None
        pins = {tuple(_pin(repo, name) or ()) for name in SERVED_MODELS}
        with RecommenderClient(running.gateway.address) as client:
            gateway_version = client.serving_info().model_version
    return {"deploys": deploys, "lost_records": deploys - len(errors) - len(history),
            "errors": errors[:3],
            "final_consistent": len(pins) == 1 and _pin(repo, CATALOGUE_SCORER) == [last]
            and gateway_version == last, "serving": last}  # fmt: skip


def _pin(repo: Path, name: str) -> list[int] | None:
    return serving_policy(repo / name)


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "2,000 fuzz requests, 4 deploys", argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fuzzed, ports = fuzz(root, 2_000 if args.quick else 10_000)
        console.print(f"fuzz: {fuzzed}")
        result = {
            "fuzz": fuzzed,
            "triton_kill": triton_kill(root),
            "corrupt_version": corrupt_version(root),
            "concurrent_deploys": concurrent_deploys(root, 4 if args.quick else 10),
            "open_ports": ports,
            "device": "CPU (2 cores shared by the load, the gateway and Triton)",
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = Table(title="Reliability (benchmarks/results/reliability.json)")
    table.add_column("scenario")
    table.add_column("result")
    for name, value in result.items():
        table.add_row(name, json.dumps(value)[:150])
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
