"""pyrabbit2 (a Python client of RabbitMQ's management HTTP API) against
Warren's API; the AMQP side of each scenario through pika.

Every value pyrabbit2 returns is checked against what RabbitMQ 3.12 answers
for the same calls (paths, status codes, fields). An HTTP error surfaces as
pyrabbit2's own `HTTPError` (status, reason, path and body in its text) or,
for a 401, its `PermissionError`.
"""

import base64
import re

import pika
import pika.exceptions as pe
from pyrabbit2.api import Client, PermissionError as ApiPermissionError
from pyrabbit2.http import HTTPError

from common import (HOST, HTTP_PORT, PORT, USER, PASSWORD, NotApplicable, check,
                    check_eq, main, name)
from mgmt_common import (SHA256, amqp_connect, matching, one, pick, wait_forced_close,
                         wait_until)


def client(user=USER, password=PASSWORD):
    return Client(f"{HOST}:{HTTP_PORT}", user, password, timeout=10)


def expect_http(status, call, *args, **kwargs):
    """`call(*args)` must fail with HTTP `status`; returns the error."""
    what = f"{call.__name__}{args}"
    try:
        got = call(*args, **kwargs)
    except HTTPError as e:
        check_eq(e.status, status, f"{what}: HTTP status ({e})")
        return e
    raise AssertionError(f"{what}: want HTTP {status}, got success {got!r}")


def expect_401(call, *args):
    """pyrabbit2 turns a 401 into its own PermissionError."""
    try:
        got = call(*args)
    except ApiPermissionError as e:
        check("401" in str(e), f"{call.__name__}{args}: 401 in {e}")
        return
    raise AssertionError(f"{call.__name__}{args}: want 401, got {got!r}")


def names(items):
    return [i["name"] for i in items]


# ------------------------------------------------------------------ overview

def mgmt_overview():
    api = client()
    o = api.get_overview()
    v = o.get("rabbitmq_version")
    check(isinstance(v, str) and re.match(r"^\d+\.\d+\.\d+", v),
          f"overview rabbitmq_version: {v!r}")
    check(isinstance(o.get("management_version"), str) and o["management_version"],
          f"overview management_version: {o.get('management_version')!r}")
    check_eq(o.get("cluster_name"), api.get_cluster_name().get("name"),
             "cluster_name in overview and in /api/cluster-name")
    for k in ("connections", "channels", "exchanges", "queues", "consumers"):
        check(isinstance(o["object_totals"].get(k), int), f"object_totals.{k}: {o['object_totals']}")
    for k in ("messages", "messages_ready", "messages_unacknowledged"):
        check(isinstance(o["queue_totals"].get(k), int), f"queue_totals.{k}: {o['queue_totals']}")
    types = {t["name"] for t in o["exchange_types"]}
    check({"direct", "fanout", "topic", "headers"} <= types, f"exchange_types {types}")
    listeners = {(l["protocol"], l["port"]) for l in o["listeners"]}
    check(("amqp", PORT) in listeners, f"amqp listener on {PORT} in {listeners}")
    check(("http", HTTP_PORT) in listeners, f"http listener on {HTTP_PORT} in {listeners}")

    nodes = api.get_nodes()
    check_eq(names(nodes), [o["node"]], "nodes: the overview's node")
    check_eq(nodes[0].get("running"), True, "node running")
    check_eq(api.get_whoami(), {"name": USER, "tags": ["administrator"]}, "whoami")
    check_eq(api.is_alive(), True, "aliveness-test on /")
    check(isinstance(api.get_extensions(), list), "extensions is a list")

    # object_totals follows what exists.
    def totals():
        t = api.get_overview()["object_totals"]
        return (t["queues"], t["exchanges"])
    before = totals()
    q, ex = name("mgmt-ov-q"), name("mgmt-ov-x")
    api.create_queue("/", q, durable=False)
    api.create_exchange("/", ex, "fanout", durable=False)
    wait_until(totals, "object_totals (queues, exchanges) after one more of each",
               want=(before[0] + 1, before[1] + 1))
    api.delete_queue("/", q)
    api.delete_exchange("/", ex)


# -------------------------------------------------------------------- access

