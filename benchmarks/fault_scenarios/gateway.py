"""The gateway's side of a rollout at its edges (issue 23 items 1, 5, 7, 8, 11, 12, 14, 16, 19,
20), on real processes: one Triton serving version 1 and a canary, version 2 (version 3, its
manifest's checksums removed, is loaded late), one gateway (metrics on, a fine event-loop probe)
shared by the scenarios, and further gateways started with the ``musicrec gateway`` verb.

Faults are switched per version by a file (``<workdir>/faults/<version>``) that a hook in the
version's ``model.py`` reads on every Triton call: ``fail`` raises, ``hold`` waits while the
file exists, a number sleeps that many seconds.

* ``big_request``: the longest event-loop stall while 10,000-item / 4 MiB histories are checked.
* ``full_catalogue_history``: a 10,000-item history playing every artist: explained, not empty.
* ``listed_users``: every user of the version's ``vocab/users.json`` gets an answer.
* ``sticky``: 300 listeners by ids, by names, by padded and NFD names: one side of the split.
* ``corrupt_split_at_start``: a gateway started on a half-written ``.rollout.json``.
* ``health_per_mode``: a model outside the default mode unloaded; a running and a new gateway.
* ``deadline``: no caller deadline, canary and serving stalled: the RPC within the budget.
* ``dead_canary``: a canary failing every call under load: its breaker, the log's rate.
* ``manifest_without_checksums``: a version whose manifest lost its ``files`` block.
* ``slow_canary``: a canary slower than the callers' deadline, the watcher on (aborts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import tritonclient.grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import AsyncRecommenderClient, RecommenderClient, RecommenderError
from core import traffic_split
from core.contract import ARTIFACT_MODEL, MANIFEST, SERVED_MODELS
from core.files import file_digests
from export.repository import export_run
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from gateway.workers import flags
from loadtests.async_load import AsyncLoad
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.deploy import DeployConfig
from serving.gateway_process import GatewayProcess
from serving.processes import free_port
from serving.stack import Stack, StackConfig, serving_stack
from training.run import load_run

ROOT = Path(__file__).resolve().parents[2]
SERVING, CANARY, UNSEALED = 1, 2, 3
TRITON_TIMEOUT_S = 2.0  # the shared gateway's --triton-timeout-s
SERVICE = "musicrec.v1.Recommender"
HOOK = "    def _run(self, joined):\n"
FAULT = """        try:
            how = open({path!r}).read().strip()
        except OSError:
            how = ""
        if how == "fail":
            raise RuntimeError("a failing version (fault file)")
        while how == "hold" and os.path.exists({path!r}):
            __import__("time").sleep(0.02)
        if how and how not in ("fail", "hold"):
            __import__("time").sleep(float(how))
"""


class VerbGateway(GatewayProcess):
    """A gateway started as ``musicrec gateway`` (the verb beside ``musicrec-gateway``)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app", "gateway", *flags(self.config)]


@dataclass
class Bench:
    """The shared processes and what every scenario needs of them."""

    stack: Stack
    cfg: DeployConfig
    metrics_port: int
    workdir: Path
    users: list[str]
    silent: list[str]  # listed in users.json, no plays
    histories: list[list[int]]  # artist columns
    ids: tuple[str, ...]
    names: tuple[str, ...]
    client_failed: int = 0
    loads: list[AsyncLoad] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.stack.gateway.address

    @property
    def log(self) -> Path:
        return self.stack.gateway.json_log

    def fault(self, version: int, how: str | None) -> None:
        path = self.workdir / "faults" / str(version)
        if how is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(how)

    def split(self, percent: float) -> None:
        rollout = traffic_split.Rollout(serving=SERVING, canary=CANARY, percent=percent)
        traffic_split.write(self.cfg.repository, rollout)

    def gateway(self, name: str, **changes) -> VerbGateway:
        """A further gateway on the same Triton, started with ``musicrec gateway``."""
        config = replace(self.stack.gateway.config, port=free_port(), metrics_port=free_port(),
                         **changes)  # fmt: skip
        return VerbGateway(config, log_file=self.workdir / "logs" / f"{name}.log")


