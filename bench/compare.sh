#!/usr/bin/env bash
# Side by side: Warren and RabbitMQ (Debian's rabbitmq-server, installed for
# the comparison only; never a dependency of Warren) on loopback, each
# scenario run alternately A B A B A B, medians and Warren/RabbitMQ ratios.
#
#   bench/compare.sh [S1 S2 ...]     (default S1-S6)
#
# Environment: REPEAT [3], DURATION [5] seconds per run, OUT [bench/results/compare-<clients>-<time>],
# CLIENT [pipelined]: warren-perf's --client style (pipelined, single, lapin, amqprs),
# CLIENTS: several styles, e.g. "pipelined single lapin": every scenario once
# per style against the same two brokers, one table per style.
# Results are OUT/<scenario>.<client>.<broker>.<run>.json; OUT/summary.md.
# Needs: cargo build --release -p warren-server -p warren-perf; python3.
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-${CLIENT:-pipelined}}
OUT=${OUT:-bench/results/compare-${CLIENTS// /+}-$(date -u +%Y%m%dT%H%M%SZ)}
WPORT=5681
RPORT=5691
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_rabbitmq

RMQ_HOME=$(mktemp -d /tmp/warren-bench-rmq.XXXXXX)
WDATA=$(mktemp -d /tmp/warren-bench-data.XXXXXX)
W_PID= R_PID=
cleanup() {
  [ -n "$W_PID" ] && kill "$W_PID" 2>/dev/null || true
  [ -n "$R_PID" ] && kill "$R_PID" 2>/dev/null || true
  stop_rabbitmq warren-bench-rmq
  wait 2>/dev/null || true
  rm -rf "$RMQ_HOME" "$WDATA" 2>/dev/null || true
}
trap cleanup EXIT


start_rabbitmq "$RMQ_HOME" "$RPORT" bench 25691 "$OUT/rabbitmq.log"
R_PID=$!
"$WARREN" --listen 127.0.0.1:$WPORT --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$WDATA" >"$OUT/warren.log" 2>&1 &
W_PID=$!
wait_port $WPORT
wait_port $RPORT
# The Erlang VM's process (beam.smp) is the one whose CPU and memory count.
R_BEAM=$(pgrep -f "beam.smp.*warren-bench-rmq" | head -1)
RMQ_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)

declare -A ARGS=(
  [S1]="--producers 1 --consumers 1 --size 16 --autoack"
  [S2]="--producers 1 --consumers 1 --size 16 --confirm 1000 --prefetch 1000"
  [S3]="--producers 1 --consumers 1 --size 1024 --persistent --durable --confirm 1000 --prefetch 1000"
  [S4]="--producers 1 --fanout 10 --size 16 --autoack"
  [S5]="--producers 50 --consumers 50 --queues 50 --rate 100 --size 16 --prefetch 100"
  [S6]="--producers 1 --consumers 1 --size 16 --backlog 1000000 --confirm 1000 --prefetch 1000"
)
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(S1 S2 S3 S4 S5 S6)

for c in $CLIENTS; do
  for s in "${scenarios[@]}"; do
    args=${ARGS[$s]:?unknown scenario $s}
    d=$DURATION
    [ "$s" = S6 ] && d=120
    for i in $(seq "$REPEAT"); do
      for b in warren rabbitmq; do
        if [ $b = warren ]; then port=$WPORT pid=$W_PID; else port=$RPORT pid=$R_BEAM; fi
        # shellcheck disable=SC2086
        timeout 300 "$PERF" --client "$c" --port $port --duration "$d" --broker-pid "$pid" --queue-prefix "bench-$s" $args --json \
          >"$OUT/$s.$c.$b.$i.json" 2>"$OUT/$s.$c.$b.$i.err" || echo "$s $c $b run $i failed" >&2
      done
    done
  done
done

python3 - "$OUT" "$RMQ_VERSION" "$CLIENTS" "${scenarios[@]}" <<'PY'
import json, statistics, sys, glob, os
out, version, clients, scenarios = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
def load(s, c, b):
    rows = []
    for f in sorted(glob.glob(f"{out}/{s}.{c}.{b}.*.json")):
        try:
            rows.append(json.loads(open(f).read().strip().splitlines()[-1]))
        except Exception:
            pass
    return rows
def med(rows, key):
    vals = [key(r) for r in rows if key(r) is not None]
    return statistics.median(vals) if vals else None
def rate(r):
    bl = r.get("backlog")
    if bl:
        return None
    return r["confirmed_rate"] if r["options"]["confirm"] else r["received_rate"]
metrics = [
    ("msg/s (confirmed if confirms, else received)", rate),
    ("received msg/s", lambda r: r["received_rate"]),
    ("p99 latency ms", lambda r: r["latency"]["p99_ms"] if r["latency"]["count"] else None),
    ("broker CPU %", lambda r: r["broker"]["cpu_pct"]),
    # Broker CPU over the messages of the run (confirmed if confirms, else
    # received; a backlog run's over both phases): what one message costs.
    ("broker CPU us/msg", lambda r: r["broker"].get("cpu_us_per_msg")),
    ("broker peak RSS MiB", lambda r: r["broker"]["peak_rss_mib"]),
]
def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
tables = []
for c in clients:
    lines = [f"RabbitMQ {version} vs Warren, client {c}, medians of {{n}} alternating runs each", ""]
    lines.append("| scenario | metric | Warren | RabbitMQ | Warren/RabbitMQ |")
    lines.append("|---|---|---|---|---|")
    n = 0
    for s in scenarios:
        w, r = load(s, c, "warren"), load(s, c, "rabbitmq")
        n = max(n, len(w), len(r))
        ms = list(metrics)
        if s == "S6":
            ms = [
                ("publish msg/s", lambda x: (x.get("backlog") or {}).get("publish_rate")),
                ("drain msg/s", lambda x: (x.get("backlog") or {}).get("drain_rate")),
            ] + metrics[3:]
        for name, key in ms:
            a, b = med(w, key), med(r, key)
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            lines.append(f"| {s} | {name} | {fmt(a)} | {fmt(b)} | {ratio} |")
    lines[0] = lines[0].format(n=n)
    tables.append("\n".join(lines))
text = "\n\n".join(tables)
open(os.path.join(out, "summary.md"), "w").write(text + "\n")
print(text)
PY
