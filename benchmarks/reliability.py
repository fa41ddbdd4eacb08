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

Issue 17's scenarios (``--only-new`` runs just these and ``triton_kill``, and merges them into
the existing JSON, keeping its other keys):

* ``corrupt_serving_version``: deploy version 2, overwrite the head of its
  ``candidate_ranker/2/model.onnx`` (the served default's model), SIGKILL Triton; whether the
  gateway's UNAVAILABLE message names the model and version that failed (``named_in_health``:
  gRPC health itself carries no text), seconds from ``deploy --version 1`` until the gateway
  serves again, and the repaired Tritons the supervisor restarted afterwards (watched past
  that start's deadline).
* ``rollback_chain``: 4 deploys, then 3 rollbacks in a row, under load (``keep`` 4).
* ``tampered_serving_artifact``: a valid plays.npz of the same shape but other contents in
  version 2 (pinned beside version 1): whether the gateway serves version 2, and whether
  ``status`` names the file.
* ``export_to_mount_point``: export into a repository that is its own tmpfs mount.
* ``unkeyed_admin_endpoints``: Triton's admin endpoints (the list of tests/test_security.py)
  that answer without the key, over HTTP and gRPC.
* ``shm_left_after_kill_bytes``: bytes of a SIGKILLed Triton's Python-backend shared-memory
  regions still in /dev/shm once the supervisor restarted it (the larger of ``triton_kill``'s
  and ``corrupt_serving_version``'s kills).

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
from client import RecommenderClient, RecommenderError
from core.console import console
from core.contract import (
    CANDIDATE_RANKER,
    CATALOGUE_SCORER,
    ONNX_FILE,
    PLAYS,
    SERVED_MODELS,
    common_versions,
)
from export.repository import export_network
from export.triton_config import serving_policy, write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version, listening, replace_plays, truncate
from loadtests.fuzz import (
    DOCUMENTED,
    METHODS,
    answer,
    recommend_request,
    request_fields,
    similar_users_request,
)
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.deploy import DeployConfig, DeployError, deploy, rollback, status
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
        old, regions = running.triton.process.pid, running.triton.shm_regions()
        os.kill(old, signal.SIGKILL)
        recovery = _restarted(running, old)
        shm_left = _bytes(regions)
        load.wait_for(load.ok + 500, timeout_s=60)
    codes = collections.Counter(f.split(":", 1)[0] for f in load.failures)
    return {"recovery_s": round(recovery, 2), "requests": load.ok + len(load.failures),
            "failed": len(load.failures), "codes": dict(codes),
            "restarts": running.supervisor.restarts, "shm_regions_before_kill": len(regions),
            "shm_left_after_kill_bytes": shm_left}  # fmt: skip


def _bytes(paths: list[Path]) -> int:
    """Bytes of the files of ``paths`` still present."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


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


def _unavailable_reason(address: str, user: str) -> str:
    """What a Recommend call is told ('OK' when it is answered)."""
    with RecommenderClient(address, timeout_s=5) as gateway:
        try:
            gateway.recommend(user, k=3)
            return "OK"
        except RecommenderError as exc:
            return str(exc)


def _wait(check, timeout_s: float, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(every_s)
    return result


def corrupt_serving_version(root: Path) -> tuple[dict, int]:
    """Issue 17, item 1: the serving version's candidate_scorer goes bad, then Triton dies."""
    cfg, repo = _stack(root, "corrupt_serving")
    users = _export(root, repo, versions=2)
    with serving_stack(cfg) as running:
        ops = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                           admin_key=running.triton.admin_key, timeout_s=60)  # fmt: skip
        deploy(ops, version=2, force=True)  # recorded: 2 serves, 1 before it (healthy)
        onnx = repo / CANDIDATE_RANKER / "2" / ONNX_FILE
        onnx.write_bytes(b"\xff" * 64 + onnx.read_bytes()[64:])  # not a protobuf any more
        old, regions = running.triton.process.pid, running.triton.shm_regions()
        os.kill(old, signal.SIGKILL)
        wanted = f"{CANDIDATE_RANKER} version 2"

        seen = [""]

        def named() -> bool:
            proc = running.triton.process
            if proc is None or proc.pid == old:
                return False
            seen[0] = _unavailable_reason(running.gateway.address, users[0])
            return wanted in seen[0]

        said = _wait(named, timeout_s=50)
        health = health_status(running.gateway.address)
        shm_left = _bytes(regions)
        started = running.supervisor.starts[-1]  # the restart into the broken version
        begin = time.monotonic()
        repaired = deploy(ops, version=1, force=True)
        _wait(lambda: health_status(running.gateway.address) == "SERVING", 60, every_s=0.05)
        recovered = time.monotonic() - begin
        pid, restarts = running.triton.process.pid, running.supervisor.restarts
        # past the repaired start's deadline (when the issue saw it killed), plus a margin
        watch = max(0.0, started + running.supervisor.start_timeout_s - time.monotonic()) + 15
        time.sleep(watch)
        proc = running.triton.process
        killed = running.supervisor.restarts - restarts
        same = proc is not None and proc.pid == pid and proc.poll() is None
        serving_after = health_status(running.gateway.address) == "SERVING"
    return {
        "named_in_health": bool(said),
        "unavailable_message": seen[0][:300],
        "health_while_broken": health,
        "recovered_by_deploy_s": round(recovered, 2),
        "repair": f"deploy --version {repaired.version}",
        "watched_after_repair_s": round(watch, 1),
        "repaired_triton_killed": killed,
        "repaired_triton_still_running": same,
        "serving_after": serving_after,
    }, shm_left


def rollback_chain(root: Path) -> dict:
    """4 deploys, then 3 rollbacks in a row, all under load."""
    cfg, repo = _stack(root, "chain")
    users = _export(root, repo, versions=5)
    deploys = rollbacks = 0
    errors: list[str] = []
    with serving_stack(cfg) as running:
        ops = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                           admin_key=running.triton.admin_key, keep=4, timeout_s=60)  # fmt: skip
        with AsyncLoad(running.gateway.address, users, concurrency=4) as load:
            load.wait_for(200, timeout_s=60)
            for version in range(2, 6):
                try:
                    deploy(ops, version=version, force=True)
                    deploys += 1
                except DeployError as exc:
                    errors.append(str(exc))
            chain = []
            for _ in range(3):
                try:
                    chain.append(rollback(ops).version)
                    rollbacks += 1
                except DeployError as exc:
                    errors.append(str(exc))
            load.wait_for(load.ok + 200, timeout_s=60)
        with RecommenderClient(running.gateway.address) as client:
            serving = client.serving_info().model_version
    return {"deploys": deploys, "rollbacks_ok": rollbacks, "failed": len(load.failures),
            "requests": load.ok + len(load.failures), "rolled_back_to": chain,
            "serving_after": serving, "keep": ops.keep, "errors": errors[:3]}  # fmt: skip


