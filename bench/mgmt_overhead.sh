#!/usr/bin/env bash
# Issues 13 and 15's guards: S1 (1 producer, 1 consumer, 16-byte, autoack)
# with the management API and metrics disabled (A) and enabled with
# /api/queues polled (or, with SCRAPE=metrics, /metrics scraped) every
# second (B), alternately, a fresh broker per run. Prints each run and the
# median of the paired B/A ratios.
#
#   bench/mgmt_overhead.sh [PAIRS]
#   SCRAPE=metrics bench/mgmt_overhead.sh [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-6}
WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
DURATION=${DURATION:-5}
WORK=$(mktemp -d /tmp/warren-mgmt-overhead.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
printf '[management]\nenabled = false\n[metrics]\nenabled = false\n' >"$WORK/off.toml"
printf '[management]\nenabled = true\nlisten = "127.0.0.1:15699"\nstats_interval_ms = 5000\n[metrics]\nenabled = true\nlisten = "127.0.0.1:15697"\n' >"$WORK/on.toml"
if [ "${SCRAPE:-management}" = metrics ]; then
  POLL_URL=http://127.0.0.1:15697/metrics
else
  POLL_URL=http://127.0.0.1:15699/api/queues
fi
OUT="$WORK/runs"
for i in $(seq "$N"); do
  for side in A B; do
    cfg="$WORK/off.toml"; [ $side = B ] && cfg="$WORK/on.toml"
    rm -rf "$WORK/data"
    NO_COLOR=1 "$WARREN" --config "$cfg" --listen 127.0.0.1:5698 --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/5698) 2>/dev/null && break; sleep 0.05; done
    poller=""
    if [ $side = B ]; then
      # Bounded: at most DURATION+5 polls, one a second.
      ( for _ in $(seq $((DURATION + 5))); do
          curl -s -o /dev/null -u guest:guest "$POLL_URL" || true
          sleep 1
        done ) &
      poller=$!
    fi
    rate=$(timeout 120 "$PERF" --port 5698 --duration "$DURATION" --producers 1 --consumers 1 --size 16 --autoack --json 2>/dev/null \
      | tail -1 | python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read())["received_rate"]))')
    echo "S1 $side $i $rate" | tee -a "$OUT"
    [ -n "$poller" ] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, side, i, rate = line.split()
    runs.setdefault(int(i), {})[side] = float(rate)
ratios = [r["B"] / r["A"] for r in runs.values() if r.get("A") and r.get("B")]
a = statistics.median(r["A"] for r in runs.values())
b = statistics.median(r["B"] for r in runs.values())
print(f"A (API off) median {a:,.0f}  B (API on, polled) median {b:,.0f}  median of paired B/A {statistics.median(ratios):.3f}")
PY
