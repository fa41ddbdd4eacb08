"""Issue 23's deploy and repair faults (items 14, 15, 17, 18, 20), on a real Triton and gateway
(``benchmarks/fault_scenarios/deploy.py``, run once), and the file and record rules they need."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from benchmarks.fault_scenarios.deploy import run_all
from core.files import write_atomically
from serving import deploy_records as records
from serving.deploy import DeployConfig, status
from serving.processes import free_port


@pytest.fixture(scope="module")
def faults(run_dir, tmp_path_factory):
    results = run_all(run_dir, tmp_path_factory.mktemp("deploy_faults"))
    print(json.dumps(results, indent=1))  # the measured rows (pytest -s)
    return results


@pytest.mark.slow
def test_rollback_leaves_a_broken_first_deploy(faults):
    """Item 15: v1 served with no record, v2 deployed then broken: rollback serves v1 and
    records that it left v2 (it said "nothing to roll back to", and recorded previous null)."""
    row = faults["broken_first_deploy"]
    assert row["rollback_ok"] is True, row
    assert row["recorded"] == {"action": "rollback", "version": 1, "previous": 2}, row


@pytest.mark.slow
def test_the_probe_compose_and_kubernetes_run_is_ready_after_a_repair(faults):
    """Item 17: Triton's /v2/health/ready stays 400 after the repair; the probes do not."""
    row = faults["ready_after_repair"]
    assert row["probe_ok"] is True, row
    assert faults["broken_first_deploy"]["probe_ok_while_broken"] is False


@pytest.mark.slow
def test_the_pins_and_records_a_deploy_writes_are_readable_by_triton(faults):
    """Item 18: 0600 whatever the umask; Triton runs as another uid."""
    row = faults["written_files"]
    assert row["triton_readable"] is True, row
    assert row["modes"] == ["0o644"], row


@pytest.mark.slow
def test_a_swap_to_a_version_already_loaded_reloads_nothing(faults):
    """Item 14: promote (a swap to the loaded canary) took ~16 s, every model reloaded twice."""
    row = faults["loaded_swap"]
    assert row["fast"] is True, row


@pytest.mark.slow
def test_no_client_failed_while_a_serving_version_was_healthy(faults):
    assert faults["client_failed"] == {"count": 0}


def test_write_atomically_gives_the_mode_a_plain_write_gives(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "pin", "x")
        write_atomically(tmp_path / "secret", "x", private=True)
        os.umask(0o077)
        write_atomically(tmp_path / "strict", "x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"pin": 0o644, "secret": 0o600, "strict": 0o600}


def test_last_healthy_finds_what_served_before_a_first_deploy(tmp_path):
    repo = tmp_path / "repo"
    for v in (1, 2):
        (repo / "catalogue_scorer" / str(v)).mkdir(parents=True)
    records.record(repo, {"action": "deploy", "version": 2, "previous": 1})
    assert records.last_healthy(repo, exclude={2}) == 1
    records.record(repo, {"action": "rollback", "version": 1, "previous": 2})
    # a rollback's previous (the version left) is never a target; the deploy's 2 served once
    assert records.last_healthy(repo, exclude={1, 2}) is None


def test_status_works_on_a_truncated_intent_and_a_corrupt_split(tmp_path, capsys):
    """Item 20: the truncated intent's error sent the operator to `musicrec status`, which
    failed the same way; a corrupt .rollout.json must not fail it either."""
    from app.main import main as musicrec

    repo = tmp_path / "model_repository"
    repo.mkdir()
    intent = repo / records.INTENT_FILE
    intent.write_text('{"action": "deploy", "vers')
    (repo / ".rollout.json").write_text('{"serving": 1, "can')
    triton = f"127.0.0.1:{free_port()}"
    rows, found = status(DeployConfig(repo, triton))
    assert str(intent) in found and "unreadable" in found and "nothing was repaired" in found
    assert musicrec(["status", "--repository", str(repo), "--triton-url", triton]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert str(intent) in out and ".rollout.json" in out and "Traceback" not in out


def test_rollback_accepts_keep_like_deploy():
    from app.deploy_commands import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), argparse.HelpFormatter)
    assert parser.parse_args(["rollback", "--keep", "4"]).keep == 4
    assert parser.parse_args(["deploy", "--version", "2", "--keep", "4"]).keep == 4
