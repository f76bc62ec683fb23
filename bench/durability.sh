#!/usr/bin/env bash
# Issue 6's durability figures for Warren:
#  (a) confirmed persistent throughput: 1 producer, 1 KiB, --persistent
#      --durable, 1000 outstanding confirms, no consumer, $DURATION s;
#  (b) a backlog of $BACKLOG persistent 1 KiB messages on a durable queue:
#      broker RSS holding it, kill -9, restart on the same data directory,
#      recovery time (broker start until the port accepts and a passive
#      declare reports the count), RSS after restart, drain, and the data
#      directory's size before publishing, with the backlog and after.
#
#   bench/durability.sh
#
# Environment: WARREN, PERF, PORT, DATA, OUT, DURATION, THREADS as in
# bench/scenarios.sh; BACKLOG [1000000].
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
PORT=${PORT:-5680}
DATA=${DATA:-/tmp/perf-data}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
BACKLOG=${BACKLOG:-1000000}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_broker EXIT

log() { echo "$*" | tee -a "$OUT/durability.txt"; }
perf() {
  # The command goes to the log only: stdout may be a JSON file.
  echo "\$ warren-perf --port $PORT --threads $THREADS $*" >>"$OUT/durability.txt"
  "$PERF" --port "$PORT" --threads "$THREADS" --quiet "$@"
}

common=(--size 1024 --persistent --durable --queue-prefix durable)

log "== (a) confirmed persistent throughput"
start_broker "$OUT/durability-a.broker.log"
perf "${common[@]}" --producers 1 --consumers 0 --confirm 1000 --duration "$DURATION" \
  --broker-pid "$BROKER_PID" --json >"$OUT/durability-a.json" 2>>"$OUT/durability.txt"
tail -n 1 "$OUT/durability.txt"
stop_broker

log "== (b) backlog of $BACKLOG persistent 1 KiB messages, kill -9, recovery"
start_broker "$OUT/durability-b1.broker.log"
# Declare the queue first so the directory holds the bare topology.
perf "${common[@]}" --producers 0 --consumers 0 --duration 1 >/dev/null 2>>"$OUT/durability.txt"
log "data dir before publishing: $(du -sh "$DATA" | cut -f1)"
perf "${common[@]}" --producers 1 --consumers 0 --backlog "$BACKLOG" --confirm 1000 --duration 600 \
  --broker-pid "$BROKER_PID" --json >"$OUT/durability-b-publish.json" 2>>"$OUT/durability.txt"
tail -n 2 "$OUT/durability.txt"
sleep 2
log "broker rss holding the backlog (2 s after the last confirm): $(rss_mib "$BROKER_PID") MiB"
log "data dir with the backlog: $(du -sh "$DATA" | cut -f1)"

kill -KILL "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
BROKER_PID=
log "broker killed with SIGKILL"

# Restart on the same data directory; the probe starts right after the
# broker and retries the connection every 2 ms.
T0=$(date +%s%N)
"$WARREN" --listen "127.0.0.1:$PORT" --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$DATA" >"$OUT/durability-b2.broker.log" 2>&1 &
BROKER_PID=$!
perf --queue-prefix durable --probe --duration 600 --json >"$OUT/durability-b-probe.json" 2>>"$OUT/durability.txt"
T1=$(date +%s%N)
tail -n 2 "$OUT/durability.txt"
log "recovery: $(( (T1 - T0) / 1000000 )) ms from broker exec to passive declare-ok (wall clock, includes probe start-up)"
log "broker log: $(grep -a 'recovered durable state' "$OUT/durability-b2.broker.log" | sed 's/\x1b\[[0-9;]*m//g')"
log "broker rss after restart: $(rss_mib "$BROKER_PID") MiB"

perf "${common[@]}" --producers 0 --consumers 1 --backlog "$BACKLOG" --no-purge --prefetch 1000 \
  --duration 600 --broker-pid "$BROKER_PID" --json >"$OUT/durability-b-drain.json" 2>>"$OUT/durability.txt"
tail -n 2 "$OUT/durability.txt"
log "broker rss after the drain: $(rss_mib "$BROKER_PID") MiB"
log "data dir after the drain: $(du -sh "$DATA" | cut -f1)"
sleep 10
log "data dir 10 s after the drain: $(du -sh "$DATA" | cut -f1)"
stop_broker
log "data dir after a clean stop: $(du -sh "$DATA" | cut -f1)"
echo "results in $OUT"
