#!/usr/bin/env bash
# Warren's interop suite: real RabbitMQ client libraries against a real
# `warren` process on loopback. See interop/README.md.
#
#   bash interop/run.sh                      # everything
#   INTEROP_CLIENTS="pika go" bash interop/run.sh
#   INTEROP_SCENARIOS="hello rpc" bash interop/run.sh
#   WARREN_BIN=/path/to/warren bash interop/run.sh   # skip building warren
#   INTEROP_WRITE_DOCS=1 bash interop/run.sh         # also refresh docs/compatibility.md
#   INTEROP_SKIP_INSTALL=1 bash interop/run.sh       # never call apt/pip/npm
#
# The `pyrabbit2` and `rabbitmqadmin` columns drive warren's management HTTP
# API with those third-party clients (the `mgmt_*` rows); the AMQP clients'
# cells in those rows show "—", as do these two columns in the AMQP rows.
#
# The `lapin-relay` and `pika-relay` columns run the lapin and pika programs
# through relay.py, a TCP relay in front of warren, for the scenarios in
# INTEROP_RELAY_SCENARIOS.
#
# Ends with a line `N passed, N failed`; exits non-zero if any cell failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BUILD="$HERE/build"
VENV="$HERE/.venv"
export CARGO_TARGET_DIR_INTEROP="${CARGO_TARGET_DIR_INTEROP:-$REPO/target/interop-rust}"
CELL_TIMEOUT="${INTEROP_TIMEOUT:-45}"
START_TS=$(date +%s)

SCENARIOS_ALL="hello work_queues pubsub routing topics rpc confirms_individual
confirms_batch confirms_async mandatory_return nack_requeue prefetch_limit
exclusive_locked passive_404 redeclare_406 wrong_password large_message
many_channels heartbeat server_cancel celery_task close_clean close_after_burst
cc_bcc channel_close_race mgmt_overview mgmt_access mgmt_topology mgmt_publish_get
mgmt_queue_counts mgmt_connections mgmt_policies mgmt_export mgmt_import
tls_hello tls_external consumer_timeout delivery_limit delayed_retry"
CLIENTS_ALL="pika aio-pika kombu celery amqplib-cb amqplib-promise go java lapin amqprs amqp-tools
lapin-relay pika-relay pyrabbit2 rabbitmqadmin"
SCENARIOS="${INTEROP_SCENARIOS:-$SCENARIOS_ALL}"
CLIENTS="${INTEROP_CLIENTS:-$CLIENTS_ALL}"
# What the `*-relay` columns run; their other cells show "—".
RELAY_SCENARIOS="${INTEROP_RELAY_SCENARIOS:-hello close_clean close_after_burst channel_close_race wrong_password}"

log() { printf '[interop %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }
# wants CLIENT: that client runs, directly or through the relay.
wants() { [[ " $(echo $CLIENTS) " == *" $1 "* || " $(echo $CLIENTS) " == *" $1-relay "* ]]; }
# wants_python: some client runs from interop/.venv.
wants_python() {
    local c
    for c in pika aio-pika kombu celery pyrabbit2 rabbitmqadmin; do wants "$c" && return 0; done
    return 1
}

# ---------------------------------------------------------------- installs
# Each step checks before it acts, so a second run installs nothing.

APT_UPDATED=0
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ -n "${INTEROP_SKIP_INSTALL:-}" ] && die "missing packages: ${missing[*]}"
    if [ $APT_UPDATED -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install failed"
}

