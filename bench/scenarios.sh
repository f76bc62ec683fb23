#!/usr/bin/env bash
# Runs the performance scenarios S1-S6 against a fresh Warren per scenario
# and keeps each run's JSON and human line under $OUT.
#
#   bench/scenarios.sh [S1 S2 ...]        (default: all)
#
# Environment (defaults in brackets):
#   WARREN    broker binary            [target/release/warren]
#   PERF      load generator           [target/release/warren-perf]
#   PORT      broker port              [5680]
#   DATA      broker data directory    [/tmp/perf-data]   (wiped per scenario)
#   OUT       results directory        [bench/results/<UTC date-time>]
#   DURATION  seconds per timed run    [10]
#   THREADS   warren-perf workers      [1]
#
# Build first: cargo build --release -p warren-server -p warren-perf
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
PORT=${PORT:-5680}
DATA=${DATA:-/tmp/perf-data}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
. bench/lib.sh

declare -A ARGS=(
  [S1]="--producers 1 --consumers 1 --size 16 --autoack"
  [S2]="--producers 1 --consumers 1 --size 16 --confirm 1000 --prefetch 1000"
  [S3]="--producers 1 --consumers 1 --size 1024 --persistent --durable --confirm 1000"
  [S4]="--producers 1 --fanout 10 --size 16 --autoack"
  [S5]="--producers 50 --consumers 50 --queues 50 --rate 100 --size 16"
  [S6]="--producers 1 --consumers 1 --size 16 --backlog 1000000 --confirm 1000 --prefetch 1000"
)

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(S1 S2 S3 S4 S5 S6)

for s in "${scenarios[@]}"; do
  args=${ARGS[$s]:?unknown scenario $s}
  duration=$DURATION
  # S6 is bounded per phase, not timed.
  [ "$s" = S6 ] && duration=120
  start_broker "$OUT/$s.broker.log"
  echo "== $s: $PERF --port $PORT --duration $duration --threads $THREADS $args" | tee "$OUT/$s.txt"
  # shellcheck disable=SC2086
  timeout $((duration * 3 + 60)) "$PERF" --port "$PORT" --duration "$duration" --threads "$THREADS" \
    --broker-pid "$BROKER_PID" --json --quiet $args >"$OUT/$s.json" 2>>"$OUT/$s.txt" || echo "$s: warren-perf failed ($?)" | tee -a "$OUT/$s.txt"
  tail -n 3 "$OUT/$s.txt"
  stop_broker
done
echo "results in $OUT"
