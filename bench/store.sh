#!/usr/bin/env bash
# The message store side by side with RabbitMQ (Debian's rabbitmq-server,
# installed for the comparison only): for each broker in turn,
#  1. a backlog of $BACKLOG persistent 1 KiB messages on a durable queue,
#     published with confirms (1000 outstanding); RSS holding it, data dir;
#  2. kill -9, restart on the same data, time until a passive declare
#     reports the count;
#  3. drain with 1 consumer, prefetch 1000, manual acks: msg/s and broker
#     CPU per message; RSS and data dir after.
#
#   bench/store.sh
#
# Environment: WARREN, PERF, BACKLOG [1000000], OUT [bench/results/store-<time>].
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
BACKLOG=${BACKLOG:-1000000}
OUT=${OUT:-bench/results/store-$(date -u +%Y%m%dT%H%M%SZ)}
WPORT=5682
RPORT=5692
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_rabbitmq

RMQ_HOME=$(mktemp -d /tmp/warren-store-rmq.XXXXXX)
WDATA=$(mktemp -d /tmp/warren-store-data.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  stop_rabbitmq warren-store-rmq KILL
  wait 2>/dev/null || true
  rm -rf "$RMQ_HOME" "$WDATA" 2>/dev/null || true
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$OUT/store.txt"; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

start() { # broker -> sets PID (the process whose CPU and memory count)
  if [ "$1" = warren ]; then
    "$WARREN" --listen 127.0.0.1:$WPORT --management-listen 127.0.0.1:0 \
      --metrics-listen 127.0.0.1:0 --data-dir "$WDATA" >>"$OUT/warren.log" 2>&1 &
    PID=$!
    PORT=$WPORT
  else
    start_rabbitmq "$RMQ_HOME" "$RPORT" store 25692 "$OUT/rabbitmq.log"
    PORT=$RPORT
    for _ in $(seq 600); do
      PID=$(pgrep -f "beam.smp.*warren-store-rmq" | head -1 || true)
      [ -n "$PID" ] && break
      sleep 0.1
    done
  fi
}

data_dir() { [ "$1" = warren ] && echo "$WDATA" || echo "$RMQ_HOME/mnesia"; }

common=(--size 1024 --persistent --durable --queue-prefix store)
for b in warren rabbitmq; do
  log "== $b"
  T0=$(date +%s%N)
  start "$b"
  wait_port "$PORT"
  "$PERF" --port "$PORT" --quiet "${common[@]}" --producers 1 --consumers 0 --backlog "$BACKLOG" \
    --confirm 1000 --duration 900 2>&1 | tail -1 | tee -a "$OUT/store.txt"
  log "rss holding the backlog: $(rss_mib "$PID") MiB; data dir: $(du -sh "$(data_dir "$b")" | cut -f1)"
  kill -KILL "$PID"
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  [ "$b" = rabbitmq ] && { pkill -KILL -f "rabbitmq-server" 2>/dev/null || true; sleep 1; }
  log "killed with SIGKILL"
  T0=$(date +%s%N)
  start "$b"
  "$PERF" --port "$PORT" --queue-prefix store --probe --duration 900 2>&1 | tail -1 | tee -a "$OUT/store.txt"
  T1=$(date +%s%N)
  log "recovery: $(( (T1 - T0) / 1000000 )) ms from start to the count"
  C0=$(cpu_s "$PID")
  "$PERF" --port "$PORT" "${common[@]}" --producers 0 --consumers 1 --backlog "$BACKLOG" --no-purge \
    --prefetch 1000 --duration 900 2>&1 | tail -2 | head -1 | tee -a "$OUT/store.txt"
  C1=$(cpu_s "$PID")
  log "broker cpu during the drain: $(echo "$C0 $C1 $BACKLOG" | awk '{ printf "%.2f s, %.2f us/msg", $2 - $1, ($2 - $1) * 1e6 / $3 }')"
  log "rss after the drain: $(rss_mib "$PID") MiB; data dir: $(du -sh "$(data_dir "$b")" | cut -f1)"
  kill -KILL "$PID" 2>/dev/null || true
  [ "$b" = rabbitmq ] && { pkill -KILL -f "beam.smp.*warren-store-rmq" 2>/dev/null || true; }
  PID=
  sleep 1
done
log "results in $OUT"