# ---------------------------------------------------------------- helpers


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else ():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """The summed value of ``name`` samples whose labels include ``labels``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for match in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(match.group(2))
    return total


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _routes(bench: Bench, percent: float, port: int | None = None) -> None:
    """Wait until the gateway reports routing ``percent`` to the canary (a few requests go
    through meanwhile, so that a breaker left open by a scenario before closes)."""
    port = port or bench.metrics_port
    labels = {"role": "canary", "version": str(CANARY)}

    def routed() -> bool:
        with contextlib.suppress(RecommenderError), RecommenderClient(bench.address) as client:
            for user in bench.users[:20]:
                client.recommend(user, k=3)
        return _metric(port, "musicrec_gateway_rollout_percent", labels) == percent

    _wait(routed, 60, f"the gateway to route {percent}% to the canary")


def _health(address: str, service: str = "") -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _versions(address: str, requests: list[dict], timeout_s: float = 10) -> list[int | str]:
    """The version answering each request (its status code's name when it fails)."""
    out: list[int | str] = []
    with RecommenderClient(address, timeout_s=timeout_s) as client:
        for request in requests:
            try:
                out.append(client.recommend(**request, k=3).model_version)
            except RecommenderError as exc:
                out.append(exc.code.name)
    return out


def _scenario(results: dict, name: str, run: Callable[[], dict]) -> None:
    """Run one scenario; a failure is recorded as its value, never raised."""
    start = time.monotonic()
    try:
        results[name] = run()
    except Exception as exc:  # recorded, so the other scenarios still run
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    results[name]["gateway_s"] = round(time.monotonic() - start, 1)


# ---------------------------------------------------------------- the repository


def _hook(repo: Path, version: int, fault: Path) -> None:
    """Every model of ``version`` reads ``fault`` on each call; the seals are renewed."""
    for name in SERVED_MODELS:
        model_py = repo / name / str(version) / "model.py"
        text = model_py.read_text()
        if HOOK in text:
            model_py.write_text(text.replace(HOOK, HOOK + FAULT.format(path=str(fault))))
        manifest = model_py.parent / MANIFEST
        data = json.loads(manifest.read_text())
        data["files"] = file_digests(model_py.parent, skip=(MANIFEST,))
        manifest.write_text(json.dumps(data))


def _unseal(repo: Path, version: int) -> None:
    """Drop the ``files`` block (the checksums) of ``version``'s gateway manifest."""
    manifest = repo / ARTIFACT_MODEL / str(version) / MANIFEST
    data = json.loads(manifest.read_text())
    data.pop("files", None)
    manifest.write_text(json.dumps(data))


def _repository(run_dir: Path, workdir: Path) -> Path:
    repo = workdir / "model_repository"
    if repo.exists():
        shutil.rmtree(repo)
    for _ in (SERVING, CANARY, UNSEALED):
        export_run(run_dir, repo)
    (workdir / "faults").mkdir(parents=True, exist_ok=True)
    for version in (SERVING, CANARY):
        _hook(repo, version, workdir / "faults" / str(version))
    _unseal(repo, UNSEALED)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[SERVING, CANARY])
    traffic_split.write(repo, traffic_split.Rollout(SERVING, CANARY, 0.0))
    return repo


# ---------------------------------------------------------------- scenarios


def _stall(bench: Bench, stub, probe, request: pb.RecommendRequest) -> tuple[float, float, list]:
    """The longest loop stall and busy stretch the gateway's probe saw while ``request`` was
    answered (health checks sent meanwhile: their latencies)."""
    time.sleep(2.5)  # the probe's two windows (1 s each) forget earlier stalls
    call = stub.Recommend.future(request, timeout=30)
    health_ms = []
    while not call.done():
        start = time.perf_counter()
        probe.Check(health_pb2.HealthCheckRequest(), timeout=5)
        health_ms.append((time.perf_counter() - start) * 1e3)
    call.result()
    port = bench.metrics_port
    return (_metric(port, "musicrec_gateway_event_loop_lag_max_seconds"),
            _metric(port, "musicrec_gateway_event_loop_busy_max_seconds"), health_ms)  # fmt: skip