def mgmt_access():
    api = client()
    vh, user, pw = name("mgmt-vh"), name("mgmt-user"), "s3cret-pw"
    check_eq(api.create_vhost(vh), 201, "create_vhost: 201 Created")
    check_eq(api.create_vhost(vh), 204, "create_vhost again: 204 No Content")
    check(vh in api.get_vhost_names(), f"{vh} in get_vhost_names")
    v = api.get_vhost(vh)
    check_eq((v["name"], v["tracing"]), (vh, False), "get_vhost name, tracing")

    check_eq(api.create_user(user, pw, tags="monitoring,management"), 201, "create_user: 201")
    u = one(api.get_users(), "get_users", name=user)
    check_eq(sorted(u["tags"]), ["management", "monitoring"], "user tags")
    check_eq(u["hashing_algorithm"], SHA256, "hashing_algorithm")
    check(len(base64.b64decode(u["password_hash"])) == 36, f"password_hash is salt+sha256: {u['password_hash']!r}")

    # pyrabbit2's argument order: configure, read, write.
    check_eq(api.set_vhost_permissions(vh, user, "^cfg-.*", "^rd-.*", ".*"), 201, "permissions: 201")
    api.set_vhost_permissions(vh, USER, ".*", ".*", ".*")
    check_eq(api.get_permission(vh, USER),
             {"user": USER, "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"},
             "guest's permissions on the new vhost")
    want = {"user": user, "vhost": vh, "configure": "^cfg-.*", "write": ".*", "read": "^rd-.*"}
    check_eq(api.get_permission(vh, user), want, "get_permission")
    check_eq(one(api.get_vhost_permissions(vh), "vhost permissions", user=user), want, "vhost permissions")
    check_eq(api.get_user_permissions(user), [want], "user permissions")
    check_eq(one(api.get_permissions(), "all permissions", user=user), want, "all permissions")

    # The new user logs in to the API with its tags' rights...
    mine = client(user, pw)
    me = mine.get_whoami()
    check_eq((me["name"], sorted(me["tags"])), (user, ["management", "monitoring"]), "whoami as the new user")
    check(isinstance(mine.get_overview()["object_totals"]["queues"], int), "overview as a monitoring user")
    expect_401(mine.get_users)
    expect_401(client(user, "wrong-password").get_overview)
    # ...and to AMQP with its permissions.
    conn = amqp_connect(vh, user, pw)
    ch = conn.channel()
    ch.queue_declare("cfg-ok", durable=False)
    try:
        ch.queue_declare("other", durable=False)
        raise AssertionError("declaring 'other' without configure permission succeeded")
    except pe.ChannelClosedByBroker as e:
        check_eq(e.reply_code, 403, f"declare outside the configure pattern ({e.reply_text})")

    check_eq(api.delete_permission(vh, user), 204, "delete_permission")
    expect_http(404, api.get_permission, vh, user)
    check_eq(api.get_user_permissions(user), [], "user permissions after delete")
    # Deleting the user closes its connections (RabbitMQ: "user 'u' is deleted").
    check_eq(api.delete_user(user), 204, "delete_user")
    wait_forced_close(conn, text=f"CONNECTION_FORCED - user '{user}' is deleted")
    check(not matching(api.get_users(), name=user), "user gone from get_users")
    expect_401(mine.get_whoami)
    expect_http(404, api.delete_user, user)

    # Deleting the vhost closes the connections to it.
    gconn = amqp_connect(vh)
    check_eq(api.delete_vhost(vh), 204, "delete_vhost")
    wait_forced_close(gconn, text=f"CONNECTION_FORCED - vhost '{vh}' is deleted")
    expect_http(404, api.get_vhost, vh)
    check(vh not in api.get_vhost_names(), "vhost gone from get_vhost_names")
    expect_http(404, api.get_queue, vh, "cfg-ok")
    expect_http(404, api.delete_vhost, vh)


# ------------------------------------------------------------------ topology

