#!/usr/bin/env bash
# Resident memory of a release broker holding N delayed messages
# (x-delayed-message, x-delay one hour, transient, BODY bytes each).
#
#   bench/delayed_rss.sh [N] [BODY]     (default 1000000 16)
#
# Needs: cargo build --release -p warren-server; interop/.venv with pika
# (bash interop/run.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
BODY=${2:-16}
WARREN=${WARREN:-target/release/warren}
PY=${PY:-interop/.venv/bin/python}
WORK=$(mktemp -d /tmp/warren-delayed-rss.XXXXXX)
"$WARREN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --data-dir "$WORK/data" >"$WORK/warren.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
port() { sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/warren.log" | grep -m1 -F "$1" | grep -o 'listen=127\.0\.0\.1:[0-9]*' | cut -d: -f2 || true; }
for _ in $(seq 100); do
  AMQP=$(port 'warren started'); HTTP=$(port 'management API listening')
  [ -n "$AMQP" ] && [ -n "$HTTP" ] && break
  sleep 0.1
done
[ -n "$AMQP" ] && [ -n "$HTTP" ] || { cat "$WORK/warren.log"; exit 1; }
"$PY" bench/delayed_rss.py "$AMQP" "$HTTP" "$PID" "$N" "$BODY"
