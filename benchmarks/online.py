"""Rollouts judged by what listeners do (issue 25 item 5): a replay of HetRec listeners on a
real Triton and gateway, with Feedback.

    .venv/bin/python -m benchmarks.online            # ~14 min on 2 busy cores (8 of them training)
    .venv/bin/python -m benchmarks.online --quick    # fewer listeners a pass, shorter watches
    .venv/bin/python -m benchmarks.online --cache runs/online   # keep the trained versions

Versions (``benchmarks/online_replay/versions.py``): the served default trained on split
seed 0 (6 epochs, the ranker's base settings), the same run exported again (``equal``), its
network without the learned ranker (``network``: stage 1 ranked by the network alone) and a
1-epoch network alone (``weak``). Listeners (``online_replay/replay.py``): every known user
with test plays (by id) and every held-out new listener (by their history's artist ids); each
answer's artists among the listener's held-out plays are PLAYED, the others SKIPPED.

Scenarios (``online_replay/scenarios.py``):

* ``feedback_rpc``: closed-loop Feedback calls (one client) for >= 10 s after a warm-up: p50,
  p99 and the gateway's CPU ms per call (``/proc``).
* ``online_vs_offline_order``: each of default, network and weak serving in turn, every
  listener once: the online hit rate (the gateway's counters; the replay's tally beside it)
  orders the versions as offline NDCG@10 does.
* ``quality_gate``: the ``network`` version as a 50% canary, ``watch`` with
  ``WatchRules(quality_gate=True)`` polling every half second: seconds from ``deploy
  --canary`` to the abort, client failures, every poll (``docs/img/quality_gate.png``); then
  the ``equal`` version as a canary (60 s watch), which must not be aborted. ``ab_worse``:
  the gate's always-valid test after every impression of the same replay (a 50/50 split of
  listeners).
* ``events_sigkill``: a second gateway with ``--events DIR`` (the default 1 s flush) under
  Recommend + Feedback, SIGKILLed: acknowledged events missing from its SQLite segments,
  against what one flush interval holds at the measured rate.
* ``interleave_worse`` / ``interleave_equal``: ``deploy --interleave 100`` of the network
  version (until decided, at most 5,000 interleaved impressions) and of the equal one (10,000)
  against the served default: ``interleaving_test`` after every interleaved impression,
  credited by ``core.interleaving.credit`` from the teams the Feedback attributions name, and
  the gateway's own outcome counters beside it. ``--only-interleave`` runs these alone into
  an existing ``--out``.

Writes benchmarks/results/online.json and docs/img/quality_gate.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from benchmarks.online_replay import plot, scenarios, versions
from benchmarks.online_replay.replay import Listener, Replay, listeners
from core.console import console
from core.contract import SERVED_MODELS
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from serving import canary_watch
from serving.deploy import DeployConfig
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.run import load_run

RESULTS = Path(__file__).parent / "results" / "online.json"
CANARY_PERCENT = 50.0
RULES = canary_watch.WatchRules(window_s=30, interval_s=0.5, min_requests=30, quality_gate=True)
INTERLEAVE_ONLY = (
    "a second run (--only-interleave) on the same trained versions (--cache), "
    "once deploy --interleave was on main; the other keys are the full run's"
)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="600 listeners a pass, 30 s equal-canary watch"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep (and reuse) the trained versions here"
    )
    parser.add_argument(
        "--only-interleave",
        action="store_true",
        help="run the interleaving scenarios alone, into the existing --out",
    )
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _order(target: scenarios.Target, versions_: dict[str, int], people: list[Listener],
           offline: dict[str, versions.Offline]) -> dict:  # fmt: skip
    """Each version serving in turn, every listener once; whether online and offline agree."""
    rows = {}
    known = sum(p.user_id is not None for p in people) / len(people)
    for name in ("default", "network", "weak"):
        o = offline[name]
        rows[name] = {
            **scenarios.online_pass(target, versions_[name], people),
            "offline_ndcg_known": o.ndcg_known,
            "offline_ndcg_new": o.ndcg_new,
            "offline_ndcg_mix": known * o.ndcg_known + (1 - known) * o.ndcg_new,
            "offline_hit_mix": known * o.hit_known + (1 - known) * o.hit_new,
        }
    scenarios.serve(target, versions_["default"], people)
    online = sorted(rows, key=lambda n: rows[n]["gateway_hit_rate"], reverse=True)
    off = sorted(rows, key=lambda n: rows[n]["offline_ndcg_mix"], reverse=True)
    return {"same_order": online == off, "online_order": online, "offline_order": off,
            "known_share": known, "versions": rows}  # fmt: skip


def _timeline(gate: dict) -> list[dict]:
    return [{"t": round(gate["canary_loaded_s"] + p["t"], 2),
             "canary_hit_rate": p["quality"].get("canary_hit_rate"),
             "serving_hit_rate": p["quality"].get("serving_hit_rate"),
             "decision": p["quality"].get("decision"),
             "confidence": p["quality"].get("confidence"),
             "canary_window_requests": p["canary"].get("requests")}
            for p in gate["polls"]]  # fmt: skip


def _quality(target: scenarios.Target, v: dict[str, int], people: list[Listener],
             equal_s: float) -> tuple[dict, dict]:  # fmt: skip
    """The worse canary (and ab_worse from its replay), then the equal one."""
    worse = scenarios.quality_canary(target, v["network"], people, CANARY_PERCENT, 150, RULES)
    decided, last = scenarios.sequential_ab(worse.pop("stream"), v["network"], v["default"],
                                            RULES.quality)  # fmt: skip
    equal = scenarios.quality_canary(target, v["equal"], people, CANARY_PERCENT, equal_s, RULES)
    equal.pop("stream")
    gate = {"worse_canary_aborted_s": worse["aborted_s"], "client_failed":
            worse["client_failed"] + equal["client_failed"], "verdict": worse["verdict"],
            "reason": worse["reason"], "canary_version": worse["version"],
            "serving_version": worse["serving"], "percent": CANARY_PERCENT,
            "alpha": RULES.quality_alpha, "canary_loaded_s": worse["canary_loaded_s"],
            "impressions": worse["impressions"], "replay_by_version": worse["replay_by_version"],
            "quality": worse["quality"], "timeline": _timeline(worse),
            "replay_series": worse["replay_series"],
            "equal_canary_verdict": equal["verdict"],
            "equal_canary": {k: equal[k] for k in ("version", "verdict", "reason", "watch_s",
                                                   "impressions", "client_failed", "quality",
                                                   "replay_by_version")}}  # fmt: skip
    ab = {"decided_after_impressions": decided, "decision": last.decision if last else None,
          "how": "proportions_test after every impression of the worse canary's replay "
                 "(50/50 split of listeners by the canary's sticky hash), from the canary's "
                 "load on; the watcher polls the gateway's counts every half second"}  # fmt: skip
    return gate, ab


def run(args: argparse.Namespace, root: Path) -> dict:
    cache = args.cache or root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run_dir, split, offline = versions.train(cache)
    trained_s = time.monotonic() - t0
    repo = root / "model_repository"
    v = versions.export_all(run_dir, cache, repo, offline)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[v["default"]])
    people = listeners(split, load_run(run_dir).vocab)
    per_pass = people[:600] if args.quick else people
    gateway = GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu",
                            poll_interval_s=0.2)  # fmt: skip
    cfg = StackConfig(repo, free_port(), free_port(), free_port(), gateway=gateway,
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as stack:
        ops = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address, keep=10,
                           admin_key=stack.triton.admin_key)  # fmt: skip
        target = scenarios.Target(ops, stack.gateway.address, f"127.0.0.1:{gateway.metrics_port}",
                                  stack.gateway.process.pid)  # fmt: skip
        with Replay(target.address, people, scenarios.CONCURRENCY) as warm:
            warm.wait_for(300)  # warm-up: nothing measured
        result: dict = {"feedback_rpc": scenarios.feedback_latency(target, people)}
        console.print(f"feedback p50 {result['feedback_rpc']['p50_ms']:.2f} ms")
        result["order"] = _order(target, v, per_pass, offline)
        console.print(f"order: {result['order']['online_order']}")
        result["quality_gate"], result["ab_worse"] = _quality(
            target, v, people, 30 if args.quick else 60
        )
        console.print(f"quality gate: {result['quality_gate']['verdict']}")
        result.update(_interleaving(target, v, people))
        result["events_sigkill"] = scenarios.sigkill_events(stack.gateway.config, people, root)
    result["versions"] = {name: {"version": v[name], **offline[name].__dict__,
                                 "what": versions.WHAT[name]} for name in v}  # fmt: skip
    result["train_s"] = trained_s
    return result


def _interleaving(target: scenarios.Target, v: dict[str, int], people: list[Listener]) -> dict:
    """The served default against the worse version (until decided, at most 5,000 interleaved
    impressions) and against the equal one (10,000)."""
    worse = scenarios.interleave(target, v["network"], people, 5000, stop_on_decision=True)
    equal = scenarios.interleave(target, v["equal"], people, 10_000)
    return {"interleave_worse": worse, "interleave_equal": equal}


def interleave_only(args: argparse.Namespace, root: Path) -> dict:
    """Train (or read the cache), export, start the stack and run the interleaving alone."""
    run_dir, split, offline = versions.train(args.cache or root / "cache")
    repo = root / "model_repository"
    v = versions.export_all(run_dir, args.cache or root / "cache", repo, offline)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[v["default"]])
    people = listeners(split, load_run(run_dir).vocab)
    gateway = GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu",
                            poll_interval_s=0.2)  # fmt: skip
    cfg = StackConfig(repo, free_port(), free_port(), free_port(), gateway=gateway,
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as stack:
        ops = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address, keep=10,
                           admin_key=stack.triton.admin_key)  # fmt: skip
        target = scenarios.Target(ops, stack.gateway.address, f"127.0.0.1:{gateway.metrics_port}",
                                  stack.gateway.process.pid)  # fmt: skip
        with Replay(target.address, people, scenarios.CONCURRENCY) as warm:
            warm.wait_for(300)  # warm-up: nothing measured
        return _interleaving(target, v, people)


def _summary(r: dict, runtime_s: float) -> dict:
    """The issue's keys first, then the details."""
    fb, ev, gate = r["feedback_rpc"], r["events_sigkill"], r["quality_gate"]
    return {
        "device": "CPU (2 cores shared by the replay, the gateway and Triton)",
        "catalogue": "HetRec 2011 Last.fm (split seed 0), k=10",
        "interleave_worse": r["interleave_worse"],
        "ab_worse": r["ab_worse"],
        "interleave_equal": r["interleave_equal"],
        "quality_gate": gate,
        "online_vs_offline_order": r["order"]["same_order"],
        "feedback_rpc_p50_ms": fb["p50_ms"],
        "events_lost_after_sigkill": ev["lost"],
        "events_flush_bound": ev["bound"],
        "order": r["order"], "feedback_rpc": fb, "events_sigkill": ev,
        "versions": r["versions"], "train_s": r["train_s"], "runtime_s": runtime_s,
    }  # fmt: skip


