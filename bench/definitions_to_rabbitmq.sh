#!/usr/bin/env bash
# Issue 13: Warren's definitions export imports into RabbitMQ. Imports
# RabbitMQ 3.10.8's exported fixture into Warren, adds a few things, exports
# Warren's definitions, imports that file into Debian's RabbitMQ
# (rabbitmqctl import_definitions) and compares what RabbitMQ then exports
# with what Warren exported, kind by kind. Needs rabbitmq-server (Debian)
# and a release build; not part of the test gate (RabbitMQ is not a
# dependency of Warren).
set -euo pipefail
cd "$(dirname "$0")/.."
WARREN=${WARREN:-target/release/warren}
WORK=$(mktemp -d /tmp/warren-defs-rmq.XXXXXX)
RMQ_HOME="$WORK/rmq"
mkdir -p "$RMQ_HOME"
W_PID= R_PID=
cleanup() {
  [ -n "$W_PID" ] && kill "$W_PID" 2>/dev/null || true
  [ -n "$R_PID" ] && kill "$R_PID" 2>/dev/null || true
  pkill -f "beam.smp.*defs@localhost" 2>/dev/null || true
  for _ in $(seq 100); do pgrep -f "beam.smp.*defs@localhost" >/dev/null || break; sleep 0.1; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
NO_COLOR=1 "$WARREN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:15698 --metrics-listen 127.0.0.1:0 --data-dir "$WORK/wdata" >"$WORK/warren.log" 2>&1 &
W_PID=$!
for _ in $(seq 200); do grep -q "warren started" "$WORK/warren.log" && break; sleep 0.05; done
API=http://127.0.0.1:15698/api
curl -sf -u guest:guest -H 'content-type: application/json' -X POST --data-binary @tests/fixtures/rabbitmq-3.10-definitions.json "$API/definitions"
curl -sf -u guest:guest -X PUT -d '{"pattern":"^extra","definition":{"max-length":5},"priority":2,"apply-to":"queues"}' "$API/policies/%2F/extra"
curl -sf -u guest:guest -X PUT -d '{"durable":true,"arguments":{"x-message-ttl":1000}}' "$API/queues/%2F/extra.q"
curl -sf -u guest:guest "$API/definitions" >"$WORK/warren-export.json"

echo "[]." > "$RMQ_HOME/enabled_plugins"
export HOME=$RMQ_HOME RABBITMQ_NODENAME=defs@localhost
HOME=$RMQ_HOME RABBITMQ_NODE_PORT=25699 RABBITMQ_DIST_PORT=25698 \
  RABBITMQ_MNESIA_BASE=$RMQ_HOME/mnesia RABBITMQ_LOG_BASE=$RMQ_HOME/log \
  RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_HOME/enabled_plugins \
  /usr/lib/rabbitmq/bin/rabbitmq-server >"$WORK/rabbitmq.log" 2>&1 &
R_PID=$!
CTL="/usr/lib/rabbitmq/bin/rabbitmqctl -n defs@localhost"
for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/25699) 2>/dev/null && break; sleep 0.1; done
$CTL await_startup --timeout 120 >/dev/null
$CTL import_definitions "$WORK/warren-export.json"
$CTL export_definitions "$WORK/rabbitmq-export.json" >/dev/null
# rabbitmqctl's export leaves internal exchanges out: list them apart.
for v in $(python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(open(sys.argv[1]))["vhosts"]))' "$WORK/warren-export.json"); do
  $CTL list_exchanges -q -p "$v" name internal | awk -v v="$v" '$2 == "true" {print v "\t" $1}'
done >"$WORK/rabbitmq-internal.tsv"
python3 - "$WORK/warren-export.json" "$WORK/rabbitmq-export.json" "$WORK/rabbitmq-internal.tsv" <<'PY'
import json, sys
w, r = (json.load(open(p)) for p in sys.argv[1:3])
internal = {tuple(l.rstrip("\n").split("\t")) for l in open(sys.argv[3]) if l.strip()}
for x in w["exchanges"]:
    if x.get("internal") and (x["vhost"], x["name"]) in internal:
        r["exchanges"].append(dict(x))
def key(kind, x):
    if kind == "users": return x["name"], x["password_hash"], tuple(sorted(x["tags"]))
    if kind == "vhosts": return x["name"]
    if kind == "permissions": return x["user"], x["vhost"], x["configure"], x["write"], x["read"]
    if kind == "topic_permissions": return x["user"], x["vhost"], x["exchange"], x["write"], x["read"]
    if kind == "policies": return x["vhost"], x["name"], x["pattern"], x["apply-to"], x["priority"], json.dumps(x["definition"], sort_keys=True)
    if kind == "queues": return x["vhost"], x["name"], x["durable"], x["auto_delete"], json.dumps(x["arguments"], sort_keys=True)
    if kind == "exchanges": return x["vhost"], x["name"], x["type"], x["durable"], x["auto_delete"], x.get("internal", False), json.dumps(x["arguments"], sort_keys=True)
    if kind == "bindings": return x["vhost"], x["source"], x["destination"], x["destination_type"], x["routing_key"], json.dumps(x["arguments"], sort_keys=True)
    if kind == "parameters": return x["vhost"], x["component"], x["name"], json.dumps(x["value"], sort_keys=True)
bad = 0
for kind in ["users", "vhosts", "permissions", "topic_permissions", "policies", "queues", "exchanges", "bindings", "parameters"]:
    ws = {key(kind, x) for x in w.get(kind, [])}
    rs = {key(kind, x) for x in r.get(kind, [])}
    missing = ws - rs
    print(f"{kind}: warren exported {len(ws)}, rabbitmq has {len(rs)}, missing in rabbitmq {len(missing)}")
    for m in sorted(missing, key=str):
        print("   missing:", m)
    bad += len(missing)
sys.exit(1 if bad else 0)
PY
