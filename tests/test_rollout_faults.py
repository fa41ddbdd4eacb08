"""The rollout's control side fails safe (issue 23 items 2-4, 6, 7, 10, 13): the scenarios of
``benchmarks/fault_scenarios/control.py`` on a real Triton and real gateways, once, one test
per row of ``benchmarks/results/rollout_faults.json``; then the watcher's counting, the
gateways' split gauges and the command's refusals without processes."""

from __future__ import annotations

import math

import pytest

from benchmarks.fault_scenarios import control
from core import traffic_split
from core.contract import SERVED_MODELS
from export.triton_config import write_configs
from serving import canary_watch, gateway_metrics, rollout
from serving import deploy_records as records
from serving.canary_watch import CounterWindow, WatchRules, conclude, judge
from serving.deploy import DeployConfig, DeployError
from serving.gateway_metrics import VersionFigures

# ---------------------------------------------------------------- real Triton and gateways


@pytest.fixture(scope="module")
def measured(run_dir, tmp_path_factory):
    """Every control scenario, run once on one shared stack."""
    return control.run_all(run_dir, tmp_path_factory.mktemp("control"))


def _row(measured: dict, scenario: str) -> dict:
    row = measured[scenario]
    assert "error" not in row, row
    return row


@pytest.mark.slow
def test_abort_clears_a_corrupt_split_and_status_names_it(measured):
    row = _row(measured, "corrupt_split_at_start")
    assert row["canary_routed_before"]
    assert row["abort_ok"] is True, row
    assert row["status_exit_code"] == 0 and row["status_shows_error"], row


@pytest.mark.slow
def test_a_blind_watcher_is_inconclusive_and_exits_non_zero(measured):
    row = _row(measured, "blind_watcher")
    assert row["verdict"] == "inconclusive" and row["gateways_answered"] == 0, row
    assert row["exit_code"] != 0 and "inconclusive" in row["cli_says"], row
    assert row["canary_kept"]  # inconclusive never aborts, never promotes


@pytest.mark.slow
def test_a_gateway_restart_mid_window_is_no_false_abort(measured):
    row = _row(measured, "counter_reset")
    assert row["false_abort"] is False, row
    assert row["resets_seen"] >= 1 and row["verdict"] == "healthy", row
    assert row["promote_after_healthy"] is True  # the recorded verdict lets promote through
    assert row["status_shows_verdict"] and "this rollout's window" in row["status_window"]
    assert len(row["status_gateways"]) == 2  # per gateway


@pytest.mark.slow
def test_canary_zero_is_refused_not_a_full_deploy(measured):
    row = _row(measured, "canary_zero")
    assert row["full_deploy"] is False and row["refused"], row
    assert "--canary 0" in row["message"] and not row["traceback"], row


@pytest.mark.slow
def test_watch_without_metrics_is_refused_before_the_canary_starts(measured):
    row = _row(measured, "watch_without_metrics")
    assert row["canary_started"] is False and row["exit_code"] != 0, row
    assert "--gateway-metrics" in row["message"], row


@pytest.mark.slow
def test_promote_without_a_verdict_is_refused(measured):
    row = _row(measured, "promote_without_verdict")
    assert row["refused"] is True, row
    assert "--force" in row["message"], row


@pytest.mark.slow
def test_abort_waits_on_the_gateways_reported_split_and_no_client_failed(measured):
    row = _row(measured, "counter_reset")
    assert row["abort_settle_s"] < rollout.SETTLE_TIMEOUT_S, row
    assert measured["client_failed"]["count"] == 0, measured["client_failed"]


# ---------------------------------------------------------------- without processes


def _figs(requests: float, errors: float = 0.0) -> VersionFigures:
    return VersionFigures(requests, errors, 0.0, {0.01: requests, math.inf: requests})


def test_a_gateway_restart_restarts_its_delta_from_zero():
    window = CounterWindow(window_s=60)
    window.add(0, {"a": {"2": _figs(100)}, "b": {"2": _figs(5000, 10)}})
    window.add(1, {"a": {"2": _figs(150)}, "b": None})  # b missed a poll
    window.add(2, {"a": {"2": _figs(200)}, "b": {"2": _figs(30)}})  # b restarted: 30 new
    window.add(3, {"a": {"2": _figs(250)}, "b": {"2": _figs(70, 1)}})
    got = window.figures("2")
    assert window.resets == 1
    assert got.requests == 150 + 70 and got.errors == 1  # never negative, never a burst
    assert got.buckets[math.inf] == 220