def mgmt_topology():
    api = client()
    ex, q = name("mgmt-x"), name("mgmt-q")
    check_eq(api.create_exchange("/", ex, "direct", durable=False), True, "create_exchange")
    e = api.get_exchange("/", ex)
    check_eq(pick(e, "name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"),
             {"name": ex, "vhost": "/", "type": "direct", "durable": False, "auto_delete": False,
              "internal": False, "arguments": {}}, "get_exchange")
    check(ex in names(api.get_exchanges("/")), "exchange in get_exchanges('/')")
    check(ex in names(api.get_exchanges()), "exchange in get_exchanges()")

    check_eq(api.create_queue("/", q, durable=False, arguments={"x-message-ttl": 60000}), 201, "create_queue")
    check_eq(api.create_queue("/", q, durable=False, arguments={"x-message-ttl": 60000}), 204, "create_queue again")
    err = expect_http(400, api.create_queue, "/", q, durable=True)
    check_eq(err.detail, f"inequivalent arg 'durable' for queue '{q}' in vhost '/': "
                         f"received 'true' but current is 'false'", "redeclare reason")
    qi = api.get_queue("/", q)
    check_eq(pick(qi, "name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages",
                  "consumers"),
             {"name": q, "vhost": "/", "durable": False, "auto_delete": False, "exclusive": False,
              "arguments": {"x-message-ttl": 60000}, "messages": 0, "consumers": 0}, "get_queue")
    check(q in names(api.get_queues("/")), "queue in get_queues('/')")
    check(q in names(api.get_queues()), "queue in get_queues()")
    # pyrabbit2 pages through a name filter (page, name, use_regex).
    check_eq(names(api.get_queues("/", pattern=q)), [q], "get_queues with a name pattern")
    check_eq(names(api.get_queues("/", pattern=f"^{re.escape(q)}$", regex=True)), [q], "get_queues with a regex")
    expect_http(404, api.create_queue, name("no-such-vhost"), q)

    check_eq(api.create_binding("/", ex, q, "rk-1"), 201, "create_binding")
    bindings = api.get_queue_bindings("/", q)
    default = {"source": "", "vhost": "/", "destination": q, "destination_type": "queue",
               "routing_key": q, "arguments": {}, "properties_key": q}
    ours = {"source": ex, "vhost": "/", "destination": q, "destination_type": "queue",
            "routing_key": "rk-1", "arguments": {}, "properties_key": "rk-1"}
    check_eq(sorted(bindings, key=lambda b: b["source"]), [default, ours], "get_queue_bindings")
    check_eq(one(api.get_bindings(), "get_bindings", source=ex, destination=q), ours, "get_bindings")

    check_eq(api.delete_binding("/", ex, q, "rk-1"), 204, "delete_binding")
    check_eq(api.get_queue_bindings("/", q), [default], "bindings after delete_binding")
    expect_http(404, api.delete_binding, "/", ex, q, "rk-1")

    check_eq(api.delete_queue("/", q), 204, "delete_queue")
    expect_http(404, api.get_queue, "/", q)
    expect_http(404, api.delete_queue, "/", q)
    check(q not in names(api.get_queues("/")), "queue gone from get_queues")
    check_eq(api.delete_exchange("/", ex), True, "delete_exchange")
    expect_http(404, api.get_exchange, "/", ex)
    expect_http(404, api.delete_exchange, "/", ex)


# --------------------------------------------------------------- publish/get