def _fmt(x: object) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return str(x).lower()
    return f"{x:,.2f}" if isinstance(x, float) else str(x)


def _table(s: dict) -> Table:
    gate = s["quality_gate"]
    table = Table(title="Judged by listeners (benchmarks/results/online.json)")
    for col in ("key", "value", "target"):
        table.add_column(col)
    for key, value, target in (
        ("interleave_worse.decided_after_impressions",
         s["interleave_worse"]["decided_after_impressions"], "<= 5,000"),
        ("interleave_worse.decision", s["interleave_worse"]["decision"], "worse"),
        ("ab_worse.decided_after_impressions", s["ab_worse"]["decided_after_impressions"],
         "reported"),
        ("interleave_equal.decision", s["interleave_equal"]["decision"], "not yet"),
        ("quality_gate.worse_canary_aborted_s", gate["worse_canary_aborted_s"], "<= 120"),
        ("quality_gate.verdict", gate["verdict"], "aborted"),
        ("quality_gate.client_failed", gate["client_failed"], "0"),
        ("quality_gate.equal_canary_verdict", gate["equal_canary_verdict"], "not aborted"),
        ("online_vs_offline_order", s["online_vs_offline_order"], "true"),
        ("feedback_rpc_p50_ms", s["feedback_rpc_p50_ms"], "reported"),
        ("events_lost_after_sigkill", s["events_lost_after_sigkill"], "<= bound"),
        ("events_flush_bound", s["events_flush_bound"], "reported"),
    ):  # fmt: skip
        table.add_row(key, _fmt(value), target)
    return table


