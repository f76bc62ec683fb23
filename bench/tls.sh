#!/usr/bin/env bash
# Side by side over TLS (AMQPS): Warren and RabbitMQ (Debian's
# rabbitmq-server, as in bench/compare.sh) on loopback, with one throwaway
# CA and server certificate made by openssl for both. Each scenario runs
# alternately Warren, RabbitMQ, Warren, ... with `warren-perf --tls`;
# with PLAIN=1 the same scenarios also run over plain TCP in the same
# alternation, so each broker's cost of TLS shows beside the ratio.
#
#   bench/tls.sh [S1 S2]     (default S1 S2)
#
# Environment: REPEAT [3], DURATION [5] seconds per run, PLAIN [1],
# OUT [bench/results/tls-<time>].
# Needs: cargo build --release -p warren-server -p warren-perf; openssl; python3.
set -euo pipefail
cd "$(dirname "$0")/.."

WARREN=${WARREN:-target/release/warren}
PERF=${PERF:-target/release/warren-perf}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-5}
PLAIN=${PLAIN:-1}
OUT=${OUT:-bench/results/tls-$(date -u +%Y%m%dT%H%M%SZ)}
WPORT=5682 WTLS=5683
RPORT=5692 RTLS=5693
mkdir -p "$OUT"

if ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_rabbitmq

RMQ_HOME=$(mktemp -d /tmp/warren-bench-tls-rmq.XXXXXX)
WDATA=$(mktemp -d /tmp/warren-bench-tls-data.XXXXXX)
CERTS=$(mktemp -d /tmp/warren-bench-tls-certs.XXXXXX)
W_PID= R_PID= R_BEAM=
cleanup() {
  [ -n "$W_PID" ] && kill "$W_PID" 2>/dev/null || true
  [ -n "$R_BEAM" ] && kill "$R_BEAM" 2>/dev/null || true
  [ -n "$R_PID" ] && kill "$R_PID" 2>/dev/null || true
  # Bounded wait for both to exit before removing their directories.
  for _ in $(seq 100); do
    { [ -n "$R_BEAM" ] && kill -0 "$R_BEAM" 2>/dev/null; } || break
    sleep 0.1
  done
  wait 2>/dev/null || true
  rm -rf "$RMQ_HOME" "$WDATA" "$CERTS" 2>/dev/null || true
}
trap cleanup EXIT


# idle PID: waits (at most 120 s) until the broker uses under 10% of a core
# over a second. Both brokers are waited for before every run: after S1
# over TLS RabbitMQ goes on working through the publisher's data its TLS
# layer had already read, and on two cores that slows the next run,
# whichever broker it is for (a third of Warren's plain S1 rate, once).
idle() {
  local before after
  for _ in $(seq 120); do
    before=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
    sleep 1
    after=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
    [ $((after - before)) -lt 10 ] && return 0
  done
  echo "broker $1 still busy after 120 s" >&2
}

# A CA and a server certificate it signs, for localhost and 127.0.0.1
# (ECDSA P-256; both brokers read PKCS#8 keys). Made per run, never kept.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" -days 2 -subj "/CN=warren-bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$CERTS/server.key" -out "$CERTS/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  > "$CERTS/server.ext"
openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -set_serial 1 \
  -days 2 -extfile "$CERTS/server.ext" -out "$CERTS/server.pem" 2>/dev/null