def mgmt_publish_get():
    api = client()
    ex, q = name("mgmt-pub-x"), name("mgmt-pub-q")
    api.create_queue("/", q, durable=False)
    api.create_exchange("/", ex, "direct", durable=False)
    api.create_binding("/", ex, q, "rk-1")
    props = {"content_type": "text/plain", "message_id": "m-1", "delivery_mode": 2,
             "headers": {"h": "v", "n": 7}}
    check_eq(api.publish("/", ex, "rk-1", "hello from pyrabbit2", properties=props), True, "publish routed")
    check_eq(api.publish("/", ex, "no-route", "lost"), False, "publish unroutable")
    check_eq(api.publish("/", "amq.default", q, "via the default exchange"), True, "publish to amq.default")
    binary = bytes(range(256))
    check_eq(api.publish("/", "amq.default", q, base64.b64encode(binary).decode(), payload_enc="base64"),
             True, "publish base64")
    check_eq(api.get_queue_depth("/", q), 3, "queue depth after 3 routed publishes")

    got = api.get_messages("/", q, count=2, requeue=True)
    check_eq(len(got), 2, "get_messages count=2")
    m0, m1 = got
    check_eq(pick(m0, "payload", "payload_encoding", "payload_bytes", "routing_key", "exchange",
                  "redelivered", "message_count"),
             {"payload": "hello from pyrabbit2", "payload_encoding": "string", "payload_bytes": 20,
              "routing_key": "rk-1", "exchange": ex, "redelivered": False, "message_count": 2},
             "first message")
    check_eq(m0["properties"], props, "first message's properties")
    check_eq(pick(m1, "payload", "payload_encoding", "routing_key", "exchange", "redelivered",
                  "message_count"),
             {"payload": "via the default exchange", "payload_encoding": "string", "routing_key": q,
              "exchange": "", "redelivered": False, "message_count": 1}, "second message")
    check(not m1["properties"], f"second message has no properties: {m1['properties']!r}")

    # Requeued: all three again, the first two redelivered.
    got = api.get_messages("/", q, count=5, requeue=False)
    check_eq([(m["payload_encoding"], m["redelivered"], m["message_count"]) for m in got],
             [("string", True, 2), ("string", True, 1), ("base64", False, 0)],
             "after requeue: (encoding, redelivered, message_count)")
    check_eq([m["payload"] for m in got[:2]], ["hello from pyrabbit2", "via the default exchange"], "payloads")
    check_eq(base64.b64decode(got[2]["payload"]), binary, "binary payload round trip")
    check_eq(got[2]["payload_bytes"], 256, "binary payload_bytes")
    check_eq(api.get_queue_depth("/", q), 0, "queue empty after ack_requeue_false")
    check_eq(api.get_messages("/", q, count=1), [], "get from an empty queue")

    api.publish("/", "amq.default", q, "0123456789")
    got = api.get_messages("/", q, count=1, requeue=True, truncate=4)
    check_eq([(m["payload"], m["payload_bytes"]) for m in got], [("0123", 10)], "truncate=4")
    got = api.get_messages("/", q, count=1, encoding="base64")
    check_eq([(m["payload"], m["payload_encoding"]) for m in got], [("MDEyMzQ1Njc4OQ==", "base64")],
             "encoding=base64")

    # AMQP to the API: pika's properties, as RabbitMQ's API shows them.
    conn = amqp_connect()
    ch = conn.channel()
    ch.confirm_delivery()
    amqp_props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2, priority=3,
        correlation_id="c-1", reply_to="r-1", expiration="60000", message_id="m-2",
        timestamp=1700000000, type="t-1", app_id="a-1",
        headers={"s": "x", "i": 5, "b": True, "l": [1, "a"], "t": {"k": "v"}})
    ch.basic_publish("", q, b'{"from": "pika"}', amqp_props)
    (m,) = api.get_messages("/", q, count=1)
    check_eq(pick(m, "payload", "routing_key", "exchange"), {"payload": '{"from": "pika"}', "routing_key": q,
                                                            "exchange": ""}, "pika's message via the API")
    check_eq(m["properties"], {
        "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2, "priority": 3,
        "correlation_id": "c-1", "reply_to": "r-1", "expiration": "60000", "message_id": "m-2",
        "timestamp": 1700000000, "type": "t-1", "app_id": "a-1",
        "headers": {"s": "x", "i": 5, "b": True, "l": [1, "a"], "t": {"k": "v"}}},
        "pika's properties via the API")
    # The API to AMQP: what pika gets from an API publish.
    api.publish("/", ex, "rk-1", "to pika", properties=props)
    method, got_props, body = wait_until(lambda: (lambda r: r if r[0] else None)(ch.basic_get(q, auto_ack=True)),
                                         "pika basic_get of the API's message")
    check_eq((body, method.routing_key, method.exchange), (b"to pika", "rk-1", ex), "pika's view of the message")
    check_eq((got_props.content_type, got_props.message_id, got_props.delivery_mode, got_props.headers),
             ("text/plain", "m-1", 2, {"h": "v", "n": 7}), "pika's view of the properties")
    conn.close()

    expect_http(404, api.publish, "/", name("no-such-x"), "k", "x")
    expect_http(404, api.get_messages, "/", name("no-such-q"))
    api.delete_queue("/", q)
    api.delete_exchange("/", ex)


# --------------------------------------------------------------- queue counts

def queue_counts(api, q):
    qi = api.get_queue("/", q)
    return (qi["messages"], qi["messages_ready"], qi["messages_unacknowledged"], qi["consumers"])


