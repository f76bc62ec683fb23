#!/usr/bin/env bash
# The management web UI in a real browser: Debian's headless Chromium,
# driven by selenium (PyPI, in a venv) through Debian's chromedriver,
# against a real `warren` process on loopback with traffic from
# `warren-perf`. Nothing here downloads a browser or a driver.
#
#   bash tests/web-ui/run.sh
#   WARREN_BIN=... WARREN_PERF=... bash tests/web-ui/run.sh   # skip the build
#   UI_SKIP_INSTALL=1 bash tests/web-ui/run.sh                  # never call apt/pip
#
# Screenshots of every page go to target/ui-artefacts/ (UI_ARTEFACTS to
# change it). Ends with a line `N passed, N failed`; exits non-zero if a
# step failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
VENV="$REPO/target/web-ui-venv"
ART="${UI_ARTEFACTS:-$REPO/target/ui-artefacts}"

log() { printf '[web-ui %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# ---------------------------------------------------------------- installs

missing=()
for p in chromium chromium-driver; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    [ -n "${UI_SKIP_INSTALL:-}" ] && die "missing packages: ${missing[*]}"
    log "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install failed"
fi
[ -x /usr/bin/chromium ] || die "no /usr/bin/chromium"
[ -x /usr/bin/chromedriver ] || die "no /usr/bin/chromedriver"

stamp="$VENV/.web-ui-requirements"
if ! cmp -s "$HERE/requirements.txt" "$stamp"; then
    [ -n "${UI_SKIP_INSTALL:-}" ] && die "selenium not installed in $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "venv failed"
    log "pip install -r tests/web-ui/requirements.txt"
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" || die "pip install failed"
    cp "$HERE/requirements.txt" "$stamp"
fi

# ---------------------------------------------------------------- builds

if [ -z "${WARREN_BIN:-}" ] || [ -z "${WARREN_PERF:-}" ]; then
    log "cargo build -p warren-server -p warren-perf"
    (cd "$REPO" && cargo build -j 1 -q --locked -p warren-server -p warren-perf) || die "build failed"
    WARREN_BIN="${WARREN_BIN:-$TARGET/debug/warren}"
    WARREN_PERF="${WARREN_PERF:-$TARGET/debug/warren-perf}"
fi
[ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"
[ -x "$WARREN_PERF" ] || die "no warren-perf binary at $WARREN_PERF"

# ---------------------------------------------------------------- broker

WORK="$(mktemp -d /tmp/warren-web-ui.XXXXXX)"
# The processes this script started, stopped by their ids at exit.
BROKER_PIDS=()
PERF_PIDS=()
cleanup() {
    local p
    for p in "${PERF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BROKER_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/warren.toml" <<EOF
# Written by tests/web-ui/run.sh for one run.
data_dir = "$WORK/data"
log = "info"
vhosts = ["/"]

[[users]]
name = "guest"
password = "guest"
vhosts = ["/"]
loopback_only = true
tags = ["administrator"]

[management]
# Rates sampled every second, so the charts move within the test's time.
stats_interval_ms = 1000
EOF

# logged_port LOG MESSAGE: the port on the first line of LOG with MESSAGE
# and a `listen=127.0.0.1:PORT` field (empty until warren logs it).
logged_port() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$1" | grep -m1 -F "$2" \
        | grep -m1 -o 'listen=127\.0\.0\.1:[0-9]*' | cut -d: -f2 || true
}

# start_warren CONFIG LOG: starts a broker on free ports (port 0: the
# kernel picks them and warren logs the ones it bound); sets STARTED_PID,
# STARTED_AMQP and STARTED_HTTP.
start_warren() {
    NO_COLOR=1 "$WARREN_BIN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
        --config "$1" >"$2" 2>&1 &
    STARTED_PID=$!
    BROKER_PIDS+=("$STARTED_PID")
    STARTED_AMQP=""
    STARTED_HTTP=""
    for _ in $(seq 100); do
        STARTED_AMQP="$(logged_port "$2" 'warren started')"
        STARTED_HTTP="$(logged_port "$2" 'management API listening')"
        [ -n "$STARTED_AMQP" ] && [ -n "$STARTED_HTTP" ] && return 0
        kill -0 "$STARTED_PID" 2>/dev/null || { cat "$2" >&2; die "warren exited at start"; }
        sleep 0.1
    done
    cat "$2" >&2
    die "warren did not log its addresses within 10 s"
}

start_warren "$WORK/warren.toml" "$WORK/warren.log"
BROKER_PID=$STARTED_PID
PORT=$STARTED_AMQP
HTTP_PORT=$STARTED_HTTP
log "warren pid $BROKER_PID: AMQP 127.0.0.1:$PORT, management 127.0.0.1:$HTTP_PORT"

# A second broker whose free-disk limit no disk meets: its disk alarm is
# raised from the start, for the alarm banner.
sed -e "s|$WORK/data|$WORK/alarm-data|" "$WORK/warren.toml" >"$WORK/alarm.toml"
printf '\n[limits]\ndisk_free_limit = "1000PB"\n' >>"$WORK/alarm.toml"
start_warren "$WORK/alarm.toml" "$WORK/alarm.log"
ALARM_HTTP_PORT=$STARTED_HTTP

# Steady traffic for the charts: a publisher with confirms and a consumer
# on one queue, for longer than the test runs (it is stopped at the end).
"$WARREN_PERF" --port "$PORT" --producers 1 --consumers 1 --rate 200 --confirm 50 \
    --queue-prefix ui-perf --duration 600 --quiet >"$WORK/perf.log" 2>&1 &
PERF_PIDS+=($!)

# ---------------------------------------------------------------- browser

rm -rf "$ART"
mkdir -p "$ART"
status=0
WARREN_URL="http://127.0.0.1:$HTTP_PORT" WARREN_ALARM_URL="http://127.0.0.1:$ALARM_HTTP_PORT" WARREN_AMQP_PORT="$PORT" UI_ARTEFACTS="$ART" UI_WORK="$WORK" \
    timeout -k 10 240 "$VENV/bin/python" "$HERE/test_ui.py" || status=$?
if [ $status -ne 0 ]; then
    log "warren log tail:"
    sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/warren.log" | tail -n 20 >&2
fi
log "screenshots in $ART"
exit $status