chmod 644 "$CERTS"/*

# RabbitMQ's AMQPS listener and the same TLS versions Warren offers (1.3
# and 1.2); no client certificates asked for.
cat > "$RMQ_HOME/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$RTLS
ssl_options.cacertfile = $CERTS/ca.pem
ssl_options.certfile = $CERTS/server.pem
ssl_options.keyfile = $CERTS/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
EOF
start_rabbitmq "$RMQ_HOME" "$RPORT" benchtls 25692 "$OUT/rabbitmq.log" "$RMQ_HOME/rabbitmq.conf"
R_PID=$!
"$WARREN" --listen 127.0.0.1:$WPORT --tls-listen 127.0.0.1:$WTLS \
  --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" \
  --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$WDATA" >"$OUT/warren.log" 2>&1 &
W_PID=$!
wait_port $WTLS
wait_port $RTLS
wait_port $RPORT
# The Erlang VM's process (beam.smp) is the one whose CPU and memory count;
# found by this run's own temporary home, so no other node is ever touched.
R_BEAM=$(pgrep -f "beam.smp.*$RMQ_HOME" | head -1 || true)
[ -n "$R_BEAM" ] || { echo "RabbitMQ's beam.smp not found; see $OUT/rabbitmq.log" >&2; exit 1; }
RMQ_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
ERLANG_VERSION=$(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null || echo unknown)

declare -A ARGS=(
  [S1]="--producers 1 --consumers 1 --size 16 --autoack"
  [S2]="--producers 1 --consumers 1 --size 16 --confirm 1000 --prefetch 1000"
)
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(S1 S2)
transports=(tls)
[ "$PLAIN" = 1 ] && transports+=(plain)

for s in "${scenarios[@]}"; do
  args=${ARGS[$s]:?unknown scenario $s (S1 or S2)}
  for i in $(seq "$REPEAT"); do
    for t in "${transports[@]}"; do
      for b in warren rabbitmq; do
        if [ $b = warren ]; then pid=$W_PID plain=$WPORT tls=$WTLS; else pid=$R_BEAM plain=$RPORT tls=$RTLS; fi
        if [ $t = tls ]; then conn="--tls --tls-ca $CERTS/ca.pem --port $tls"; else conn="--port $plain"; fi
        idle "$W_PID"
        idle "$R_BEAM"
        # shellcheck disable=SC2086
        timeout 300 "$PERF" $conn --duration "$DURATION" --broker-pid "$pid" --queue-prefix "bench-tls-$s" \
          $args --json >"$OUT/$s.$t.$b.$i.json" 2>"$OUT/$s.$t.$b.$i.err" || echo "$s $t $b run $i failed" >&2
      done
    done
  done
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$RMQ_VERSION" "$ERLANG_VERSION" "$LOAD" "${scenarios[@]}" <<'PY'
import json, statistics, sys, glob, os
out, version, erlang, loadavg, scenarios = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
def load(s, t, b):
    rows = []
    for f in sorted(glob.glob(f"{out}/{s}.{t}.{b}.*.json")):
        try:
            rows.append(json.loads(open(f).read().strip().splitlines()[-1]))
        except Exception:
            pass
    return rows
def med(rows, key):
    vals = [key(r) for r in rows if key(r) is not None]
    return statistics.median(vals) if vals else None
def rate(r):
    return r["confirmed_rate"] if r["options"]["confirm"] else r["received_rate"]
def cpu_us(r):
    # Broker CPU over the timed window per message counted in it.
    n = rate(r) * r["duration_s"]
    return r["broker"]["cpu_s"] / n * 1e6 if r.get("broker") and n else None
metrics = [
    ("msg/s (confirmed if confirms, else received)", rate, "{:,.0f}"),
    ("broker CPU us/msg", cpu_us, "{:.2f}"),
    ("broker CPU %", lambda r: r["broker"]["cpu_pct"], "{:.0f}"),
    ("p99 latency ms", lambda r: r["latency"]["p99_ms"] if r["latency"]["count"] else None, "{:.1f}"),
    ("errors (sum)", None, "{:.0f}"),
]
lines = [f"Warren vs RabbitMQ {version} (Erlang {erlang}), medians of {{n}} alternating runs each", ""]
lines.append("| scenario | transport | metric | Warren | RabbitMQ | Warren/RabbitMQ |")
lines.append("|---|---|---|---|---|---|")
n = 0
sessions = set()
for s in scenarios:
    for t in ("tls", "plain"):
        w, r = load(s, t, "warren"), load(s, t, "rabbitmq")
        if not w and not r:
            continue
        n = max(n, len(w), len(r))
        for row in w + r:
            if row.get("tls"):
                sessions.add(row["tls"])
        for name, key, fmt in metrics:
            if key is None:
                a, b = sum(x["errors"] for x in w), sum(x["errors"] for x in r)
            else:
                a, b = med(w, key), med(r, key)
            ratio = f"{a / b:.2f}" if key is not None and a is not None and b else "-"
            fa = fmt.format(a) if a is not None else "-"
            fb = fmt.format(b) if b is not None else "-"
            lines.append(f"| {s} | {t} | {name} | {fa} | {fb} | {ratio} |")
lines[0] = lines[0].format(n=n)
cost = []
for s in scenarios:
    for b in ("warren", "rabbitmq"):
        tl, pl = med(load(s, "tls", b), rate), med(load(s, "plain", b), rate)
        if tl and pl:
            cost.append(f"| {s} | {b} | {tl:,.0f} | {pl:,.0f} | {tl / pl:.2f} |")
if cost:
    lines += ["", "| scenario | broker | TLS msg/s | plain msg/s | TLS/plain |", "|---|---|---|---|---|"] + cost
lines.append("")
lines.append("TLS sessions negotiated: " + (", ".join(sorted(sessions)) or "none reported"))
lines.append(f"Load average at the end: {loadavg}")
text = "\n".join(lines)
open(os.path.join(out, "summary.md"), "w").write(text + "\n")
print(text)
PY