# Triton 2.51's endpoints that are not inference, health or metadata (tests/test_security.py)
ADMIN_HTTP = [
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", {"log_info": True}),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/trace/setting", {"trace_rate": "1000"}),
    ("GET", f"/v2/models/{CATALOGUE_SCORER}/trace/setting", None),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/unregister", None),
    ("GET", "/v2/cudasharedmemory/status", None),
    ("POST", "/v2/cudasharedmemory/unregister", None),
    ("GET", "/v2/models/stats", None),
    ("GET", f"/v2/models/{CATALOGUE_SCORER}/stats", None),
    ("GET", f"/v2/models/{CATALOGUE_SCORER}/config", None),
    ("POST", "/v2/repository/index", {}),
    ("POST", f"/v2/repository/models/{CATALOGUE_SCORER}/load", {}),
]


def _unkeyed_admin_endpoints(triton) -> list[str]:
    """Admin endpoints that answer a caller without the key (a wrong key counts as none)."""
    import urllib.error
    import urllib.request

    from tritonclient.utils import InferenceServerException

    unkeyed = []
    for method, path, body in ADMIN_HTTP:
        for headers in ({}, {"musicrec-admin-key": "not-the-key-at-all-but-long-enough"}):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(f"http://{triton.http_url}{path}", data=data,
                                             method=method, headers=headers)  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    code, text = resp.status, resp.read().decode()
            except urllib.error.HTTPError as err:
                code, text = err.code, err.read().decode()
            if code == 200 or "restricted" not in text.lower():
                unkeyed.append(f"HTTP {method} {path}")
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    calls = {
        "gRPC LogSettings": lambda: client.get_log_settings(),
        "gRPC LogSettings update": lambda: client.update_log_settings({"log_info": True}),
        "gRPC TraceSetting": lambda: client.get_trace_settings(),
        "gRPC TraceSetting model": lambda: client.get_trace_settings(CATALOGUE_SCORER),
        "gRPC SystemSharedMemoryStatus": lambda: client.get_system_shared_memory_status(),
        "gRPC SystemSharedMemoryUnregister": lambda: client.unregister_system_shared_memory(),
        "gRPC CudaSharedMemoryStatus": lambda: client.get_cuda_shared_memory_status(),
        "gRPC ModelStatistics": lambda: client.get_inference_statistics(),
        "gRPC ModelStatistics model": lambda: client.get_inference_statistics(CATALOGUE_SCORER),
        "gRPC ModelConfig": lambda: client.get_model_config(CATALOGUE_SCORER),
        "gRPC RepositoryIndex": lambda: client.get_model_repository_index(),
        "gRPC RepositoryModelLoad": lambda: client.load_model(CATALOGUE_SCORER),
    }
    for name, call in calls.items():
        try:
            call()
            unkeyed.append(name)
        except InferenceServerException as exc:
            if "restricted" not in str(exc).lower() and "expecting header" not in str(exc):
                unkeyed.append(name)
    client.close()
    return sorted(set(unkeyed))