install_all() {
    local pkgs=()
    wants go && pkgs+=(golang-go golang-github-rabbitmq-amqp091-go-dev)
    wants java && { pkgs+=(librabbitmq-client-java libslf4j-java); command -v javac >/dev/null || pkgs+=(default-jdk-headless); }
    wants amqp-tools && pkgs+=(amqp-tools)
    if wants amqplib-cb || wants amqplib-promise; then
        command -v node >/dev/null || pkgs+=(nodejs)
        command -v npm >/dev/null || pkgs+=(npm)
    fi
    if wants_python; then
        python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
    fi
    command -v openssl >/dev/null || pkgs+=(openssl)
    apt_install "${pkgs[@]}"

    if wants_python; then
        local req="$HERE/python/requirements.txt" stamp="$VENV/.interop-requirements"
        [ -x "$VENV/bin/python" ] || { log "python venv at $VENV"; python3 -m venv "$VENV" || die "venv failed"; }
        if ! cmp -s "$req" "$stamp"; then
            [ -n "${INTEROP_SKIP_INSTALL:-}" ] && die "python requirements not installed"
            log "pip install -r python/requirements.txt"
            "$VENV/bin/pip" install -q -r "$req" || die "pip install failed"
            cp "$req" "$stamp"
        fi
    fi
    if wants amqplib-cb || wants amqplib-promise; then
        local stamp="$HERE/node/node_modules/.interop-lock"
        if ! cmp -s "$HERE/node/package-lock.json" "$stamp"; then
            [ -n "${INTEROP_SKIP_INSTALL:-}" ] && die "node modules not installed"
            log "npm ci in interop/node"
            (cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
            cp "$HERE/node/package-lock.json" "$stamp"
        fi
    fi
}

# ------------------------------------------------------------------ builds

build_all() {
    mkdir -p "$BUILD"
    if [ -z "${WARREN_BIN:-}" ]; then
        log "cargo build -p warren-server"
        (cd "$REPO" && cargo build -j 1 -q -p warren-server) || die "warren build failed"
        WARREN_BIN="$REPO/target/debug/warren"
    fi
    [ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"

    if wants go; then
        log "go build (amqp091-go from Debian, GOPATH mode, no network)"
        (cd "$HERE/go" && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= \
            go build -o "$BUILD/go-client" .) || die "go build failed"
    fi
    if wants java; then
        local src="$HERE/java/Interop.java"
        if [ ! -f "$BUILD/java/Interop.class" ] || [ "$src" -nt "$BUILD/java/Interop.class" ]; then
            log "javac (amqp-client from Debian)"
            rm -rf "$BUILD/java" && mkdir -p "$BUILD/java"
            javac -nowarn -cp /usr/share/java/amqp-client.jar -d "$BUILD/java" "$src" || die "javac failed"
        fi
    fi
    if wants lapin || wants amqprs; then
        log "cargo build (lapin, amqprs) in interop/rust"
        (cd "$HERE/rust" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR_INTEROP" cargo build -j 1 -q --locked) \
            || die "interop/rust build failed"
    fi
}

client_cmd() {
    local py="$VENV/bin/python"
    case "$1" in
        pika|pika-relay) echo "$py $HERE/python/pika_client.py" ;;
        aio-pika) echo "$py $HERE/python/aiopika_client.py" ;;
        kombu) echo "$py $HERE/python/kombu_client.py" ;;
        celery) echo "$py $HERE/python/celery_client.py" ;;
        amqplib-cb) echo "node $HERE/node/client.js callback" ;;
        amqplib-promise) echo "node $HERE/node/client.js promise" ;;
        go) echo "$BUILD/go-client" ;;
        java) echo "java -Xshare:auto -XX:TieredStopAtLevel=1 -cp $BUILD/java:/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-nop.jar Interop" ;;
        lapin|lapin-relay) echo "$CARGO_TARGET_DIR_INTEROP/debug/lapin_client" ;;
        amqprs) echo "$CARGO_TARGET_DIR_INTEROP/debug/amqprs_client" ;;
        amqp-tools) echo "bash $HERE/c/amqp_tools.sh" ;;
        pyrabbit2) echo "$py $HERE/python/pyrabbit2_client.py" ;;
        rabbitmqadmin) echo "$py $HERE/python/rabbitmqadmin_client.py" ;;
        *) die "unknown client $1" ;;
    esac
}

# ------------------------------------------------------------------ broker