def mgmt_queue_counts():
    api = client()
    q = name("mgmt-counts")
    conn = amqp_connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    bodies = [f"m{i}".encode() for i in range(7)]
    for b in bodies:
        ch.basic_publish("", q, b)
    wait_until(lambda: queue_counts(api, q) == (7, 7, 0, 0), "(messages, ready, unacked, consumers) == (7, 7, 0, 0)")
    check_eq(one(api.get_queues("/"), "get_queues", name=q)["messages"], 7, "messages in the vhost's list")
    check_eq(one(api.get_queues(), "get_queues", name=q)["messages"], 7, "messages in the full list")
    check_eq(api.get_queue_depth("/", q), 7, "get_queue_depth")
    check(api.get_overview()["queue_totals"]["messages"] >= 7, "overview queue_totals.messages")

    taken = [ch.basic_get(q, auto_ack=False)[0] for _ in range(3)]
    wait_until(lambda: queue_counts(api, q) == (7, 4, 3, 0), "after 3 unacked gets: (7, 4, 3, 0)")

    cch = conn.channel()
    cch.basic_qos(prefetch_count=1)
    tag = cch.basic_consume(q, lambda *a: None)
    wait_until(lambda: queue_counts(api, q) == (7, 3, 4, 1), "with a prefetch-1 consumer: (7, 3, 4, 1)")
    details = api.get_queue("/", q)["consumer_details"]
    check_eq([(c["consumer_tag"], c["ack_required"], c["prefetch_count"]) for c in details],
             [(tag, True, 1)], "consumer_details")

    for m in taken:
        ch.basic_ack(m.delivery_tag)
    cch.basic_cancel(tag)
    cch.close()  # its unacked delivery goes back, at the head
    wait_until(lambda: queue_counts(api, q) == (4, 4, 0, 0), "after acks and cancel: (4, 4, 0, 0)")

    got = api.get_messages("/", q, count=4, requeue=False)
    check_eq([(m["payload"], m["redelivered"], m["message_count"]) for m in got],
             [("m3", True, 3), ("m4", False, 2), ("m5", False, 1), ("m6", False, 0)],
             "get_messages after the consumer's requeue")
    check_eq(queue_counts(api, q), (0, 0, 0, 0), "counts after get")
    ch.queue_delete(q)
    conn.close()


# ---------------------------------------------------------------- connections

def mgmt_connections():
    api = client()
    cname = name("mgmt-conn")
    conn = amqp_connect(connection_name=cname)
    conn.channel()
    c = wait_until(lambda: matching(api.get_connections(), user_provided_name=cname),
                   f"connection {cname} listed")[0]
    check_eq(pick(c, "user", "vhost", "state", "channels", "protocol", "port", "host", "peer_host",
                  "auth_mechanism"),
             {"user": USER, "vhost": "/", "state": "running", "channels": 1, "protocol": "AMQP 0-9-1",
              "port": PORT, "host": "127.0.0.1", "peer_host": "127.0.0.1", "auth_mechanism": "PLAIN"},
             "listed connection")
    check_eq(c["client_properties"].get("connection_name"), cname, "client_properties.connection_name")
    check_eq(c["client_properties"].get("product"), "Pika Python Client Library", "client_properties.product")
    check_eq(c["name"], f"{c['peer_host']}:{c['peer_port']} -> {c['host']}:{c['port']}", "connection name")
    check_eq(api.get_connection(c["name"])["user_provided_name"], cname, "get_connection")

    ch = one(api.get_channels(), "get_channels", name=f"{c['name']} (1)")
    check_eq((ch["number"], ch["user"], ch["vhost"], ch["connection_details"]["name"]),
             (1, USER, "/", c["name"]), "the connection's channel")
    check_eq(api.get_channel(ch["name"])["number"], 1, "get_channel")

    check_eq(api.delete_connection(c["name"]), True, "delete_connection")
    wait_forced_close(conn)
    wait_until(lambda: not matching(api.get_connections(), name=c["name"]), "closed connection unlisted")
    expect_http(404, api.get_connection, c["name"])
    expect_http(404, api.delete_connection, c["name"])
    expect_http(404, api.get_channel, ch["name"])


# ------------------------------------------------------------------ policies