def test_a_gateway_first_seen_mid_watch_counts_from_then():
    window = CounterWindow(window_s=60)
    window.add(0, {"a": {"2": _figs(10)}, "b": None})
    window.add(1, {"a": {"2": _figs(20)}, "b": {"2": _figs(9000, 9000)}})  # its history
    assert window.figures("2").requests == 10 and window.figures("2").errors == 0


def test_the_window_forgets_what_is_older_than_it():
    window = CounterWindow(window_s=2)
    for t in range(6):
        window.add(t, {"a": {"2": _figs(100 * t)}})
    assert window.figures("2").requests == 200  # the increments at t = 4 and 5


def test_no_gateway_or_too_little_traffic_is_inconclusive_never_healthy():
    rules = WatchRules(min_requests=30)
    assert "no gateway answered" in conclude(_figs(0), 0, 2, rules)
    assert "1 of 2 gateways" in conclude(_figs(100), 1, 2, rules)
    assert "fewer than the 30" in conclude(_figs(5), 2, 2, rules)
    assert conclude(_figs(100), 2, 2, rules) == ""
    assert judge(_figs(0), _figs(0), rules) == ""  # nothing seen: no breach, no verdict
    assert set(canary_watch.VERDICTS) == {"healthy", "aborted", "inconclusive"}


def test_the_gateways_split_gauges_are_read():
    text = """\
musicrec_gateway_rollout_percent{role="canary",version="4"} 10.0
musicrec_gateway_rollout_percent{role="shadow",version="5"} 0.0
musicrec_gateway_rollout_error 0.0
"""
    split = gateway_metrics.parse_split(text)
    assert split.reports and not split.error
    assert split.routes(4) and not split.routes(5) and not split.routes(3)
    assert not gateway_metrics.parse_split("musicrec_gateway_up 1.0\n").reports  # older gateway


def test_the_unreadable_split_keeps_the_pins_serving_version(tmp_path):
    """Which version abort keeps when the split says nothing: the deploy history's."""
    for name in SERVED_MODELS:
        write_configs(tmp_path / name, name, serving=[3, 4])
    records.record(tmp_path, {"action": "canary", "version": 3, "previous": 4, "at": "t"})
    assert rollout.serving_of_pin(DeployConfig(tmp_path)) == (4, 3)  # a downgrade canary
    for name in SERVED_MODELS:
        write_configs(tmp_path / name, name, serving=[4])
    assert rollout.serving_of_pin(DeployConfig(tmp_path)) == (4, None)


def test_a_verdict_is_recorded_for_its_own_rollout_only(tmp_path):
    first = traffic_split.Rollout(serving=1, canary=2, percent=10)
    traffic_split.write(tmp_path, first)
    with pytest.raises(DeployError, match="no watcher verdict"):
        rollout.refuse_unjudged(tmp_path, first)
    assert rollout.record_verdict(tmp_path, first, {"verdict": "inconclusive", "reason": "r"})
    with pytest.raises(DeployError, match="'inconclusive'.*--force"):
        rollout.refuse_unjudged(tmp_path, first)
    assert rollout.record_verdict(tmp_path, first, {"verdict": "healthy"})
    rollout.refuse_unjudged(tmp_path, first)  # promote may go
    second = traffic_split.Rollout(serving=1, canary=2, percent=20)
    traffic_split.write(tmp_path, second)  # another rollout: the old verdict is not its
    with pytest.raises(DeployError, match="no watcher verdict"):
        rollout.refuse_unjudged(tmp_path, second)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--canary", "0"], "--canary 0: give a percent above 0"),
        (["--shadow", "0"], "--shadow 0: give a percent above 0"),
        (["--canary", "120"], "at most 100"),
        (["--canary", "10", "--watch", "5"], "--watch needs --gateway-metrics"),
        (["--shadow", "10", "--watch", "5", "--gateway-metrics", "127.0.0.1:1"], "a shadow"),
    ],
)
def test_the_command_refuses_before_anything_changes(tmp_path, capsys, monkeypatch, argv,
                                                     message):  # fmt: skip
    """Refused with one line and exit 2, no Triton asked, nothing written to the repository."""
    from app.main import main as musicrec
    from serving import admin_key

    monkeypatch.setenv(admin_key.ENV_VAR, "unused")
    repo = tmp_path / "model_repository"
    code = musicrec(["deploy", "--version", "2", *argv, "--repository", str(repo),
                     "--triton-url", "127.0.0.1:1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2 and message in out.replace("\n", " ") and "Traceback" not in out
    assert not repo.exists() or not any(repo.iterdir())
