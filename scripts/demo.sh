#!/usr/bin/env bash
# The main job: set up, generate the embedded default data, train, evaluate, recommend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/musicrec demo "$@"
