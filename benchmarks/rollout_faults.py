"""The rollout and repair path at its edges (issue 23), each scenario on real processes.

    python -m benchmarks.rollout_faults     # writes benchmarks/results/rollout_faults.json

The scenarios live in ``benchmarks/fault_scenarios/``, one module per part of the path, and
the CI tests (``tests/test_rollout_faults.py``, ``tests/test_gateway_faults.py``,
``tests/test_deploy_faults.py``) run the same functions and assert the same targets:

* ``control``: the rollout commands and the watcher (``serving/rollout.py``,
  ``serving/canary_watch.py``): a corrupt split, a blind watcher, counter resets, ``--canary 0``,
  ``--watch`` without metrics, promote without a verdict.
* ``gateway``: the request path (``gateway/``): a corrupt split at start, the deadline budget,
  a slow and a dead canary, sticky keys, a large request on the event loop, a manifest without
  checksums, a history that covers the whole catalogue.
* ``deploy``: deploys, rollbacks and repairs (``serving/deploy.py``): a broken first deploy,
  readiness after a repair, file modes.

The model is the tests' size (a 2-epoch run on a generated 200-user, 400-artist catalogue):
these are proofs of behaviour, not speed figures.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from benchmarks.common import benchmark_arguments
from benchmarks.fault_scenarios import control, deploy, gateway
from core.console import console

RESULTS = Path(__file__).parent / "results" / "rollout_faults.json"
PARTS = {"control": control.run_all, "gateway": gateway.run_all, "deploy": deploy.run_all}

# key "scenario.field" -> (what it must be, the test on the measured value)
TARGETS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "corrupt_split_at_start.canary_answers": ("0", lambda v: v == 0),
    "corrupt_split_at_start.abort_ok": ("true", lambda v: v is True),
    "blind_watcher.verdict": ('"inconclusive"', lambda v: v == "inconclusive"),
    "blind_watcher.exit_code": ("non-zero", lambda v: isinstance(v, int) and v != 0),
    "counter_reset.false_abort": ("false", lambda v: v is False),
    "canary_zero.full_deploy": ("false", lambda v: v is False),
    "watch_without_metrics.canary_started": ("false", lambda v: v is False),
    "deadline.attempts_bounded": ("true", lambda v: v is True),
    "slow_canary.charged_to": ('"canary"', lambda v: v == "canary"),
    "slow_canary.aborted": ("true", lambda v: v is True),
    "dead_canary.warnings_per_s": ("<= 1", lambda v: isinstance(v, int | float) and v <= 1),
    "promote_without_verdict.refused": ("true", lambda v: v is True),
    "sticky.id_vs_name_mismatch": ("0", lambda v: v == 0),
    "big_request.loop_stall_ms": ("<= 20", lambda v: isinstance(v, int | float) and v <= 20),
    "broken_first_deploy.rollback_ok": ("true", lambda v: v is True),
    "manifest_without_checksums.served": ("false", lambda v: v is False),
    "ready_after_repair.probe_ok": ("true", lambda v: v is True),
    "written_files.triton_readable": ("true", lambda v: v is True),
    "full_catalogue_history.explained": ("true", lambda v: v is True),
    "client_failed": ("0", lambda v: v == 0),
}


def train_run(root: Path) -> Path:
    """The tests' run: 2 epochs on a generated 200-user, 400-artist Spotify-format file."""
    from training.config import DataConfig, TrainConfig
    from training.data.generator import GeneratorConfig, generate_spotify_csv
    from training.models import DNNConfig
    from training.pipeline import train_and_evaluate
    from training.run import save_run

    csv = generate_spotify_csv(
        root / "plays.csv", GeneratorConfig(rows=20_000, users=200, artists=400, seed=5)
    )
    cfg = TrainConfig(data=DataConfig(str(csv)), dnn=DNNConfig(max_epochs=2))
    save_run(root / "run", cfg, train_and_evaluate(cfg))
    return root / "run"


def measured(scenarios: dict[str, dict], key: str) -> object:
    """The value of ``scenario.field`` (``client_failed``: the sum over every part)."""
    if key == "client_failed":
        return scenarios["client_failed"]
    scenario, _, field = key.partition(".")
    return scenarios.get(scenario, {}).get(field, "not measured")


def run_parts(run_dir: Path, root: Path) -> dict[str, dict]:
    """Every part's scenarios, merged; ``client_failed`` summed over the parts."""
    scenarios: dict = {}
    failed = 0
    for name, run_all in PARTS.items():
        t0 = time.monotonic()
        part = run_all(run_dir, root / name)
        failed += int(part.pop("client_failed", {}).get("count", 0))
        console.print(f"{name}: {len(part)} scenarios in {time.monotonic() - t0:.0f} s")
        for scenario, fields in part.items():  # two parts may measure one scenario's fields
            scenarios.setdefault(scenario, {}).update(fields)
    scenarios["client_failed"] = failed
    return scenarios


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__, RESULTS, "(no effect: every scenario is short)", argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scenarios = run_parts(train_run(root), root)
    targets = {
        key: {"measured": measured(scenarios, key), "target": target,
              "met": check(measured(scenarios, key))}
        for key, (target, check) in TARGETS.items()
    }  # fmt: skip
    result = {
        "scenarios": scenarios,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
        "device": "CPU (2 cores shared by the clients, the gateways and Triton)",
        "total_seconds": time.monotonic() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    table = Table(title=f"Rollout faults ({args.out.name})")
    for column in ("key", "measured", "target", "met"):
        table.add_column(column)
    for key, row in targets.items():
        table.add_row(key, json.dumps(row["measured"], default=str), row["target"],
                      "yes" if row["met"] else "[red]no[/red]")  # fmt: skip
    console.print(table)
    return 0 if result["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