WORK=""
BROKER_PID=""
RELAY_PID=""
cleanup() {
    if [ -n "$RELAY_PID" ]; then kill "$RELAY_PID" 2>/dev/null; fi
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null
    fi
    [ -n "$WORK" ] && [ -z "${INTEROP_KEEP:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

# make_certs DIR: a CA, a server certificate for localhost and 127.0.0.1,
# and a client certificate whose CN is the user EXTERNAL logs in as (PEM,
# and PKCS#12 for Java). Made per run with openssl; nothing is committed.
make_certs() {
    local d="$1"
    mkdir -p "$d"
    (
        cd "$d" || exit 1
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/O=Warren interop/CN=warren interop CA" \
            -keyout ca.key -out ca.pem 2>/dev/null &&
        openssl req -newkey rsa:2048 -nodes -subj "/O=Warren interop/CN=localhost" \
            -keyout server.key -out server.csr 2>/dev/null &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem 2>/dev/null &&
        openssl req -newkey rsa:2048 -nodes -subj "/O=Warren interop/CN=tls-client" \
            -keyout client.key -out client.csr 2>/dev/null &&
        printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext &&
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile client.ext -out client.pem 2>/dev/null &&
        openssl pkcs12 -export -in client.pem -inkey client.key -out client.p12 -passout pass:interop
    ) || die "openssl could not make the TLS certificates"
}

start_broker() {
    WORK="$(mktemp -d /tmp/warren-interop.XXXXXX)"
    make_certs "$WORK/tls"
    cat >"$WORK/warren.toml" <<EOF
# Written by interop/run.sh for one run.
data_dir = "$WORK/data"
log = "${WARREN_LOG:-info}"
vhosts = ["/"]

[[users]]
name = "guest"
password = "guest"
vhosts = ["/"]
loopback_only = true
# As RabbitMQ's default guest: the management API needs a management tag.
tags = ["administrator"]

# The user the client certificate names; it logs in with EXTERNAL only
# (its password is random and never used).
[[users]]
name = "tls-client"
password = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
vhosts = ["/"]
loopback_only = false

[tls]
listen = "127.0.0.1:0"
cert = "$WORK/tls/server.pem"
key = "$WORK/tls/server.key"
ca = "$WORK/tls/ca.pem"
verify_peer = true
fail_if_no_peer_cert = false
EOF
    # Port 0: the kernel picks free ports and warren logs the ones it bound,
    # so there is no window in which another process can take them. The
    # management API's line ("management API listening listen=...") comes
    # before the AMQP one ("warren started listen=..."): each port is read
    # from its own line.
    NO_COLOR=1 "$WARREN_BIN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --config "$WORK/warren.toml" >"$WORK/warren.log" 2>&1 &
    BROKER_PID=$!
    PORT=""
    HTTP_PORT=""
    TLS_PORT=""
    for _ in $(seq 100); do
        PORT="$(logged_port 'warren started')"
        HTTP_PORT="$(logged_port 'management API listening')"
        TLS_PORT="$(logged_port 'AMQPS listening')"
        [ -n "$PORT" ] && [ -n "$HTTP_PORT" ] && [ -n "$TLS_PORT" ] && break
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/warren.log" >&2; die "warren exited at start"; }
        sleep 0.1
    done
    [ -n "$PORT" ] && [ -n "$HTTP_PORT" ] && [ -n "$TLS_PORT" ] \
        || { cat "$WORK/warren.log" >&2; die "warren did not log its AMQP, AMQPS and management addresses within 10s"; }
    for p in "$PORT" "$HTTP_PORT" "$TLS_PORT"; do
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
            sleep 0.1
        done
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "warren does not accept on 127.0.0.1:$p"
    done
    log "warren pid $BROKER_PID on 127.0.0.1:$PORT, AMQPS on 127.0.0.1:$TLS_PORT, management API on 127.0.0.1:$HTTP_PORT (log: $WORK/warren.log)"
}

# logged_port MESSAGE: the port of the first log line with MESSAGE and a
# `listen=127.0.0.1:PORT` field (empty until warren logs it).
logged_port() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/warren.log" | grep -m1 -F "$1" \
        | grep -m1 -o 'listen=127\.0\.0\.1:[0-9]*' | cut -d: -f2
}

# A relay in front of the broker, for the `*-relay` columns (see relay.py).
start_relay() {
    [[ " $(echo $CLIENTS) " == *"-relay "* ]] || return 0
    local py=python3
    [ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
    "$py" "$HERE/relay.py" 127.0.0.1 "$PORT" >"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
    RELAY_PORT=""
    for _ in $(seq 100); do
        RELAY_PORT="$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$WORK/relay.log" | cut -d: -f2)"
        [ -n "$RELAY_PORT" ] && break
        kill -0 "$RELAY_PID" 2>/dev/null || { cat "$WORK/relay.log" >&2; die "relay exited at start"; }
        sleep 0.1
    done
    [ -n "$RELAY_PORT" ] || die "relay did not print its port within 10s"
    log "relay pid $RELAY_PID on 127.0.0.1:$RELAY_PORT -> $PORT (log: $WORK/relay.log)"
}

# --------------------------------------------------------------------- run

run_cells() {
    RESULTS="$WORK/results"
    mkdir -p "$RESULTS"
    export WARREN_HOST=127.0.0.1 WARREN_PORT="$PORT" WARREN_USER=guest WARREN_PASSWORD=guest
    export WARREN_HTTP_PORT="$HTTP_PORT" WARREN_HTTP_URL="http://127.0.0.1:$HTTP_PORT"
    export INTEROP_WORK="$WORK"
    export WARREN_TLS_PORT="$TLS_PORT" WARREN_TLS_CA="$WORK/tls/ca.pem" WARREN_TLS_CLIENT_USER=tls-client
    export WARREN_TLS_CLIENT_CERT="$WORK/tls/client.pem" WARREN_TLS_CLIENT_KEY="$WORK/tls/client.key"
    export WARREN_TLS_CLIENT_P12="$WORK/tls/client.p12" WARREN_TLS_CLIENT_P12_PASSWORD=interop
    for c in $CLIENTS; do
        local cmd t0 rc
        cmd="$(client_cmd "$c")"
        t0=$(date +%s)
        local port="$PORT"
        [[ $c == *-relay ]] && port="$RELAY_PORT"
        for s in $SCENARIOS; do
            local out="$RESULTS/$c.$s"
            if [[ $c == *-relay && " $(echo $RELAY_SCENARIOS) " != *" $s "* ]]; then
                echo "n/a: no such scenario through the relay (INTEROP_RELAY_SCENARIOS)" >"$out.log"
                echo 3 >"$out.rc"
                continue
            fi
            (cd "$HERE" && WARREN_PORT="$port" timeout -k 5 "$CELL_TIMEOUT" $cmd "$s") >"$out.log" 2>&1 </dev/null
            rc=$?
            echo "$rc" >"$out.rc"
            case $rc in
                0) ;;
                3) ;;
                124|137) log "TIMEOUT $c $s (${CELL_TIMEOUT}s)" ;;
                *) log "FAIL $c $s (exit $rc)" ;;
            esac
            kill -0 "$BROKER_PID" 2>/dev/null || { log "warren died during $c $s"; break 2; }
            [[ $c != *-relay ]] || kill -0 "$RELAY_PID" 2>/dev/null || { log "relay died during $c $s"; break 2; }
        done
        log "$c done in $(( $(date +%s) - t0 ))s"
    done
}