def tampered_serving_artifact(root: Path) -> tuple[dict, list[str], int]:
    """A valid plays.npz of the right shape but other contents in version 2, pinned with 1."""
    cfg, repo = _stack(root, "tampered")
    _export(root, repo)
    clone_version(repo, 1, 2)  # sealed checksums hold in the copy
    replace_plays(repo / CATALOGUE_SCORER / "2" / PLAYS)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1, 2])
    with serving_stack(cfg) as running:
        address = running.gateway.address
        _wait(lambda: health_status(address) == "SERVING", timeout_s=30)
        time.sleep(2)  # several polls: version 2 is ready in Triton, tried and refused
        with RecommenderClient(address) as client:
            served = client.serving_info().model_version
        ops = DeployConfig(repo, running.triton.grpc_url, admin_key=running.triton.admin_key)
        rows = {r.version: r for r in status(ops)[0]}
        log = (cfg.log_dir / "gateway.log").read_text()
        unkeyed = _unkeyed_admin_endpoints(running.triton)
        probes = len(ADMIN_HTTP) + 12
    return (
        {
            "served": served == 2,
            "gateway_serves": served,
            "triton_ready": sorted(v for v, r in rows.items() if r.serving),
            "status_names_file": PLAYS in rows[2].problem,
            "status_problem": rows[2].problem[:200],
            "gateway_log_names_file": f"checksum mismatch in {PLAYS}" in log,
        },
        unkeyed,
        probes,
    )


def export_to_mount_point(root: Path) -> dict:
    """Export into a repository that is its own tmpfs (another device than its parent)."""
    import subprocess

    parent = root / "mount"
    repo = parent / "model_repository"
    repo.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(repo)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return {"ok": None, "skipped": f"mounting a tmpfs is refused: {done.stderr.strip()}"}
    try:
        mounted = os.stat(repo).st_dev != os.stat(parent).st_dev
        try:
            _export(root, repo, versions=2)
            error = ""
        except OSError as exc:
            error = str(exc)
        left = sorted(p.name for p in parent.iterdir() if p.name != "model_repository")
        ok = mounted and not error and common_versions(repo) == {1, 2} and not left
        return {"ok": ok, "mount_point": mounted, "versions": sorted(common_versions(repo)),
                "left_beside": left, "error": error[:200]}  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(repo)], check=False)


def issue_17(root: Path, kill: dict) -> dict:
    """Issue 17's figures, each from real processes."""
    corrupt, shm_left = corrupt_serving_version(root)
    console.print(f"corrupt serving version: {corrupt}")
    tampered, unkeyed, probed = tampered_serving_artifact(root)
    return {
        "corrupt_serving_version": corrupt,
        "rollback_chain": rollback_chain(root),
        "tampered_serving_artifact": tampered,
        "export_to_mount_point": export_to_mount_point(root),
        "unkeyed_admin_endpoints": unkeyed,
        "admin_endpoints_probed": probed,
        "shm_left_after_kill_bytes": max(kill.get("shm_left_after_kill_bytes", 0), shm_left),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only_new = "--only-new" in argv  # issue 17's scenarios and triton_kill, merged
    args = benchmark_arguments(__doc__, RESULTS, "2,000 fuzz requests, 4 deploys",
                               [a for a in argv if a != "--only-new"])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if only_new:
            result = json.loads(args.out.read_text()) if args.out.exists() else {}
            result["triton_kill"] = triton_kill(root)
            result["partial_run"] = (
                "fuzz, corrupt_version, concurrent_deploys and open_ports are kept from the "
                "last full run; triton_kill and issue 17's keys were measured by "
                f"'python -m benchmarks.reliability --only-new' on {time.strftime('%Y-%m-%d')}"
            )
        else:
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
        result.update(issue_17(root, result["triton_kill"]))
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
