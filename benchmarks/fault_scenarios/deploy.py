"""Deploy and repair faults of issue 23 (items 14, 15, 17, 18), on one real stack: a supervised
Triton and the gateway, with a load client wherever a serving version is healthy.

``run_all(run_dir, workdir)`` exports one version from ``run_dir``, clones it to 2 and 3, and
serves version 1 with no deploy record (as the demo leaves it), then:

* ``written_files``: a deploy's pins and records, readable by another uid under umask 022;
* ``broken_first_deploy``: deploy 2, corrupt 2's ONNX, SIGKILL Triton (it restarts on the
  broken pin), then ``rollback`` must serve 1 again and record 2 as the version left;
* ``ready_after_repair``: the healthcheck docker-compose.yml and the Kubernetes
  readinessProbe run, run against that repaired Triton;
* ``loaded_swap``: a swap to a version already loaded beside the serving one (``deploy
  promote`` after a canary) under load, timed.

Every scenario records a failure as a value (``error``) instead of raising.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from core.contract import PAIR_SCORER, SERVED_MODELS
from core.paths import PROJECT_ROOT
from export.repository import export_run
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version
from serving import deploy_records as records
from serving.deploy import (
    DeployConfig,
    deploy,
    pin_and_load,
    rollback,
    swap_recorded,
    triton_fleet,
)
from serving.processes import free_port
from serving.stack import Stack, StackConfig, serving_stack
from training.run import load_run

OTHER_UID = 1000  # Triton's uid in NVIDIA's image (deploy/k8s/README.md); the deploy Job's: 10001
LOAD_RATE = 40.0  # requests/s of the load client: traffic without starving 2 cores


def run_all(run_dir: Path, workdir: Path) -> dict[str, dict]:
    """Every scenario on one stack; ``client_failed`` counts the load client's failures while
    a serving version was healthy."""
    repo = Path(workdir) / "model_repository"
    export_run(run_dir, repo)
    for version in (2, 3):
        clone_version(repo, 1, version)
    for name in SERVED_MODELS:  # version 1 serves, no deploy record: the demo's state
        write_configs(repo / name, name, serving=[1])
    users = _users(run_dir)
    results: dict[str, dict] = {}
    failed = 0
    old_umask = os.umask(0o022)
    try:
        with _stack(repo, Path(workdir) / "logs") as running:
            cfg = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                               admin_key=running.triton.admin_key, timeout_s=60)  # fmt: skip
            row, failed = _under_load(running, users, lambda: _deploy_and_check_files(cfg))
            results["written_files"] = row
            results["broken_first_deploy"] = _recorded(lambda: _broken_first_deploy(running, cfg))
            results["ready_after_repair"] = _recorded(lambda: _ready_after_repair(running))
            row, more = _under_load(running, users, lambda: _loaded_swap(cfg))
            results["loaded_swap"], failed = row, failed + more
    except Exception as exc:  # the stack itself: every row says so
        for key in ("written_files", "broken_first_deploy", "ready_after_repair", "loaded_swap"):
            results.setdefault(key, {"error": f"{type(exc).__name__}: {exc}"})
    finally:
        os.umask(old_umask)
    results["client_failed"] = {"count": failed}
    return results


def _under_load(running: Stack, users: list[str], scenario: Callable[[], dict]) -> tuple[dict, int]:
    """The scenario's row (with the answers the client got) and the client's failures, with
    traffic before, during and after it."""
    with AsyncLoad(running.gateway.address, users, 4, rate=LOAD_RATE) as load:
        load.wait_for(20, timeout_s=60)
        row = _recorded(scenario)
        load.wait_for(load.ok + 20, timeout_s=30)
    return {**row, "client_ok": load.ok, "client_failed": len(load.failures)}, len(load.failures)


@contextlib.contextmanager
def _stack(repo: Path, logs: Path) -> Iterator[Stack]:
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.2),
                      log_dir=logs)  # fmt: skip
    with serving_stack(cfg) as running:
        yield running


def _recorded(scenario: Callable[[], dict]) -> dict:
    """The scenario's row, or its failure as a value."""
    try:
        return scenario()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _users(run_dir: Path) -> list[str]:
    run = load_run(run_dir)
    return [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]


# ---------------------------------------------------------------- item 18


