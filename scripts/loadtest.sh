#!/usr/bin/env bash
# Headless Locust run against a running gateway (start one with `scripts/demo.sh` in another
# terminal). Reports: loadtests/results/locust_stats.csv, ..._history.csv, locust.html.
# Knobs: MUSICREC_GATEWAY (host:port), USERS, SPAWN_RATE, RUN_TIME; extra args go to locust.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p loadtests/results
exec .venv/bin/locust -f loadtests/locustfile.py --headless \
  --host "${MUSICREC_GATEWAY:-127.0.0.1:50051}" \
  -u "${USERS:-20}" -r "${SPAWN_RATE:-10}" -t "${RUN_TIME:-60s}" \
  --csv loadtests/results/locust --html loadtests/results/locust.html --only-summary "$@"
