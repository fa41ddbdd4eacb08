#!/usr/bin/env bash
# System packages the operations tests need (Debian): prometheus (a real scraper, and promtool,
# which unit-tests ops/alerts.yml) and docker-compose (validates docker-compose.yml; no Docker
# engine is needed). Idempotent.
set -euo pipefail
missing=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "error: install ${missing[*]} (Debian packages) for the operations tests" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]} (apt)..."
log=$(mktemp)
if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
