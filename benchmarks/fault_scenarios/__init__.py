"""Issue 23's fault scenarios, one module per part of the rollout and repair path; each
exposes ``run_all(run_dir, workdir) -> {scenario: {field: value}, "client_failed": {"count"}}``,
called by ``benchmarks/rollout_faults.py`` and by that part's CI test."""
