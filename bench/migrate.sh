#!/usr/bin/env bash
# warrenctl migrate's rate: two release brokers on loopback (ports chosen by
# the system, read from their logs), a backlog of $MESSAGES $SIZE-byte
# messages over $QUEUES queues on the source (filled by warren-perf with
# confirms), then `warrenctl migrate` moves them all; prints its summary and
# checks that the destination holds them all and the source none.
#
#   cargo build --release -j 1 -p warren-server -p warren-cli -p warren-perf
#   bench/migrate.sh
#
# Environment: WARREN, PERF, WARRENCTL (the release binaries); MESSAGES
# [100000], QUEUES [10], SIZE [1024]; PERSISTENT=1 to publish persistent
# messages; MIGRATE_ARGS, extra options for migrate (e.g. "--parallel 2");
# OUT [bench/results/<time>].
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
WARRENCTL=${WARRENCTL:-target/release/warrenctl}
MESSAGES=${MESSAGES:-100000}
QUEUES=${QUEUES:-10}
SIZE=${SIZE:-1024}
PERSISTENT=${PERSISTENT:-}
MIGRATE_ARGS=${MIGRATE_ARGS:-}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/warren-migrate-bench.XXXXXX)
export NO_COLOR=1

PIDS=()
cleanup() {
  # Only the brokers this script started, by pid: TERM, 10 s, then KILL.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$OUT/migrate.txt"; }

# start NAME: starts a broker on ports of the system's choosing and waits
# (at most 30 s) for both "listening" lines; sets AMQP_ADDR and HTTP_ADDR.
start() {
  local name=$1 blog="$OUT/migrate-$1.broker.log"
  "$WARREN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$WORK/$name" >"$blog" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  AMQP_ADDR= HTTP_ADDR=
  for _ in $(seq 3000); do
    HTTP_ADDR=$(sed -n 's/.*management API listening.*listen=\([0-9.:]*\).*/\1/p' "$blog" | head -n 1)
    AMQP_ADDR=$(sed -n 's/.*warren started.*listen=\([0-9.:]*\).*/\1/p' "$blog" | head -n 1)
    [ -n "$HTTP_ADDR" ] && [ -n "$AMQP_ADDR" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "broker $name exited: $(tail -5 "$blog")" >&2; return 1; }
    sleep 0.01
  done
  echo "broker $name did not start within 30 s" >&2
  return 1
}

for bin in "$WARREN" "$PERF" "$WARRENCTL"; do
  [ -x "$bin" ] || { echo "$bin is missing: cargo build --release -j 1 -p warren-server -p warren-cli -p warren-perf" >&2; exit 1; }
done

start source
SRC_AMQP=$AMQP_ADDR SRC_HTTP=$HTTP_ADDR
start dest
DST_AMQP=$AMQP_ADDR DST_HTTP=$HTTP_ADDR
log "source amqp $SRC_AMQP api $SRC_HTTP; destination amqp $DST_AMQP api $DST_HTTP"

persistent=()
[ -n "$PERSISTENT" ] && persistent=(--persistent)
log "== filling the source: $MESSAGES messages of $SIZE bytes over $QUEUES queues ${persistent[*]:-}"
"$PERF" --host 127.0.0.1 --port "${SRC_AMQP##*:}" --producers 1 --consumers 0 --queues "$QUEUES" \
  --queue-prefix migrate --durable "${persistent[@]}" --size "$SIZE" --backlog "$MESSAGES" --confirm 1000 \
  --duration 300 --quiet >"$OUT/migrate-fill.txt" 2>&1
tail -n 1 "$OUT/migrate-fill.txt" | tee -a "$OUT/migrate.txt"

total() {
  "$WARRENCTL" --url "http://$1" list queues --format json |
    python3 -c 'import json,sys; print(sum(q.get("messages", 0) for q in json.load(sys.stdin) if q["name"].startswith("migrate-")))'
}
log "source holds $(total "$SRC_HTTP") messages"

log "== warrenctl migrate ${MIGRATE_ARGS}"
# shellcheck disable=SC2086 # MIGRATE_ARGS is a list of options.
"$WARRENCTL" --url "http://$DST_HTTP" migrate \
  --source-url "http://$SRC_HTTP" --source-amqp "amqp://guest:guest@$SRC_AMQP" \
  --amqp "amqp://guest:guest@$DST_AMQP" --queues '^migrate-' $MIGRATE_ARGS \
  --format json >"$OUT/migrate.json"
python3 - "$OUT/migrate.json" <<'EOF' | tee -a "$OUT/migrate.txt"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"moved {s['messages']} messages ({s['bytes'] / 2**20:.1f} MiB) from {len(s['queues'])} queues "
      f"in {s['seconds']:.2f} s: {s['rate']:.0f} msg/s, {s['bytes_rate'] / 2**20:.1f} MiB/s")
EOF
left=$(total "$SRC_HTTP")
arrived=$(total "$DST_HTTP")
log "afterwards: source holds $left, destination $arrived"
[ "$left" = 0 ] && [ "$arrived" = "$MESSAGES" ] || { echo "FAILED: messages missing" >&2; exit 1; }
