"""The control side of a rollout at its edges (issue 23 items 2-4, 6, 7, 10, 13), on real
processes: one Triton and one gateway (metrics on) shared by every scenario, a second gateway
for the counter reset, the ``musicrec`` command in a child process (its real exit codes),
and a paced client on the first gateway throughout (``client_failed``: its failures and every
other load's).

* ``canary_zero``: ``deploy --canary 0`` is refused; nothing changes.
* ``watch_without_metrics``: ``deploy --canary 10 --watch 5`` without ``--gateway-metrics`` is
  refused before the canary starts.
* ``corrupt_split_at_start``: a canary's ``.rollout.json`` cut in half; ``status`` prints the
  error, ``deploy abort`` clears it and the serving version alone answers.
* ``blind_watcher``: a watcher whose metrics target answers nothing: "inconclusive", exit 2.
* ``promote_without_verdict``: refused (API and command line); the canary keeps running.
* ``counter_reset``: the second gateway restarts mid-window; no false abort, the reset is
  counted, the verdict "healthy", then ``promote`` goes through on it; ``status`` figures are
  this rollout's window, per gateway.
* ``abort_settle``: abort with ``--gateway-metrics`` waits on the gateways' reported split.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from client import RecommenderClient
from core import traffic_split
from core.contract import SERVED_MODELS
from export.repository import export_run
from export.triton_config import serving_policy, write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from serving import admin_key, canary_watch, rollout
from serving.deploy import DeployConfig, DeployError
from serving.gateway_process import GatewayProcess
from serving.processes import free_port
from serving.stack import Stack, StackConfig, serving_stack
from training.run import load_run

ROOT = Path(__file__).resolve().parents[2]
BACKGROUND_RATE = 20.0  # requests/s on the first gateway for the whole run


# A child that imports the command once (it pulls in TensorFlow: ~10 s on a busy machine) and
# runs each JSON line it reads ({"argv", "env"}) as `musicrec argv`, answering [exit code,
# output]. Started before the stack, so the import overlaps Triton's start.
_COMMAND_CHILD = """
import contextlib, io, json, os, sys
from app.main import main
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    os.environ.update(call["env"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main(call["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    print(json.dumps([code, buf.getvalue()]), flush=True)
"""


class Commands:
    """``musicrec`` in one child process: each call is the command's real exit code and output."""

    def __init__(self) -> None:
        env = dict(os.environ, COLUMNS="400")  # one line per message
        self.proc = subprocess.Popen([sys.executable, "-c", _COMMAND_CHILD], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.ready = False

    def run(self, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        """``musicrec argv`` with ``env`` set."""
        assert self.proc.stdin and self.proc.stdout
        if not self.ready:
            self.ready = json.loads(self.proc.stdout.readline()) == "ready"
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
        self.proc.stdin.flush()
        code, out = json.loads(self.proc.stdout.readline())
        return code, out

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Bench:
    """The shared processes and what every scenario needs of them."""

    cfg: DeployConfig
    stack: Stack
    metrics: str  # the first gateway's metrics endpoint
    users: list[str]
    workdir: Path
    commands: Commands
    loads: list[AsyncLoad] = field(default_factory=list)

    def cli(self, *argv: str) -> tuple[int, str]:
        """``musicrec argv --repository … --triton-url …``: exit code, output."""
        ops = ["--repository", str(self.cfg.repository), "--triton-url", self.cfg.triton_url]
        key = {admin_key.ENV_VAR: self.stack.triton.admin_key}
        return self.commands.run([*argv, *ops], key)

    def load(self, address: str, concurrency: int, rate: float) -> AsyncLoad:
        """A paced client on ``address`` (counted in ``client_failed``); enter it to start."""
        load = AsyncLoad(address, self.users, concurrency, rate=rate)
        self.loads.append(load)
        return load

    def serving(self) -> int:
        with RecommenderClient(self.stack.gateway.address) as client:
            return client.serving_info().model_version

    def answered_by(self, n: int = 60) -> set[int]:
        with RecommenderClient(self.stack.gateway.address) as client:
            return {client.recommend(u, k=3).model_version for u in self.users[:n]}

    def pins(self) -> set[tuple[int, ...]]:
        return {tuple(serving_policy(self.cfg.repository / m) or ()) for m in SERVED_MODELS}

    def split_exists(self) -> bool:
        return (self.cfg.repository / traffic_split.ROLLOUT_FILE).exists()

    def routed(self, version: int, timeout_s: float = 30.0) -> bool:
        """Wait until some listener is answered by ``version`` (the gateway read the split)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if version in self.answered_by(40):
                return True
            time.sleep(0.2)
        return False

    def tidy(self) -> None:
        """End whatever rollout a failed scenario left running."""
        if self.split_exists():
            with contextlib.suppress(DeployError, traffic_split.RolloutError):
                rollout.abort(self.cfg, "scenario cleanup", settle_s=0.5)


def _said(text: str, marker: str = "error:") -> str:
    """The command's line holding ``marker`` (its last line if none does)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return next((line for line in lines if marker in line), lines[-1] if lines else "")


def canary_zero(b: Bench) -> dict:
    """``deploy --canary 0``: refused with a message, no full deploy, nothing written."""
    serving, pins = b.serving(), b.pins()
    code, out = b.cli("deploy", "--version", "2", "--canary", "0", "--force")
    changed = b.serving() != serving or b.pins() != pins or b.split_exists()
    return {"exit_code": code, "full_deploy": changed, "refused": code != 0 and not changed,
            "message": _said(out), "traceback": "Traceback" in out}  # fmt: skip


def watch_without_metrics(b: Bench) -> dict:
    """``--watch`` without ``--gateway-metrics``: refused before the canary starts."""
    pins = b.pins()
    code, out = b.cli("deploy", "--version", "2", "--canary", "10", "--watch", "5", "--force")
    started = b.split_exists() or b.pins() != pins
    return {"exit_code": code, "canary_started": started, "message": _said(out)}


def corrupt_split_at_start(b: Bench) -> dict:
    """A canary's split cut in half: ``status`` names it, ``deploy abort`` clears it."""
    serving = b.serving()
    rollout.start(b.cfg, version=2, canary_percent=50, force=True, metrics=b.metrics)
    routed = b.routed(2)
    path = b.cfg.repository / traffic_split.ROLLOUT_FILE
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a half-written file
    status_code, status_out = b.cli("status", "--gateway-metrics", b.metrics)
    code, out = b.cli("deploy", "abort", "--gateway-metrics", b.metrics)
    answered = b.answered_by()
    ok = code == 0 and not b.split_exists() and b.pins() == {(serving,)} and answered == {serving}
    return {"abort_ok": ok, "abort_exit_code": code, "canary_routed_before": routed,
            "status_exit_code": status_code, "status_shows_error": "unreadable" in status_out,
            "answered_by_after": sorted(answered),
            "abort_output": _said(out, "abort:")}  # fmt: skip


def blind_watcher(b: Bench) -> dict:
    """A watcher whose target answers nothing ends "inconclusive" and the command exits
    non-zero; the canary it could not judge keeps running (for the next scenarios)."""
    rollout.start(b.cfg, version=2, canary_percent=20, force=True, metrics=b.metrics)
    dead = f"127.0.0.1:{free_port()}"
    rules = canary_watch.WatchRules(window_s=5, interval_s=0.5, min_requests=10)
    result = canary_watch.watch(b.cfg, dead, rules, duration_s=2)
    code, out = b.cli("deploy", "watch", "--watch", "2", "--window", "5",
                      "--gateway-metrics", dead)  # fmt: skip
    return {"verdict": result.verdict, "reason": result.reason,
            "gateways_answered": result.gateways, "exit_code": code,
            "cli_says": _said(out, "watch:"), "canary_kept": b.split_exists()}  # fmt: skip


def promote_without_verdict(b: Bench) -> dict:
    """Promote with no healthy verdict recorded: refused, through the API and the command."""
    serving = b.serving()
    try:
        rollout.promote(b.cfg)
        api, message = False, ""
    except DeployError as exc:
        api, message = "promote refused" in str(exc), str(exc)
    code, out = b.cli("deploy", "promote")
    kept = b.split_exists() and b.serving() == serving
    return {"refused": api and code != 0 and kept, "exit_code": code, "message": message,
            "cli_says": _said(out)}  # fmt: skip


def _restart_under_watch(b: Bench, second: GatewayProcess, targets: str, watch_s: float):
    """Watch ``targets`` for ``watch_s`` while ``second`` serves, restarts, serves again."""
    rules = canary_watch.WatchRules(window_s=30, interval_s=0.5, min_requests=10)
    found: dict = {}
    watcher = threading.Thread(target=lambda: found.update(result=canary_watch.watch(
        b.cfg, targets, rules, duration_s=watch_s)))  # fmt: skip
    with b.load(second.address, 4, 30.0) as load:
        load.wait_for(150, timeout_s=60)  # counters worth losing
        watcher.start()
        time.sleep(2.0)
    restart_began = time.monotonic()
    second.stop()
    second.start()
    restart_s = time.monotonic() - restart_began
    with b.load(second.address, 4, 30.0):
        watcher.join()
    return found["result"], restart_s


def counter_reset(b: Bench) -> dict:
    """A second gateway restarts mid-window (its counters drop to 0): no false abort."""
    gw = replace(b.stack.gateway.config, port=free_port(), metrics_port=free_port())
    second = GatewayProcess(gw, log_file=b.workdir / "logs" / "gateway2.log").start()
    try:
        targets = f"{b.metrics},127.0.0.1:{gw.metrics_port}"
        result, restart_s = _restart_under_watch(b, second, targets, watch_s=20)
        found = rollout.figures(b.cfg, targets)
        status_code, status_out = b.cli("status", "--gateway-metrics", targets)
        out = {"false_abort": result.verdict == "aborted", "verdict": result.verdict,
               "reason": result.reason, "resets_seen": result.resets,
               "canary_requests": result.canary_requests, "restart_s": restart_s,
               "status_window": found["window"], "status_gateways": sorted(found["gateways"]),
               "status_shows_verdict": "watcher verdict: healthy" in status_out}  # fmt: skip
        if result.verdict == "healthy":
            promoted = rollout.promote(b.cfg)  # with the verdict just recorded: no --force
            out["promote_after_healthy"] = promoted.version == b.serving() == 2
        else:
            rollout.abort(b.cfg, metrics=targets)
        out.update(abort_settle(b, targets))
        return out
    finally:
        second.stop()


def abort_settle(b: Bench, targets: str) -> dict:
    """Abort with the gateways' metrics: how long it waited, and on what."""
    version = max(v for v in (2, 3) if v != b.serving())
    rollout.start(b.cfg, version=version, canary_percent=30, force=True, metrics=targets)
    b.routed(version)
    began = time.monotonic()
    report = rollout.abort(b.cfg, metrics=targets)
    return {"abort_settle_s": time.monotonic() - began, "abort_warnings": list(report.warnings)}


SCENARIOS: dict[str, Callable[[Bench], dict]] = {
    "canary_zero": canary_zero,
    "watch_without_metrics": watch_without_metrics,
    "corrupt_split_at_start": corrupt_split_at_start,
    "blind_watcher": blind_watcher,
    "promote_without_verdict": promote_without_verdict,  # on the blind watcher's canary
    "counter_reset": counter_reset,  # the same canary, then promoted
}


def _stack_config(repo: Path, logs: Path) -> StackConfig:
    gateway = GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu",
                            poll_interval_s=0.2)  # fmt: skip
    return StackConfig(repo, free_port(), free_port(), free_port(), gateway=gateway,
                       log_dir=logs)  # fmt: skip


def _export(run_dir: Path, repo: Path, n: int = 3) -> None:
    for _ in range(n):
        export_run(run_dir, repo)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])


def _timed(scenario: Callable[[Bench], dict], b: Bench) -> dict:
    """The scenario's values and seconds; its failure as a value, never a crash."""
    began = time.monotonic()
    try:
        row = scenario(b)
    except Exception as exc:
        row = {"error": f"{type(exc).__name__}: {exc}"}
        b.tidy()
    return {**row, "seconds": round(time.monotonic() - began, 1)}


def run_all(run_dir: Path, workdir: Path) -> dict[str, dict]:
    """Every scenario on one shared stack (versions 1-3 of ``run_dir``; 1 serves)."""
    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "model_repository"
    _export(run_dir, repo)
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    scfg = _stack_config(repo, workdir / "logs")
    out: dict[str, dict] = {}
    commands = Commands()
    with contextlib.ExitStack() as done:
        done.callback(commands.close)
        stack = done.enter_context(serving_stack(scfg))
        cfg = DeployConfig(repo, stack.triton.grpc_url, stack.gateway.address,
                           admin_key=stack.triton.admin_key)  # fmt: skip
        b = Bench(cfg, stack, f"127.0.0.1:{scfg.gateway.metrics_port}", users, workdir, commands)
        with b.load(stack.gateway.address, 2, BACKGROUND_RATE):
            for name, scenario in SCENARIOS.items():
                out[name] = _timed(scenario, b)
    failures = [f for load in b.loads for f in load.failures]
    out["client_failed"] = {"count": len(failures), "sample": failures[:5]}
    return out
