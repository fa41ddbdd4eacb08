"""Canary and shadow rollouts under continuous load, counting every request.

    .venv/bin/python -m benchmarks.rollout                  # HetRec catalogue, ~5 min
    .venv/bin/python -m benchmarks.rollout --requests 5000  # per scenario (the default)

Versions of the seed network (random weights) are exported over HetRec 2011's vocabulary and
plays; version 1 serves, on a real Triton and gateway. Three scenarios, each of at least
``--requests`` answers from 8 concurrent asyncio clients (``loadtests/async_load.py``):

* ``canary``: version 2 as a 10% canary; new listeners' histories (2,500 of them, each sent
  at least twice) through the gateway; the share of listeners the canary answered, whether
  each listener saw one version, then ``promote`` under the same load.
* ``bad_canary``: a version whose Triton model fails every request (it passes every offline
  check), as a 10% canary with the watcher on; seconds from ``deploy --canary`` to the
  automatic abort, and requests failed at the client.
* ``shadow``: a version as a shadow; the split is switched between 0% and 100% in alternate
  blocks of the same run (``core/traffic_split.py``'s file, read at each gateway poll); p50 with
  shadow minus p50 without, and the versions' overlap@10 and rank correlation from the
  gateway's metrics. The 8 clients are paced at :data:`SHADOW_RATE` requests/s in all, a
  load that leaves the 2 cores room (a shadow call is a second request's work, and on a
  saturated machine it can only take CPU from served requests); ``shadow.saturated`` is the
  same measurement with the clients unpaced.

Triton's runners use one onnxruntime thread each (``MUSICREC_ORT_THREADS=1`` unless set): with
two versions' sessions on 2 cores, sessions using every core spin against each other and a
shadow call then slows served ones (p50 +1.9 ms against +0.9 ms in one comparison).

Each scenario's ``timeline`` holds ``[seconds, answers so far, failures so far]`` every
half second and ``events`` the commands, for plots. Writes benchmarks/results/rollout.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from benchmarks.common import benchmark_arguments, history_requests, random_network
from client import RecommenderClient
from core import traffic_split
from core.console import console
from core.contract import SERVED_MODELS
from core.files import file_digests, repository_lock
from core.paths import HETREC_DIR
from export.repository import export_network
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from serving import canary_watch, gateway_metrics, rollout
from serving.deploy import DeployConfig
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "rollout.json"
CANARY_PERCENT = 10.0
CONCURRENCY = 8
# Requests/s of the shadow scenario: the ranked default costs the gateway ~10-15 ms of CPU a
# request on HetRec, so 20/s keeps its event loop mostly idle, as a served gateway should be.
SHADOW_RATE = 20.0


def _export(root: Path, n: int):
    data = load_hetrec(HETREC_DIR)
    data.vocab.save(root / "vocab")
    repo = root / "model_repository"
    for seed in range(n):
        source = {"source_run": f"benchmark (random weights, seed {seed})"}
        export_network(random_network(*data.matrix.shape, seed=seed), repo,
                       vocab_dir=root / "vocab", plays=data.matrix, provenance=source)  # fmt: skip
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    return repo, data


def _break(repo: Path, version: int) -> None:
    """Make ``version`` fail every inference in Triton, resealed as if exported so."""
    hook = "    def _run(self, joined):\n"
    for name in SERVED_MODELS:
        model_py = repo / name / str(version) / "model.py"
        text = model_py.read_text()
        if hook in text:
            model_py.write_text(text.replace(hook, hook + "        raise RuntimeError('bad')\n"))
        manifest = model_py.parent / "manifest.json"
        data = json.loads(manifest.read_text())
        data["files"] = file_digests(model_py.parent, skip=("manifest.json",))
        manifest.write_text(json.dumps(data))


class Timeline:
    """Samples a load's answers and failures every half second, with named events."""

    def __init__(self, load: AsyncLoad) -> None:
        self.load, self.start = load, time.monotonic()
        self.points: list[list[float]] = []
        self.events: list[list] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.points.append([round(time.monotonic() - self.start, 2), self.load.ok,
                                len(self.load.failures)])  # fmt: skip

    def event(self, name: str) -> None:
        self.events.append([round(time.monotonic() - self.start, 2), name])

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict:
        return {"timeline": self.points, "events": self.events}


