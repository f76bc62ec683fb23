#!/usr/bin/env bash
# Paired A/B of two Warren builds on one scenario: the two binaries run
# alternately, a fresh broker and data directory per run, so that a noisy
# machine affects both alike. Prints one line per run (msg/s: confirmed
# with confirms, else received; S6: the drain rate) and the medians.
#
#   A=old/warren B=target/release/warren bench/ab.sh S2 [PAIRS]
#
# Environment: A, B (broker binaries), PERF [target/release/warren-perf],
# PORT [5699], DURATION [5].
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:?scenario: S1, S2 or S3}
N=${2:-8}
A=${A:?binary A}
B=${B:?binary B}
PERF=${PERF:-target/release/warren-perf}
PORT=${PORT:-5699}
DURATION=${DURATION:-5}
case $S in
  S1) ARGS="--producers 1 --consumers 1 --size 16 --autoack" ;;
  S2) ARGS="--producers 1 --consumers 1 --size 16 --confirm 1000 --prefetch 1000" ;;
  S3) ARGS="--producers 1 --consumers 1 --size 1024 --persistent --durable --confirm 1000 --prefetch 1000" ;;
  S4) ARGS="--producers 1 --fanout 10 --size 16 --autoack" ;;
  S6) ARGS="--producers 1 --consumers 1 --size 16 --backlog 1000000 --confirm 1000 --prefetch 1000" ;;
  *) echo "unknown scenario $S" >&2; exit 2 ;;
esac
OUT=$(mktemp /tmp/warren-ab.XXXXXX)
for i in $(seq "$N"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    data=$(mktemp -d /tmp/warren-ab-data.XXXXXX)
    "$bin" --listen 127.0.0.1:"$PORT" --data-dir "$data" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
    # shellcheck disable=SC2086
    rate=$(timeout 120 "$PERF" --port "$PORT" --duration "$DURATION" --broker-pid "$pid" $ARGS --json 2>/dev/null \
      | tail -1 | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); b=r.get("backlog"); print(round(b["drain_rate"] if b else r["confirmed_rate"] if r["options"]["confirm"] else r["received_rate"]))')
    echo "$S $side $i $rate" | tee -a "$OUT"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
a = {int(r[2]): int(r[3]) for r in rows if r[1] == "A"}
b = {int(r[2]): int(r[3]) for r in rows if r[1] == "B"}
print(f"A median {statistics.median(a.values()):,.0f}  B median {statistics.median(b.values()):,.0f}  "
      f"median of paired B/A {statistics.median(b[i] / a[i] for i in a):.3f}")
PY
rm -f "$OUT"