def big_request(bench: Bench) -> dict:
    """Histories of 10,000 long unknown names (4 MiB): the longest loop stall while they are
    checked (read from the gateway's loop-lag probe), the longest stretch of code on the loop,
    and the same for a small request (what the host's load alone costs); health keeps
    answering meanwhile."""
    name = "x" * 396
    items = [pb.ArtistPlay(name=f"{name}{i:04d}") for i in range(10_000)]
    request = pb.RecommendRequest(history=pb.History(items=items), k=5)
    small = pb.RecommendRequest(user_id=bench.users[0], k=5)
    stalls, busy, baseline, health_ms = [], [], [], []
    options = [("grpc.max_send_message_length", 8 << 20)]
    with grpc.insecure_channel(bench.address, options=options) as channel:
        stub, probe = pb_grpc.RecommenderStub(channel), health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            stall, on_loop, health = _stall(bench, stub, probe, request)
            stalls.append(stall)
            busy.append(on_loop)
            health_ms += health
            baseline.append(_stall(bench, stub, probe, small)[0])
    return {"loop_stall_ms": round(max(stalls) * 1e3, 2), "request_bytes": request.ByteSize(),
            "items": len(items), "baseline_stall_ms": round(max(baseline) * 1e3, 2),
            "loop_busy_ms": round(max(busy) * 1e3, 2),
            "health_max_ms": round(max(health_ms, default=0), 2)}  # fmt: skip


def full_catalogue_history(bench: Bench) -> dict:
    """10,000 items naming every artist of the catalogue: all played, nothing to recommend;
    the answer must say so (or fall back) rather than be silently empty."""
    ids = bench.ids
    items = [pb.ArtistPlay(id=ids[i % len(ids)]) for i in range(10_000)]
    request = pb.RecommendRequest(history=pb.History(items=items), k=10)
    with grpc.insecure_channel(bench.address) as channel:
        reply = pb_grpc.RecommenderStub(channel).Recommend(request, timeout=30)
    explained = reply.all_played or reply.fallback != pb.FALLBACK_NONE
    fallback = pb.Fallback.Name(reply.fallback)
    with RecommenderClient(bench.address) as client:  # the client library carries it too
        client_sees = client.recommend(artist_ids=list(ids), k=10).all_played
    return {"explained": bool(explained), "artists": len(reply.artists),
            "all_played": reply.all_played, "fallback": fallback,
            "client_sees_all_played": client_sees}  # fmt: skip


def listed_users(bench: Bench) -> dict:
    """Users the version's users.json lists without plays answered NOT_FOUND; each gets the
    popularity fallback now (strict: INVALID_ARGUMENT)."""
    answers = _versions(bench.address, [{"user_id": u} for u in bench.silent])
    with RecommenderClient(bench.address) as client:
        fallback = all(client.recommend(u, k=3).popularity_fallback for u in bench.silent[:5])
    return {"listed_without_plays": len(bench.silent),
            "not_found": sum(a == "NOT_FOUND" for a in answers), "fallback": fallback}  # fmt: skip


def _forms(bench: Bench, history: list[int]) -> list[dict]:
    ids, names = bench.ids, bench.names
    return [
        {"artist_ids": [ids[a] for a in history]},
        {"artists": [names[a] for a in history]},
        {"artists": [f"  {unicodedata.normalize('NFD', names[a]).upper()} " for a in history]},
    ]


def sticky(bench: Bench) -> dict:
    """The canary at 50%: each listener sent by ids, by names, and by padded, upper-cased NFD
    names lands on one side."""
    bench.split(50.0)
    _routes(bench, 50.0)
    mismatch, on_canary, failed = 0, 0, 0
    for history in bench.histories:
        seen = _versions(bench.address, _forms(bench, history))
        failed += sum(isinstance(v, str) for v in seen)
        mismatch += len(set(seen)) > 1
        on_canary += seen[0] == CANARY
    bench.client_failed += failed
    return {"id_vs_name_mismatch": mismatch, "listeners": len(bench.histories),
            "on_canary": on_canary, "failed": failed}  # fmt: skip