def _deploy_and_check_files(cfg: DeployConfig) -> dict:
    """Deploy 2 over 1 (under umask 022), then check what it wrote: mode bits, and a read as
    another uid where this process may switch to one."""
    report = deploy(cfg, version=2)
    written = [cfg.repository / records.HISTORY_FILE]
    for name in SERVED_MODELS:
        model_dir = cfg.repository / name
        written += [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]
    modes = {str(p.relative_to(cfg.repository)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in written}  # fmt: skip
    by_bits = all(p.stat().st_mode & stat.S_IROTH for p in written)
    read_as_other = _read_as_other_uid(cfg)
    return {
        "triton_readable": by_bits and read_as_other is not False,
        "mode_bits_ok": by_bits,
        "read_as_uid_1000": read_as_other,  # None: not root, so not tried
        "modes": sorted(set(modes.values())),
        "files": len(written),
        "deploy_s": round(report.seconds, 2),
    }


def _read_as_other_uid(cfg: DeployConfig) -> bool | None:
    """Whether uid 1000 can read a pin and a record written the way a deploy writes them, in a
    directory it may enter (the repository's own parents may be private to the test run)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        repo = Path(tmp)
        name = SERVED_MODELS[0]
        write_configs(repo / name, name, serving=[2])
        records.record(repo, {"action": "deploy", "version": 2, "previous": 1})
        files = [repo / records.HISTORY_FILE, repo / name / "config.pbtxt",
                 *(repo / name / "configs").glob("*.pbtxt")]  # fmt: skip
        for d in (repo / name, repo / name / "configs"):
            os.chmod(d, 0o755)  # mkdir's mode under umask 022 anyway; made sure
        # setpriv switches uid after exec: a fork that switches it itself (subprocess's user=)
        # crashed in this process, which runs gRPC's threads
        as_other = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
        done = subprocess.run([*as_other, "cat", *map(str, files)], capture_output=True,
                              timeout=30)  # fmt: skip
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace")[:300])
        return True


# ---------------------------------------------------------------- items 15 and 17


def _broken_first_deploy(running: Stack, cfg: DeployConfig) -> dict:
    """Version 2 (deployed over the unrecorded 1) breaks and Triton restarts on it: rollback
    must serve 1 and record that it left 2."""
    (cfg.repository / PAIR_SCORER / "2" / "model.onnx").write_bytes(b"not onnx any more")
    restarts = running.supervisor.restarts
    os.kill(running.triton.process.pid, signal.SIGKILL)
    _until(lambda: running.supervisor.restarts > restarts and _live(running), 90)
    _until(lambda: "pair_scorer" in running.triton.not_ready_reason(), 60)
    row: dict = {"probe_ok_while_broken": _probe_ok(running, "compose")}
    try:
        report = rollback(cfg)
    except Exception as exc:
        return {**row, "rollback_ok": False, "error": f"{type(exc).__name__}: {exc}"}
    last = records.read_history(cfg.repository)[-1]
    serving = _gateway_version(running)
    return {
        **row,
        "rollback_ok": report.version == 1 and serving == 1,
        "serving_after": serving,
        "recorded": {k: last.get(k) for k in ("action", "version", "previous")},
        "previous_recorded": last.get("previous") == 2,
        "rollback_s": round(report.seconds, 2),
    }


def _ready_after_repair(running: Stack) -> dict:
    """The probes compose and Kubernetes run, against the Triton the rollback repaired."""
    return {
        "probe_ok": _probe_ok(running, "compose") and _probe_ok(running, "k8s"),
        "compose_probe_ok": _probe_ok(running, "compose"),
        "k8s_probe_ok": _probe_ok(running, "k8s"),
        "strict_ready_status": _status(f"http://{running.triton.http_url}/v2/health/ready"),
    }


def probe_script(where: str) -> str:
    """The shell script of Triton's healthcheck in docker-compose.yml or its readinessProbe
    in deploy/k8s (exactly as written there)."""
    if where == "compose":
        compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
        kind, script = compose["services"]["triton"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL", kind
        return script.replace("$$", "$")  # compose's escape of a literal $
    path = PROJECT_ROOT / "deploy" / "k8s" / "base" / "triton-deployment.yaml"
    (container,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"], command
    return command[2]


def _probe_ok(running: Stack, where: str) -> bool:
    """Run the probe against this Triton (its HTTP port in place of the container's 8000)."""
    script = re.sub(r"localhost:8000\b", running.triton.http_url, probe_script(where))
    if shutil.which("curl") is None:
        raise RuntimeError("curl is needed to run the probes as compose and Kubernetes do")
    return subprocess.run(["sh", "-c", script], timeout=30).returncode == 0


# ---------------------------------------------------------------- item 14


def _loaded_swap(cfg: DeployConfig) -> dict:
    """Load 3 beside the serving 1 (as a canary does), then swap to it (as promote does)."""
    pin_and_load(cfg, triton_fleet(cfg), [1, 3])
    start = time.monotonic()
    swap_recorded(cfg, "deploy", 1, 3)
    seconds = time.monotonic() - start
    return {"swap_s": round(seconds, 2), "fast": seconds < 5.0}


# ---------------------------------------------------------------- helpers


def _until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"not reached within {timeout_s:.0f} s")


def _live(running: Stack) -> bool:
    return _status(f"http://{running.triton.http_url}/v2/health/live") == 200


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _gateway_version(running: Stack) -> int | None:
    """The version the gateway answers with, once it is 1 (or after 30 s)."""
    from client import RecommenderClient

    with RecommenderClient(running.gateway.address, timeout_s=5) as client:
        with contextlib.suppress(TimeoutError):
            _until(lambda: client.serving_info().model_version == 1, 30)
        return client.serving_info().model_version
