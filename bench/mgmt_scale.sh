#!/usr/bin/env bash
# Issue 13's scale figures: 10,000 queues and 1,000 connections, then the
# management API's list times. Needs the interop venv's pika
# (interop/run.sh makes it) and a release build.
#
#   bench/mgmt_scale.sh [QUEUES] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
WARREN=${WARREN:-target/release/warren}
PY=${PY:-interop/.venv/bin/python}
DATA=$(mktemp -d /tmp/warren-mgmt-scale.XXXXXX)
LOG="$DATA/warren.log"
ulimit -n 65536 2>/dev/null || true
NO_COLOR=1 "$WARREN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$DATA/data" >"$LOG" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 200); do grep -q "warren started" "$LOG" && break; sleep 0.05; done
amqp=$(sed -n 's/.*warren started.*listen=[^ ]*:\([0-9]*\).*/\1/p' "$LOG" | head -1)
http=$(sed -n 's/.*management API listening.*listen=[^ ]*:\([0-9]*\).*/\1/p' "$LOG" | head -1)
[ -n "$amqp" ] && [ -n "$http" ] || { cat "$LOG"; exit 1; }
"$PY" bench/mgmt_scale.py "$amqp" "$http" "${1:-10000}" "${2:-1000}"
echo "broker RSS KiB: $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