def corrupt_split_at_start(bench: Bench) -> dict:
    """The canary at 50%, its split cut in half; a gateway started on it (``musicrec gateway``)
    and the running one: canary answers, the gauge, health's log."""
    bench.split(50.0)
    path = bench.cfg.repository / traffic_split.ROLLOUT_FILE
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    requests = [{"artist_ids": [bench.ids[a] for a in h]} for h in bench.histories[:150]]
    requests += [{"user_id": u} for u in bench.users[:100]]
    fresh = bench.gateway("corrupt-start")
    try:
        fresh.start()
        answers = _versions(fresh.address, requests)
        later = _versions(bench.address, requests)
        gauge = _metric(fresh.config.metrics_port, "musicrec_gateway_rollout_error")
        logged = any(r.get("msg") == "health" and "rollout_error" in r
                     for r in _records(fresh.json_log))  # fmt: skip
        health = _health(fresh.address)
    finally:
        fresh.stop()
        bench.split(0.0)
    bench.client_failed += sum(isinstance(v, str) for v in answers + later)
    return {"canary_answers": sum(v == CANARY for v in answers),
            "later_canary_answers": sum(v == CANARY for v in later),
            "served": sorted({v for v in answers if isinstance(v, int)}), "health": health,
            "rollout_error_gauge": gauge, "health_log_names_it": logged,
            "failed": sum(isinstance(v, str) for v in answers + later)}  # fmt: skip


def health_per_mode(bench: Bench) -> dict:
    """``pair_scorer`` (only the pairwise mode's) unloaded: the running gateway and one
    started now agree: ranked SERVING, pairwise NOT_SERVING, the same model named."""
    triton = tritonclient.grpc.InferenceServerClient(bench.stack.triton.grpc_url)
    headers = bench.stack.triton.admin_headers
    triton.unload_model("pair_scorer", headers=headers)
    fresh = bench.gateway("after-break")
    try:
        time.sleep(1.0)  # the running gateway's polls see it
        fresh.start(wait_for="ANY")  # it must come to SERVING by itself
        with contextlib.suppress(TimeoutError):
            _wait(lambda: _health(fresh.address) == "SERVING", 10, "the new gateway")
        out = {}
        for label, gw in (("running", bench.stack.gateway), ("new", fresh)):
            out[label] = {
                "default": _health(gw.address), "ranked": _health(gw.address, f"{SERVICE}/ranked"),
                "pairwise": _health(gw.address, f"{SERVICE}/pairwise"),
                "ranked_answers": sum(isinstance(v, int) for v in _versions(
                    gw.address, [{"user_id": u} for u in bench.users[:10]])),
                "not_ready": next((r.get("not_ready") for r in reversed(_records(gw.json_log))
                                   if r.get("msg") == "health"), None),
            }  # fmt: skip
    finally:
        fresh.stop()
        triton.load_model("pair_scorer", headers=headers)
        triton.close()
    running, new = out["running"], out["new"]
    out["agree"] = running == new
    out["ranked_serving"] = running["ranked"] == new["ranked"] == "SERVING"
    return out


