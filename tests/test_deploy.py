"""Redeploys under load with the real Triton and gateway: swaps, rollback, refusals, retirement."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import shutil
import time

import pytest
import tritonclient.grpc

from client import RecommenderClient
from core.contract import CATALOGUE_SCORER, PAIR_SCORER, SERVED_MODELS, versions
from core.files import file_digests
from export.repository import export_run
from export.triton_config import serving_policy, write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from serving import admin_key
from serving import deploy_records as records
from serving.deploy import DeployConfig, DeployError, deploy, rollback, status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from serving.validation import quality
from training.run import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(run_dir, tmp_path_factory):
    """Triton + gateway serving version 1 of the shared run, and candidates 2..4 exported."""
    root = tmp_path_factory.mktemp("deploy")
    repo = root / "model_repository"
    for _ in range(4):
        export_run(run_dir, repo)
    for name in SERVED_MODELS:  # version 1 serves first, as after a first deploy
        write_configs(repo / name, name, serving=[1])
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.2),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        yield running, DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                                    admin_key=running.triton.admin_key,
                                    keep=3)  # fmt: skip


def reseal(repo, version: int) -> None:
    """Record the current files' checksums in the version's manifests (a version exported in
    this state, rather than altered after export)."""
    for name in SERVED_MODELS:
        path = repo / name / str(version) / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["files"] = file_digests(path.parent, skip=("manifest.json",))
        path.write_text(json.dumps(manifest))


def _users(run_dir) -> list[str]:
    run = load_run(run_dir)
    return [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]


def test_three_swaps_and_a_rollback_under_load_fail_none_of_10000_requests(stack, run_dir):
    running, cfg = stack
    reports = []
    with AsyncLoad(running.gateway.address, _users(run_dir)) as load:
        assert load.wait_for(200)
        for version in (2, 3, 4):
            reports.append(deploy(cfg, version=version))
        reports.append(rollback(cfg))
        target = max(10_000, load.ok + 1_000)  # traffic after the rollback too
        assert load.wait_for(target), f"the load stopped at {load.ok} answers"
    assert load.ok >= 10_000
    assert load.failures == [], load.failures[:5]
    print(f"{load.ok} requests, {len(load.failures)} failed")
    assert [(r.action, r.version, r.previous) for r in reports] == [
        ("deploy", 2, 1), ("deploy", 3, 2), ("deploy", 4, 3), ("rollback", 3, 4)]  # fmt: skip
    assert list(dict.fromkeys(v for _, v in load.switches)) == [1, 2, 3, 4]
    assert load.switches[-1][1] == 3  # the rollback
    with RecommenderClient(running.gateway.address) as client:
        assert client.serving_info().model_version == 3
    for name in SERVED_MODELS:
        assert serving_policy(cfg.repository / name) == [3]
    # keep=3: version 1 was retired once 4 served; 2, 3 and 4 stay (3 serves, 4 is the
    # version rolled back from).
    assert versions(cfg.repository, CATALOGUE_SCORER) == [2, 3, 4]
    history = json.loads((cfg.repository / "deployments.json").read_text())
    assert [h["version"] for h in history] == [2, 3, 4, 3]
    rows = {r.version: r for r in status(cfg)[0]}
    assert rows[3].serving and not rows[4].serving and rows[3].metric is not None


def test_a_broken_version_is_refused_before_triton_sees_it(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    (cfg.repository / PAIR_SCORER / str(version) / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(DeployError, match="checksum mismatch in model.onnx"):
        deploy(cfg, version=version)
    reseal(cfg.repository, version)  # as if exported broken: the smoke inference refuses it
    with pytest.raises(DeployError, match="does not load"):
        deploy(cfg, version=version)
    shutil.rmtree(cfg.repository / CATALOGUE_SCORER / str(version) / "vocab")
    with pytest.raises(DeployError, match="lacks vocab"):
        deploy(cfg, version=version)
    assert _serving(running) == before


def test_a_worse_version_needs_force(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    for name in SERVED_MODELS:
        path = cfg.repository / name / str(version) / "manifest.json"
        manifest = json.loads(path.read_text())
        for block in (manifest["metrics"]["known_users"], manifest["metrics"]["served"]
                      ["known_users"]):  # fmt: skip
            block["ndcg@10"] -= 0.05  # the served default's is the one the gate reads
        path.write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="refused: ndcg@10"):
        deploy(cfg, version=version)
    assert _serving(running) == before
    report = deploy(cfg, version=version, force=True)
    assert report.gate.startswith("forced past") and _serving(running) == version


def test_a_version_triton_cannot_load_leaves_the_old_one_serving(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    model_py = cfg.repository / CATALOGUE_SCORER / str(version) / "model.py"
    broken = "def initialize(self, args):\n        raise RuntimeError('boom')"
    model_py.write_text(model_py.read_text().replace("def initialize(self, args):", broken))
    reseal(cfg.repository, version)  # exported like that: only Triton finds out
    with pytest.raises(DeployError, match=f"version {before} keeps serving"):
        deploy(cfg, version=version)
    assert _serving(running) == before
    for name in SERVED_MODELS:
        assert serving_policy(cfg.repository / name) == [before]
    with RecommenderClient(running.gateway.address) as client:
        assert client.recommend(_users(run_dir)[0], k=3).model_version == before


def _serving(running) -> int:
    with RecommenderClient(running.gateway.address) as client:
        return client.serving_info().model_version


def test_cli_status_deploy_and_rollback_errors_are_one_line(stack, capsys, monkeypatch):
    from app.main import main as musicrec

    running, cfg = stack
    monkeypatch.delenv(admin_key.ENV_VAR, raising=False)
    missing = ["--admin-key-file", str(cfg.repository / "no-such-key")]
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url, *missing]
    assert musicrec(["status", *ops]) == 0  # reading needs no key
    assert musicrec(["deploy", "--version", "1", *ops]) == 2
    assert "no Triton admin key" in capsys.readouterr().out
    monkeypatch.setenv(admin_key.ENV_VAR, running.triton.admin_key)
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url]
    assert musicrec(["status", *ops]) == 0
    out = capsys.readouterr().out
    assert "Model versions in" in out and "yes" in out
    assert musicrec(["deploy", *ops]) == 2
    assert "give a run directory or --version" in capsys.readouterr().out
    assert musicrec(["deploy", "--version", str(_serving(running)), *ops]) == 2
    assert "already serving" in capsys.readouterr().out
    unreachable = ["--repository", str(cfg.repository), "--triton-url", f"127.0.0.1:{free_port()}"]
    assert musicrec(["rollback", *unreachable]) == 2
    out = capsys.readouterr().out
    assert "not reachable" in out and "Traceback" not in out


def _pins(cfg) -> set[tuple[int, ...]]:
    return {tuple(serving_policy(cfg.repository / name) or ()) for name in SERVED_MODELS}


def test_an_artifact_the_gateway_cannot_load_is_refused_before_anything_is_pinned(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    plays = cfg.repository / CATALOGUE_SCORER / str(version) / "plays.npz"
    plays.write_bytes(plays.read_bytes()[:100])
    with pytest.raises(DeployError, match="checksum mismatch in plays.npz"):
        deploy(cfg, version=version)
    reseal(cfg.repository, version)
    with pytest.raises(DeployError, match=f"version {version}: the gateway cannot load it"):
        deploy(cfg, version=version)
    assert _pins(cfg) == {(before,)} and _serving(running) == before


def test_a_gateway_that_does_not_switch_restores_the_previous_pin(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    nowhere = dataclasses.replace(cfg, gateway=f"127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(DeployError, match=f"did not switch.*version {before} keeps serving"):
        deploy(nowhere, version=version)
    assert _pins(cfg) == {(before,)}
    assert eventually(lambda: _serving(running) == before)
    assert not (cfg.repository / ".deploy-intent.json").exists()


def test_a_deploy_that_died_mid_swap_is_repaired_by_the_next_status(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    # The state a deploy killed after its first step leaves: the intent and both pinned.
    records.begin(cfg.repository, "deploy", version, before)
    client = tritonclient.grpc.InferenceServerClient(cfg.triton_url)
    for name in SERVED_MODELS:
        write_configs(cfg.repository / name, name, serving=[before, version])
        client.load_model(name, headers=running.triton.admin_headers)
    rows, recovered = status(cfg)
    assert f"interrupted deploy of version {version}: version {before} serves" in recovered
    assert _pins(cfg) == {(before,)}
    assert [r.version for r in rows if r.serving] == [before]
    assert records.pending(cfg.repository) is None
    assert _serving(running) == before


def test_two_rollbacks_in_a_row_never_serve_a_rolled_back_version_again(stack, run_dir):
    running, cfg = stack
    before = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    deploy(cfg, version=version, force=True)
    assert rollback(cfg).version == before
    second = records.rollback_target(cfg.repository, before)
    assert second != version  # what the old rule picked: the version just rolled back
    if second is not None and second in versions(cfg.repository, CATALOGUE_SCORER):
        assert rollback(cfg).version == second
    else:
        with pytest.raises(DeployError):
            rollback(cfg)
    assert _serving(running) != version


def test_concurrent_deploys_run_one_at_a_time_and_lose_no_record(stack, run_dir):
    running, cfg = stack
    candidates = [export_run(run_dir, cfg.repository).version for _ in range(2)]
    history_before = len(json.loads((cfg.repository / "deployments.json").read_text()))
    with cf.ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda v: deploy(cfg, version=v, force=True), candidates))
    history = json.loads((cfg.repository / "deployments.json").read_text())
    assert len(history) == history_before + 2
    assert sorted(h["version"] for h in history[-2:]) == sorted(candidates)
    last = history[-1]["version"]
    assert {r.version for r in reports} == set(candidates)
    assert _pins(cfg) == {(last,)} and _serving(running) == last


def test_cli_refuses_bad_metric_drops_and_reports_disk_errors_in_one_line(
    stack, tmp_path, capsys, monkeypatch
):
    from app.main import main as musicrec

    running, cfg = stack
    monkeypatch.setenv(admin_key.ENV_VAR, running.triton.admin_key)
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url]
    for drop in ("nan", "-0.1", "inf"):
        assert musicrec(["deploy", "--version", "1", "--max-metric-drop", drop, *ops]) == 2
        assert "max metric drop must be a finite number >= 0" in capsys.readouterr().out
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("")
    assert musicrec(["deploy", "--version", "1", "--repository", str(a_file / "repo"),
                     "--triton-url", cfg.triton_url]) == 2  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("error:") and "Not a directory" in out and "Traceback" not in out


def eventually(check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def test_a_truncated_deploy_record_is_an_error_naming_the_file(tmp_path, capsys):
    from app.main import main as musicrec

    repo = tmp_path / "model_repository"
    repo.mkdir()
    intent = repo / records.INTENT_FILE
    intent.write_text('{"action": "deploy", "vers')  # cut short
    cfg = DeployConfig(repo, f"127.0.0.1:{free_port()}")
    with pytest.raises(records.RecordError, match=f"{intent}.*unreadable.*musicrec status"):
        records.pending(repo)  # what deploy and rollback meet: they refuse
    # status, where that error sends the operator, says what it found instead (issue 23)
    assert str(intent) in status(cfg)[1]
    assert musicrec(["status", "--repository", str(repo), "--triton-url", cfg.triton_url]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert str(intent) in out and "Traceback" not in out
    intent.unlink()
    (repo / records.HISTORY_FILE).write_text('[{"action": "deploy", "version": 2, ')
    with pytest.raises(records.RecordError, match=f"{records.HISTORY_FILE}.*deploy history"):
        records.rollback_target(repo, 2)
    (repo / records.HISTORY_FILE).write_text('{"version": 2}')
    with pytest.raises(records.RecordError, match="holds a JSON dict, not a list"):
        records.read_history(repo)


def test_a_deploy_of_an_older_version_over_a_newer_one_warns(
    stack, run_dir, capsys, monkeypatch, caplog
):
    from app.main import main as musicrec

    running, cfg = stack
    older, newer = (export_run(run_dir, cfg.repository).version for _ in range(2))
    for version in (older, newer):
        assert not deploy(cfg, version=version, force=True).warnings  # upgrades say nothing
    report = deploy(cfg, version=older, force=True)
    assert _serving(running) == older
    (warning,) = report.warnings
    assert warning == (f"version {older} is older than version {newer}, which served: a "
                       f"downgrade (to undo it, `rollback` serves {newer} again)")  # fmt: skip
    monkeypatch.setenv(admin_key.ENV_VAR, running.triton.admin_key)
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url, "--force"]
    assert musicrec(["deploy", "--version", str(newer), *ops]) == 0
    assert "warning" not in capsys.readouterr().out
    assert musicrec(["deploy", "--version", str(older), *ops]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    # once: printed from the report, not logged as well (the CLI's log went to the terminal too)
    assert out.count(f"version {older} is older than version {newer}") == 1
    assert not [r for r in caplog.records if "is older than" in r.getMessage()]
    # without --gateway the CLI does not wait for the gateway: the next test reads it
    assert eventually(lambda: _serving(running) == older)
    assert f"warning: version {older} is older than version {newer}" in out


def test_retention_keeps_the_rollback_chain_and_prunes_candidates_first(stack, run_dir):
    """Issue 17: with a refused candidate on disk, deploy, deploy, rollback, rollback failed:
    the oldest version (a rollback target) was retired and the candidate kept."""
    running, cfg = stack
    serving = _serving(running)
    refused = export_run(run_dir, cfg.repository).version
    # Worse than what serves now, whatever an earlier test left serving.
    serving_manifest = cfg.repository / CATALOGUE_SCORER / str(serving) / "manifest.json"
    worse = quality(json.loads(serving_manifest.read_text())) - 0.05
    for name in SERVED_MODELS:
        path = cfg.repository / name / str(refused) / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["metrics"]["served"]["known_users"]["ndcg@10"] = worse  # what the gate reads
        path.write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="refused"):
        deploy(cfg, version=refused)
    first, second = (export_run(run_dir, cfg.repository).version for _ in range(2))
    deploy(cfg, version=first, force=True)
    report = deploy(cfg, version=second, force=True)
    on_disk = versions(cfg.repository, CATALOGUE_SCORER)
    assert {serving, first, second} <= set(on_disk)  # keep=3: the last three deployed
    assert refused in report.retired and refused not in on_disk  # never deployed: first out
    assert rollback(cfg).version == first
    assert rollback(cfg).version == serving  # the second rollback in a row works
    assert _serving(running) == serving
    with pytest.raises(DeployError, match=f"cannot deploy version {refused}: it was retired"):
        deploy(cfg, version=refused)
