# Shared by the bench scripts: start and stop a Warren broker on $PORT with
# data in $DATA. Only ever signals the broker it started, by pid.

# start_broker LOG [keep]: wipes $DATA unless "keep", starts $WARREN, waits
# (at most 30 s) until the port accepts; sets BROKER_PID and BROKER_T0 (ns).
start_broker() {
  local log=$1 keep=${2:-}
  [ "$keep" = keep ] || rm -rf "$DATA"
  BROKER_T0=$(date +%s%N)
  "$WARREN" --listen "127.0.0.1:$PORT" --management-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$DATA" >"$log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 3000); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "broker exited: $(tail -5 "$log")" >&2; return 1; }
    sleep 0.01
  done
  echo "broker did not listen on $PORT within 30 s" >&2
  return 1
}

# stop_broker: SIGTERM, then at most 10 s for a clean exit, then SIGKILL.
stop_broker() {
  [ -n "${BROKER_PID:-}" ] || return 0
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=
}

# rss_mib PID: the process's VmRSS in MiB.
rss_mib() {
  awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# ensure_rabbitmq: installs Debian's rabbitmq-server for a side-by-side
# run (never a dependency of Warren), keeping the package from starting a
# system-wide node on 5672.
ensure_rabbitmq() {
  if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
  fi
}

# start_rabbitmq HOME PORT NODE DIST_PORT LOG [CONFIG]: a throwaway node
# with no plugins, all its state under HOME, in the background (the
# caller finds its beam.smp by HOME's name).
start_rabbitmq() {
  local home=$1 port=$2 node=$3 dist=$4 log=$5 conf=${6:-}
  echo "[]." > "$home/enabled_plugins"
  HOME=$home RABBITMQ_NODE_PORT=$port RABBITMQ_NODENAME=$node@localhost \
    RABBITMQ_DIST_PORT=$dist RABBITMQ_MNESIA_BASE=$home/mnesia RABBITMQ_LOG_BASE=$home/log \
    RABBITMQ_ENABLED_PLUGINS_FILE=$home/enabled_plugins ${conf:+RABBITMQ_CONFIG_FILE=$conf} \
    /usr/lib/rabbitmq/bin/rabbitmq-server >>"$log" 2>&1 &
}

# stop_rabbitmq PATTERN [SIGNAL]: signals the beam.smp whose command line
# matches PATTERN (a node's HOME) and waits, bounded, for it to exit.
stop_rabbitmq() {
  pkill "-${2:-TERM}" -f "beam.smp.*$1" 2>/dev/null || true
  for _ in $(seq 100); do
    pgrep -f "beam.smp.*$1" >/dev/null || return 0
    sleep 0.1
  done
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (at most 60 s).
wait_port() {
  for _ in $(seq 6000); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "port $1 did not open" >&2
  return 1
}