def mgmt_policies():
    api = client()
    q, pol = name("mgmt-pol-q"), name("mgmt-pol")
    api.create_queue("/", q, durable=False)
    check_eq(api.create_policy("/", pol, pattern=f"^{q}$", definition={"max-length": 2},
                               priority=1, **{"apply-to": "queues"}), 201, "create_policy")
    want = {"name": pol, "vhost": "/", "pattern": f"^{q}$", "apply-to": "queues",
            "definition": {"max-length": 2}, "priority": 1}
    check_eq(pick(api.get_policy("/", pol), *want), want, "get_policy")
    check_eq(pick(one(api.get_all_policies(), "get_all_policies", name=pol), *want), want, "get_all_policies")
    wait_until(lambda: pick(api.get_queue("/", q), "policy", "effective_policy_definition"),
               "the queue's policy", want={"policy": pol, "effective_policy_definition": {"max-length": 2}})
    # The policy acts: max-length 2 drops from the head.
    for body in ("p1", "p2", "p3"):
        api.publish("/", "amq.default", q, body)
    check_eq([m["payload"] for m in api.get_messages("/", q, count=5)], ["p2", "p3"], "max-length 2 kept")

    check_eq(api.delete_policy("/", pol), 204, "delete_policy")
    expect_http(404, api.get_policy, "/", pol)
    expect_http(404, api.delete_policy, "/", pol)
    # No policy: RabbitMQ shows null or "" (its versions differ).
    wait_until(lambda: not api.get_queue("/", q).get("policy"), "no policy on the queue after delete_policy")
    api.delete_queue("/", q)


# ---------------------------------------------------------------- definitions

def mgmt_export():
    api = client()
    vh, user, ex, q = name("mgmt-exp-vh"), name("mgmt-exp-user"), name("mgmt-exp-x"), name("mgmt-exp-q")
    api.create_vhost(vh)
    api.create_user(user, "pw-export", tags="management")
    api.set_vhost_permissions(vh, user, ".*", "^r", "^w")  # configure, read, write
    api.set_vhost_permissions(vh, USER, ".*", ".*", ".*")
    api.create_exchange(vh, ex, "topic", durable=True)
    api.create_queue(vh, q, durable=True, arguments={"x-max-length": 10})
    api.create_binding(vh, ex, q, "a.#")

    d = api.get_definitions()
    check(re.match(r"^\d+\.\d+\.\d+", d.get("rabbit_version") or ""), f"rabbit_version {d.get('rabbit_version')!r}")
    u = one(d["users"], "exported users", name=user)
    check_eq((u["tags"], u["hashing_algorithm"]), (["management"], SHA256), "exported user")
    check_eq(len(base64.b64decode(u["password_hash"])), 36, "exported password_hash length")
    one(d["vhosts"], "exported vhosts", name=vh)
    check_eq(one(d["permissions"], "exported permissions", user=user, vhost=vh),
             {"user": user, "vhost": vh, "configure": ".*", "write": "^w", "read": "^r"}, "exported permission")
    check_eq(pick(one(d["exchanges"], "exported exchanges", name=ex, vhost=vh),
                  "name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"),
             {"name": ex, "vhost": vh, "type": "topic", "durable": True, "auto_delete": False,
              "internal": False, "arguments": {}}, "exported exchange")
    check_eq(pick(one(d["queues"], "exported queues", name=q, vhost=vh),
                  "name", "vhost", "durable", "auto_delete", "arguments"),
             {"name": q, "vhost": vh, "durable": True, "auto_delete": False,
              "arguments": {"x-max-length": 10}}, "exported queue")
    check_eq(pick(one(d["bindings"], "exported bindings", source=ex, vhost=vh),
                  "source", "vhost", "destination", "destination_type", "routing_key", "arguments"),
             {"source": ex, "vhost": vh, "destination": q, "destination_type": "queue",
              "routing_key": "a.#", "arguments": {}}, "exported binding")
    api.delete_vhost(vh)
    api.delete_user(user)


def mgmt_import():
    raise NotApplicable("pyrabbit2 1.0.7 has no call that uploads definitions (only get_definitions)")


SCENARIOS = {f.__name__: f for f in [
    mgmt_overview, mgmt_access, mgmt_topology, mgmt_publish_get, mgmt_queue_counts,
    mgmt_connections, mgmt_policies, mgmt_export, mgmt_import,
]}

if __name__ == "__main__":
    raise SystemExit(main(SCENARIOS))