def _met(s: dict) -> bool:
    gate, worse = s["quality_gate"], s["interleave_worse"]
    aborted, decided = gate["worse_canary_aborted_s"], worse["decided_after_impressions"]
    return (aborted is not None and aborted <= 120 and gate["client_failed"] == 0
            and gate["equal_canary_verdict"] != "aborted" and s["online_vs_offline_order"]
            and s["events_lost_after_sigkill"] <= s["events_flush_bound"]
            and worse["decision"] == "worse" and decided is not None and decided <= 5000
            and s["interleave_equal"]["decision"] not in ("better", "worse"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    os.environ.setdefault("MUSICREC_ORT_THREADS", "1")  # as benchmarks/rollout.py: 2 versions
    start = time.monotonic()
    if args.only_interleave:
        with tempfile.TemporaryDirectory() as tmp:
            found = interleave_only(args, Path(tmp))
        summary = {**json.loads(args.out.read_text()), **found}
        summary["interleave_runtime_s"] = time.monotonic() - start
        summary["interleave_from"] = INTERLEAVE_ONLY
        args.out.write_text(json.dumps(summary, indent=2))
        console.print(_table(summary))
        return 0 if _met(summary) else 1
    with tempfile.TemporaryDirectory() as tmp:
        raw = run(args, Path(tmp))
    summary = _summary(raw, time.monotonic() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    plot.draw(summary["quality_gate"])
    console.print(_table(summary))
    return 0 if _met(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