def deadline(bench: Bench) -> dict:
    """No caller deadline, every answer routed to the canary, both versions holding in
    Triton: the whole RPC (canary attempt and its retry) within ``--triton-timeout-s``."""
    bench.split(100.0)
    _routes(bench, 100.0)
    bench.fault(SERVING, "hold")
    bench.fault(CANARY, "hold")
    try:
        with grpc.insecure_channel(bench.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            start = time.monotonic()
            try:
                stub.Recommend(pb.RecommendRequest(user_id=bench.users[0], k=3))  # no deadline
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            rpc_s = time.monotonic() - start
    finally:
        bench.fault(SERVING, None)
        bench.fault(CANARY, None)
        bench.split(0.0)
    _versions(bench.address, [{"user_id": u} for u in bench.users[:5]], timeout_s=30)
    return {"attempts_bounded": rpc_s <= TRITON_TIMEOUT_S * 1.1, "rpc_s": round(rpc_s, 3),
            "limit_s": TRITON_TIMEOUT_S, "code": code}  # fmt: skip


def dead_canary(bench: Bench) -> dict:
    """The canary at 50% failing every call, under load for 8 s: the log's warnings per
    second, the breaker's trips and what the clients saw."""
    bench.split(50.0)
    _routes(bench, 50.0)
    labels = {"version": str(CANARY)}
    trips0 = _metric(bench.metrics_port, "musicrec_gateway_canary_breaker_trips_total", labels)
    bench.fault(CANARY, "fail")
    begin = time.time()
    load = AsyncLoad(bench.address, bench.users, 4)
    bench.loads.append(load)
    try:
        with load:
            time.sleep(8.0)
    finally:
        bench.fault(CANARY, None)
    window = time.time() - begin
    warnings = [r for r in _records(bench.log) if r.get("level") == "warning"
                and "canary" in r.get("msg", "") and _after(r, begin)]  # fmt: skip
    trips = _metric(bench.metrics_port, "musicrec_gateway_canary_breaker_trips_total", labels)
    diverted = _metric(bench.metrics_port, "musicrec_gateway_canary_diverted_total", labels)
    bench.split(0.0)
    return {"warnings_per_s": round(len(warnings) / window, 2), "warnings": len(warnings),
            "breaker_trips": trips - trips0, "diverted": diverted, "requests": load.ok,
            "failed": len(load.failures)}  # fmt: skip


def _after(record: dict, begin: float) -> bool:
    """Whether a JSON log record was written after ``begin`` (time.time())."""
    stamp = record.get("ts", "")
    with contextlib.suppress(ValueError):
        from datetime import datetime

        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() >= begin
    return False


def manifest_without_checksums(bench: Bench) -> dict:
    """Version 3, whose manifest has no checksums, loaded in Triton beside the rollout's two:
    the gateway never answers with it, says why in its log, and keeps serving."""
    repo = bench.cfg.repository
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[SERVING, CANARY, UNSEALED])
    triton = tritonclient.grpc.InferenceServerClient(bench.stack.triton.grpc_url)
    try:
        for name in SERVED_MODELS:
            triton.load_model(name, headers=bench.stack.triton.admin_headers)
        _wait(lambda: all(triton.is_model_ready(m, str(UNSEALED)) for m in SERVED_MODELS),
              60, "version 3 in Triton")  # fmt: skip
    finally:
        triton.close()
    time.sleep(1.5)  # a few polls: the gateway tries to load it
    answers = _versions(bench.address, [{"user_id": u} for u in bench.users[:60]])
    logged = [r.get("msg", "") for r in _records(bench.log) if r.get("version") == UNSEALED
              and r.get("level") == "error"]  # fmt: skip
    bench.client_failed += sum(isinstance(v, str) for v in answers)
    with RecommenderClient(bench.address) as client:
        serving = client.serving_info().model_version
    return {"served": UNSEALED in answers, "serving": serving, "health": _health(bench.address),
            "load_errors_logged": len(logged), "cause": _cause(bench.log)}  # fmt: skip


def _cause(log: Path) -> str:
    for record in reversed(_records(log)):
        if "cannot load model version 3" in record.get("msg", ""):
            return record["msg"]
    return ""


class DeadlineLoad:
    """Clients with a tight deadline (``timeout_s``), as fast as answered, in a thread."""

    def __init__(self, address: str, users: list[str], timeout_s: float, concurrency: int = 4):
        self.address, self.users, self.timeout_s = address, users, timeout_s
        self.concurrency, self.ok, self.failures = concurrency, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with AsyncRecommenderClient(self.address, timeout_s=self.timeout_s) as client:

            async def worker(w: int) -> None:
                i = w
                while not self._stop.is_set():
                    try:
                        await client.recommend(self.users[i % len(self.users)], k=5)
                        self.ok += 1
                    except RecommenderError as exc:
                        self.failures.append(exc.code.name)
                    i += self.concurrency

            await asyncio.gather(*(worker(w) for w in range(self.concurrency)))

    def __enter__(self) -> DeadlineLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _by_code(port: int, version: int, codes: tuple[str, ...]) -> float:
    return sum(_metric(port, "musicrec_gateway_requests_by_version_total",
                       {"version": str(version), "code": c}) for c in codes)  # fmt: skip