def _routed(address: str, histories: list[list[str]], version: int, timeout_s=60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with RecommenderClient(address, timeout_s=30) as client:
        while time.monotonic() < deadline:
            if any(client.recommend(artists=h, k=10).model_version == version
                   for h in histories[:200]):  # fmt: skip
                return
            time.sleep(0.2)
    raise RuntimeError(f"the gateway never answered with version {version}")


def canary(ops: DeployConfig, address: str, histories: list[list[str]], requests: int,
           ids_by_name: dict[str, str]) -> dict:  # fmt: skip
    rollout.start(ops, version=2, canary_percent=CANARY_PERCENT, force=True)
    _routed(address, histories, 2)
    running = traffic_split.read(ops.repository)
    with AsyncLoad(address, [], CONCURRENCY, histories=histories) as load, Timeline(load) as tl:
        tl.event("canary 10%")
        load.wait_for(max(requests, 2 * len(histories) + 4 * CONCURRENCY))
        before = {i: set(v) for i, v in load.seen.items()}  # what each listener saw so far
        tl.event("promote")
        promoted = rollout.promote(ops, force=True)  # the benchmark watches no verdict
        tl.event("promoted")
        load.wait_for(load.ok + 500)
    # the gateways key a history by the artist ids its names resolve to (gateway/rollout.py)
    keys = {i: traffic_split.listener_key(None, [ids_by_name[n] for n in histories[i]])
            for i in before}  # fmt: skip
    hashed = {i for i, key in keys.items() if traffic_split.in_canary(running, key)}
    on_canary = {i for i, v in before.items() if v == {2}}
    observed = len(on_canary) / len(before) * 100
    return {
        "percent": CANARY_PERCENT,
        "requests": load.ok + len(load.failures),
        "failed": len(load.failures),
        "listeners": len(before),
        "observed_share_pct": observed,
        "share_error_pp": abs(observed - CANARY_PERCENT),
        # sticky: one version per listener, and the one its hash names on every gateway
        "sticky": all(len(v) == 1 for v in before.values()) and on_canary == hashed,
        "promote_seconds": promoted.seconds,
        "failures_sample": load.failures[:5],
        **tl.as_dict(),
    }


def bad_canary(ops: DeployConfig, address: str, metrics: str, users: list[str],
               version: int, requests: int) -> dict:  # fmt: skip
    rules = canary_watch.WatchRules(window_s=30, interval_s=1.0, min_requests=30)
    with AsyncLoad(address, users, CONCURRENCY) as load, Timeline(load) as tl:
        load.wait_for(300)
        start = time.monotonic()
        tl.event("canary 10% (failing)")
        rollout.start(ops, version=version, canary_percent=CANARY_PERCENT, force=True)
        result = canary_watch.watch(ops, metrics, rules, duration_s=120)
        aborted_s = time.monotonic() - start
        tl.event("aborted" if result.verdict == "aborted" else result.verdict)
        load.wait_for(max(requests, load.ok + 300))
    return {
        "requests": load.ok + len(load.failures),
        "client_failed": len(load.failures),
        "verdict": result.verdict,
        "reason": result.reason,
        "aborted_s": aborted_s if result.verdict == "aborted" else None,
        "canary_window": result.canary,
        "failures_sample": load.failures[:5],
        **tl.as_dict(),
    }


def _set_shadow(ops: DeployConfig, running: traffic_split.Rollout, percent: float) -> None:
    with repository_lock(ops.repository):
        shadow = traffic_split.Rollout(running.serving, None, 0.0, running.shadow, percent)
        traffic_split.write(ops.repository, shadow)


def shadow(ops: DeployConfig, address: str, metrics: str, users: list[str], version: int,
           requests: int, blocks: int = 8, poll_s: float = 0.2,
           concurrency: int = CONCURRENCY, rate: float | None = None) -> dict:  # fmt: skip
    """Shadow at 0% and 100% in alternate blocks of one run; ``rate``: paced load."""
    before = gateway_metrics.scrape(metrics)[0].get(str(version), gateway_metrics.VersionFigures())
    rollout.start(ops, version=version, shadow_percent=100, force=True)
    running = traffic_split.read(ops.repository)
    with AsyncLoad(address, users, concurrency, rate=rate) as load, Timeline(load) as tl:
        load.wait_for(200)
        lat: dict[float, list[float]] = {0.0: [], 100.0: []}
        per_block = max(200, requests // blocks)
        for b in range(blocks):
            percent = 100.0 if b % 2 else 0.0
            _set_shadow(ops, running, percent)
            tl.event(f"shadow {percent:g}%")
            time.sleep(3 * poll_s)  # every gateway has read it
            first = len(load.latencies)
            load.wait_for(load.ok + per_block)
            lat[percent] += load.latencies[first:]
    time.sleep(1.0)
    after = gateway_metrics.scrape(metrics)[0].get(str(version), gateway_metrics.VersionFigures())
    found = after.minus(before).summary()  # this scenario's shadow calls only
    rollout.abort(ops)
    p50 = {k: float(np.percentile(v, 50) * 1e3) for k, v in lat.items()}
    return {
        "requests": load.ok + len(load.failures),
        "failed": len(load.failures),
        "p50_ms_without": p50[0.0],
        "p50_ms_with": p50[100.0],
        "p50_overhead_ms": p50[100.0] - p50[0.0],
        "p99_ms_without": float(np.percentile(lat[0.0], 99) * 1e3),
        "p99_ms_with": float(np.percentile(lat[100.0], 99) * 1e3),
        "shadow_calls": found.get("shadow", {}),
        "shadow_p50_ms": found.get("shadow_p50_ms"),
        "overlap_at_10": found.get("overlap_at_10"),
        "spearman": found.get("spearman"),
        "kendall": found.get("kendall"),
        **tl.as_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser_args = benchmark_arguments(__doc__, RESULTS, "1,000 requests per scenario", argv)
    os.environ.setdefault("MUSICREC_ORT_THREADS", "1")  # Triton inherits it (see above)
    requests = 1000 if parser_args.quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        repo, data = _export(Path(tmp), 4)  # 1 serves, 2 canary, 3 broken, 4 shadow
        _break(repo, 3)
        names = list(data.vocab.artist_names)
        histories = history_requests(data.matrix, names, 2500, length=10, seed=1)
        users = list(data.vocab.user_ids)
        metrics_port = free_port()
        cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=metrics_port,
                                                backend="cpu", poll_interval_s=0.2),
                          log_dir=Path(tmp) / "logs")  # fmt: skip
        with serving_stack(cfg) as stack:
            ops = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address,
                               admin_key=stack.triton.admin_key)  # fmt: skip
            metrics = f"127.0.0.1:{metrics_port}"
            address = stack.gateway.address
            result = {
                "device": "CPU (2 cores; load generator, gateway and Triton share them)",
                "catalogue": "HetRec 2011 (1,892 users x 17,632 artists), k=10",
                "concurrency": CONCURRENCY,
                # onnxruntime intra-op threads of each Triton runner (export/python_model.py)
                "ort_threads": os.environ.get("MUSICREC_ORT_THREADS", "0 (all cores)"),
                "canary": canary(
                    ops,
                    address,
                    histories,
                    requests,
                    dict(zip(names, data.vocab.artist_ids, strict=True)),
                ),
            }
            console.print(f"canary: {result['canary']['requests']} requests")
            # version 2 serves now; the broken 3 as a canary, then 4 as a shadow
            result["bad_canary"] = bad_canary(ops, address, metrics, users, 3, requests)
            console.print(f"bad canary: {result['bad_canary']['verdict']}")
            result["shadow"] = shadow(ops, address, metrics, users, 4, requests,
                                      rate=SHADOW_RATE)  # fmt: skip
            saturated = shadow(ops, address, metrics, users, 4, requests // 3)
            result["shadow"]["rate"] = SHADOW_RATE
            result["shadow"]["saturated"] = {
                k: v for k, v in saturated.items() if k not in ("timeline", "events")
            }
    parser_args.out.parent.mkdir(parents=True, exist_ok=True)
    parser_args.out.write_text(json.dumps(result, indent=2))
    c, b, s = result["canary"], result["bad_canary"], result["shadow"]
    table = Table(title="Rollouts under load (benchmarks/results/rollout.json)")
    for col in ("key", "value", "target"):
        table.add_column(col)
    for key, value, target in (
        ("canary.requests", f"{c['requests']:,}", "-"),
        ("canary.failed", str(c["failed"]), "0"),
        ("canary.share_error_pp", f"{c['share_error_pp']:.2f}", "<= 2"),
        ("canary.sticky", str(c["sticky"]).lower(), "true"),
        ("bad_canary.requests", f"{b['requests']:,}", "-"),
        ("bad_canary.aborted_s", "-" if b["aborted_s"] is None else f"{b['aborted_s']:.1f}",
         "<= 60"),
        ("bad_canary.client_failed", str(b["client_failed"]), "0"),
        ("shadow.requests", f"{s['requests']:,}", "-"),
        ("shadow.p50_overhead_ms", f"{s['p50_overhead_ms']:.2f}", "<= 1"),
        ("  (unpaced, CPU saturated)", f"{s['saturated']['p50_overhead_ms']:.2f}", "-"),
        ("shadow.overlap_at_10", "-" if s["overlap_at_10"] is None
         else f"{s['overlap_at_10']:.3f}", "reported"),
    ):  # fmt: skip
        table.add_row(key, value, target)
    console.print(table)
    ok = (
        c["failed"] == 0
        and c["share_error_pp"] <= 2
        and c["sticky"]
        and b["aborted_s"] is not None
        and b["aborted_s"] <= 60
        and b["client_failed"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