cell() {
    local f="$RESULTS/$1.$2.rc"
    [ -f "$f" ] || { echo "not run"; return; }
    case "$(cat "$f")" in
        0) echo pass ;;
        3) grep -q '^n/a: no such scenario' "$RESULTS/$1.$2.log" && echo "—" || echo n/a ;;
        124|137) echo "FAIL (timeout)" ;;
        *) echo FAIL ;;
    esac
}

report() {
    local passed=0 failed=0 matrix="$HERE/last-matrix.md"
    {
        printf '| scenario |'; for c in $CLIENTS; do printf ' %s |' "$c"; done; echo
        printf '|---|'; for c in $CLIENTS; do printf -- '---|'; done; echo
        for s in $SCENARIOS; do
            local row="| $s |"
            for c in $CLIENTS; do row+=" $(cell "$c" "$s") |"; done
            echo "$row"
        done
        echo
        echo "pass: the scenario passed; FAIL: it failed (see the runner's output);"
        echo "n/a: the client library cannot express it (reasons below);"
        echo "—: the scenario is not part of that client's program."
        echo
        echo "Why each n/a cell cannot be expressed, in the client program's words:"
        echo
        for s in $SCENARIOS; do for c in $CLIENTS; do
            if [ "$(cell "$c" "$s")" = "n/a" ]; then
                echo "- $c / $s:$(grep -m1 '^n/a:' "$RESULTS/$c.$s.log" | cut -c5-)"
            fi
        done; done
    } >"$matrix.tmp"
    for s in $SCENARIOS; do for c in $CLIENTS; do
        case "$(cell "$c" "$s")" in
            pass) passed=$((passed + 1)) ;;
            FAIL*|"not run") failed=$((failed + 1)) ;;
        esac
    done; done
    mv "$matrix.tmp" "$matrix"
    echo
    cat "$matrix"
    if [ $failed -gt 0 ]; then
        echo
        echo "=== failing cells (last lines of each) ==="
        for s in $SCENARIOS; do for c in $CLIENTS; do
            case "$(cell "$c" "$s")" in
                FAIL*) echo "--- $c / $s (exit $(cat "$RESULTS/$c.$s.rc"); 124 or 137 = killed after ${CELL_TIMEOUT}s)"
                       tail -n 15 "$RESULTS/$c.$s.log" 2>/dev/null ;;
            esac
        done; done
        echo
        echo "=== warren log tail ($WORK/warren.log) ==="
        sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/warren.log" | tail -n 40
        if [ -s "$WORK/relay.log" ]; then
            echo
            echo "=== relay log tail ($WORK/relay.log) ==="
            tail -n 20 "$WORK/relay.log"
        fi
    fi
    if [ -n "${INTEROP_WRITE_DOCS:-}" ]; then
        bash "$HERE/update-docs.sh" "$matrix" && log "docs/compatibility.md updated"
    fi
    echo
    log "timings: install+build ${BUILD_SECS}s, scenarios ${RUN_SECS}s, total $(( $(date +%s) - START_TS ))s"
    echo "$passed passed, $failed failed"
    [ $failed -eq 0 ]
}

[ -z "${INTEROP_SKIP_INSTALL:-}" ] && [ "$(id -u)" != 0 ] && log "warning: not root; installs may fail"
install_all
build_all
BUILD_SECS=$(( $(date +%s) - START_TS ))
start_broker
start_relay
T_RUN=$(date +%s)
run_cells
RUN_SECS=$(( $(date +%s) - T_RUN ))
report