def slow_canary(bench: Bench) -> dict:
    """The canary at 30% answering in 1.5 s, clients with a 1 s deadline, the watcher on
    (``serving.canary_watch.watch``): whose the deadline failures are, and the verdict."""
    from serving.canary_watch import WatchRules, watch

    bench.split(30.0)
    _routes(bench, 30.0)
    port, late = bench.metrics_port, ("DEADLINE_EXCEEDED", "CANCELLED")
    before = {v: _by_code(port, v, late) for v in (SERVING, CANARY)}
    bench.fault(CANARY, "1.5")
    metrics = f"127.0.0.1:{port}"
    rules = WatchRules(window_s=10, interval_s=0.5, min_requests=10)
    try:
        with DeadlineLoad(bench.address, bench.users, timeout_s=1.0) as load:
            result = watch(bench.cfg, metrics, rules, duration_s=45)
            time.sleep(1.0)
    finally:
        bench.fault(CANARY, None)
    after = {v: _by_code(port, v, late) for v in (SERVING, CANARY)}
    charged = {v: after[v] - before[v] for v in after}
    to = "canary" if charged[CANARY] > 0 and charged[SERVING] == 0 else (
        "serving" if charged[SERVING] > 0 else "none")  # fmt: skip
    bench.client_failed += len(load.failures)
    return {"charged_to": to, "aborted": result.verdict == "aborted", "verdict": result.verdict,
            "reason": result.reason, "canary_late": charged[CANARY],
            "serving_late": charged[SERVING], "requests": load.ok,
            "failed": len(load.failures)}  # fmt: skip


# ---------------------------------------------------------------- the run


def _bench(stack: Stack, repo: Path, run_dir: Path, workdir: Path, metrics_port: int) -> Bench:
    run = load_run(run_dir)
    plays = run.plays
    users = [u for i, u in enumerate(run.vocab.user_ids) if plays[i].nnz]
    silent = [u for i, u in enumerate(run.vocab.user_ids) if not plays[i].nnz]
    histories = [[(7 * i + j * 31) % run.vocab.n_artists for j in range(5)] for i in range(300)]
    cfg = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address,
                       admin_key=stack.triton.admin_key)  # fmt: skip
    return Bench(stack, cfg, metrics_port, workdir, users, silent, histories,
                 run.vocab.artist_ids, run.vocab.artist_names)  # fmt: skip


SCENARIOS: tuple[Callable[[Bench], dict], ...] = (
    big_request, full_catalogue_history, listed_users, sticky, corrupt_split_at_start,
    health_per_mode, deadline, dead_canary, manifest_without_checksums, slow_canary,
)  # fmt: skip


def run_all(run_dir: Path, workdir: Path) -> dict[str, dict]:
    """Start Triton and a gateway on ``run_dir``'s exports in ``workdir``, run every scenario
    (the slow canary, which the watcher aborts, last) and return their figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    repo = _repository(run_dir, workdir)
    metrics_port = free_port()
    gateway = GatewayConfig(port=free_port(), metrics_port=metrics_port, backend="cpu",
                            poll_interval_s=0.2, triton_timeout_s=TRITON_TIMEOUT_S,
                            loop_probe_s=0.002, loop_probe_window_s=1.0)  # fmt: skip
    cfg = StackConfig(repo, free_port(), free_port(), free_port(), gateway=gateway,
                      log_dir=workdir / "logs")  # fmt: skip
    results: dict[str, dict] = {}
    with serving_stack(cfg) as stack:
        bench = _bench(stack, repo, run_dir, workdir, metrics_port)
        for scenario in SCENARIOS:
            _scenario(results, scenario.__name__, lambda s=scenario: s(bench))
    failed = bench.client_failed + sum(len(load.failures) for load in bench.loads)
    results["client_failed"] = {"count": failed}
    return results


if __name__ == "__main__":  # a quick look: python -m benchmarks.fault_scenarios.gateway RUN DIR
    print(json.dumps(run_all(Path(sys.argv[1]), Path(sys.argv[2])), indent=2, default=str))
    os._exit(0)
