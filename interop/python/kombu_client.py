"""kombu (on py-amqp) against Warren: Celery's messaging layer."""

import socket
import sys
import time

import amqp.exceptions as aex
from kombu import Connection, Consumer, Exchange, Producer, Queue

from common import (HOST, PORT, USER, PASSWORD, NotApplicable, TOPIC_BINDINGS,
                    TOPIC_EXPECTED, TOPIC_KEYS, check, check_eq, deadline, fib,
                    large_body, main, name, redeclare_text, sha)


def connect(password=PASSWORD, **kw):
    conn = Connection(f"amqp://{USER}:{password}@{HOST}:{PORT}//", **kw)
    conn.connect()
    return conn


def drain(conn, seconds=0.2):
    """Handles events until none arrive for `seconds`."""
    try:
        while True:
            conn.drain_events(timeout=seconds)
    except socket.timeout:
        pass


def get_one(queue, seconds=5):
    alive = deadline(seconds)
    while alive():
        m = queue.get(no_ack=True)
        if m is not None:
            return m
        time.sleep(0.02)
    raise AssertionError(f"no message on {queue.name}")


def get_all(queue):
    out = []
    for _ in range(1000):
        m = queue.get(no_ack=True)
        if m is None:
            return out
        out.append(m)
    raise AssertionError("queue did not drain")


def expect(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


def hello():
    with connect() as conn:
        q = Queue(name("hello"), channel=conn.default_channel)
        q.declare()
        Producer(conn).publish("Hello World!", routing_key=q.name, serializer="json")
        got = []
        with Consumer(conn, [q], callbacks=[lambda body, m: (got.append(body), m.ack())]):
            conn.drain_events(timeout=5)
        check_eq(got, ["Hello World!"], "body")
        q.delete()


def routed(kind, bindings, keys):
    with connect(transport_options={"confirm_publish": True}) as conn:
        ex = Exchange(name(kind), type=kind, channel=conn.default_channel)
        ex.declare()
        queues = {}
        for k, patterns in bindings.items():
            q = Queue("", exclusive=True, channel=conn.channel())
            q.declare()
            check(q.name.startswith("amq.gen-"), f"server-named queue {q.name!r}")
            for p in patterns:
                q.bind_to(ex, routing_key=p)
            queues[k] = q
        producer = Producer(conn.default_channel, exchange=ex)
        for key, body in keys:
            producer.publish(body, routing_key=key)
        out = {k: [(m.delivery_info["routing_key"], m.body) for m in get_all(q)]
               for k, q in queues.items()}
        ex.delete()
        return out


def pubsub():
    got = routed("fanout", {"a": [""], "b": [""]}, [("", b"log line")])
    check_eq(got, {"a": [("", b"log line")], "b": [("", b"log line")]}, "fanout copies")


def routing():
    got = routed("direct", {"a": ["error"], "b": ["info", "warning", "error"]},
                 [(s, s.encode()) for s in ["info", "warning", "error"]])
    check_eq([b for _, b in got["a"]], [b"error"], "error-only queue")
    check_eq([b for _, b in got["b"]], [b"info", b"warning", b"error"], "all-severities queue")


def topics():
    got = routed("topic", TOPIC_BINDINGS, [(k, k.encode()) for k in TOPIC_KEYS])
    for k, msgs in got.items():
        check_eq([rk for rk, _ in msgs], TOPIC_EXPECTED[k], f"topic queue {k}")


def work_queues():
    n = 20
    with connect() as pconn, connect() as c1, connect() as c2:
        q = Queue(name("tasks"), durable=True, channel=pconn.default_channel)
        q.declare()
        stats = []
        consumers = []
        for conn in (c1, c2):
            s = {"pending": [], "done": 0}
            c = Consumer(conn, [q], callbacks=[lambda body, m, s=s: s["pending"].append(m)])
            c.qos(prefetch_count=1)
            c.consume()
            stats.append((conn, s))
            consumers.append(c)
        producer = Producer(pconn)
        for i in range(n):
            producer.publish(f"task {i}", routing_key=q.name, delivery_mode=2)
        alive = deadline(15)
        while sum(s["done"] for _, s in stats) < n and alive():
            for conn, s in stats:
                try:
                    conn.drain_events(timeout=0.02)
                except socket.timeout:
                    pass
                check(len(s["pending"]) <= 1, f"{len(s['pending'])} unacked with prefetch 1")
                for m in s["pending"]:
                    m.ack()
                    s["done"] += 1
                s["pending"].clear()
        counts = [s["done"] for _, s in stats]
        check_eq(sum(counts), n, "tasks done")
        check(all(counts), f"fair dispatch: {counts}")
        for c in consumers:
            c.cancel()
        q.delete()


def rpc():
    with connect() as server, connect() as client:
        rpc_q = Queue(name("rpc_queue"), auto_delete=True, channel=server.default_channel)
        rpc_q.declare()
        sprod = Producer(server)

        def on_request(body, m):
            sprod.publish(str(fib(int(body))), routing_key=m.properties["reply_to"],
                          correlation_id=m.properties["correlation_id"], serializer="json")
            m.ack()

        scons = Consumer(server, [rpc_q], callbacks=[on_request])
        scons.qos(prefetch_count=1)
        scons.consume()
        reply_q = Queue("", exclusive=True, channel=client.default_channel)
        reply_q.declare()
        replies = {}
        ccons = Consumer(client, [reply_q], no_ack=True,
                         callbacks=[lambda body, m: replies.__setitem__(m.properties["correlation_id"], body)])
        ccons.consume()
        cprod = Producer(client)
        for n in [1, 10, 30]:
            corr = f"corr-{n}"
            cprod.publish(str(n), routing_key=rpc_q.name, reply_to=reply_q.name,
                          correlation_id=corr, serializer="json")
            alive = deadline(5)
            while corr not in replies and alive():
                for c in (server, client):
                    try:
                        c.drain_events(timeout=0.01)
                    except socket.timeout:
                        pass
            check_eq(replies.get(corr), str(fib(n)), f"fib({n})")


def confirms_individual():
    with connect(transport_options={"confirm_publish": True}) as conn:
        q = Queue(name("confirms"), exclusive=True, channel=conn.default_channel)
        q.declare()
        producer = Producer(conn)
        for i in range(100):
            # With confirm_publish, py-amqp waits for each basic.ack.
            producer.publish(str(i), routing_key=q.name)
        _, count, _ = q.queue_declare(passive=True)
        check_eq(count, 100, "messages confirmed")


def confirms_batch():
    raise NotApplicable("kombu's confirm_publish waits for each confirm; no batch API")


def confirms_async():
    raise NotApplicable("kombu has no asynchronous publisher-confirm callback")


def mandatory_return():
    with connect() as conn:
        returned = []
        producer = Producer(conn, on_return=lambda exc, exchange, routing_key, message:
                            returned.append((exc.reply_code, str(exc.message), message.body)))
        producer.publish(b"lost", routing_key=name("nowhere"), mandatory=True)
        alive = deadline(5)
        while not returned and alive():
            try:
                conn.drain_events(timeout=0.05)
            except socket.timeout:
                pass
        check(returned, "no basic.return")
        check_eq(returned[0], (312, "NO_ROUTE", b"lost"), "basic.return")


def nack_requeue():
    with connect() as conn:
        q = Queue(name("nack"), exclusive=True, channel=conn.default_channel)
        q.declare()
        Producer(conn).publish(b"again", routing_key=q.name)
        seen = []

        def on_msg(body, m):
            seen.append((m.delivery_info["redelivered"], m.body))
            if len(seen) == 1:
                m.requeue()  # basic.reject with requeue
            else:
                m.ack()

        with Consumer(conn, [q], callbacks=[on_msg]):
            alive = deadline(5)
            while len(seen) < 2 and alive():
                try:
                    conn.drain_events(timeout=0.05)
                except socket.timeout:
                    pass
        check_eq(seen, [(False, b"again"), (True, b"again")], "deliveries")


def prefetch_limit():
    total, limit = 30, 5
    with connect(transport_options={"confirm_publish": True}) as conn:
        q = Queue(name("prefetch"), exclusive=True, channel=conn.default_channel)
        q.declare()
        producer = Producer(conn)
        for i in range(total):
            producer.publish(str(i), routing_key=q.name)
        unacked = []
        c = Consumer(conn, [q], callbacks=[lambda body, m: unacked.append(m)])
        c.qos(prefetch_count=limit)
        c.consume()
        done = 0
        alive = deadline(15)
        while done < total and alive():
            # Let the broker push as much as it will before acking anything.
            drain(conn, 0.1)
            check(len(unacked) <= limit, f"{len(unacked)} unacked with prefetch {limit}")
            if unacked:
                check(len(unacked) == limit or done + len(unacked) == total,
                      f"only {len(unacked)} delivered while more are ready")
                for m in unacked:
                    m.ack()
                done += len(unacked)
                unacked.clear()
        check_eq(done, total, "consumed")


def exclusive_locked():
    with connect() as a, connect() as b:
        q = name("exclusive")
        Queue(q, exclusive=True, channel=a.default_channel).declare()
        e = expect(aex.ResourceLocked, lambda: Queue(q, channel=b.channel()).declare())
        check(str(e.message).startswith("RESOURCE_LOCKED - "), f"text {e.message!r}")


def passive_404():
    with connect() as conn:
        q = name("missing")
        e = expect(aex.NotFound, lambda: Queue(q, channel=conn.channel()).queue_declare(passive=True))
        check_eq(str(e.message), f"NOT_FOUND - no queue '{q}' in vhost '/'", "text")
        queue = Queue(q, exclusive=True, channel=conn.channel())
        queue.declare()
        Producer(queue.channel).publish(b"still working", routing_key=q)
        check_eq(get_one(queue).body, b"still working", "after 404")


def redeclare_406():
    with connect() as conn:
        q = name("redeclare")
        Queue(q, durable=False, channel=conn.channel()).declare()
        e = expect(aex.PreconditionFailed, lambda: Queue(q, durable=True, channel=conn.channel()).declare())
        check_eq(str(e.message), redeclare_text(q), "text")
        Queue(q, channel=conn.channel()).delete()


def wrong_password():
    try:
        conn = Connection(f"amqp://{USER}:wrong-password@{HOST}:{PORT}//")
        conn.connect()
    except aex.AccessRefused as e:
        check_eq(e.code, 403, "reply code")
        return
    raise AssertionError("login with a wrong password succeeded")


def large_message():
    with connect() as conn:
        q = Queue(name("large"), exclusive=True, channel=conn.default_channel)
        q.declare()
        body = large_body()
        Producer(conn).publish(body, routing_key=q.name, serializer=None,
                               content_type="application/octet-stream")
        got = get_one(q, 20).body
        check_eq((len(got), sha(got)), (len(body), sha(body)), "body")


def many_channels():
    with connect(transport_options={"confirm_publish": True}) as conn:
        chans = [conn.channel() for _ in range(100)]
        check_eq(len({c.channel_id for c in chans}), 100, "distinct channel ids")
        q = Queue(name("channels"), exclusive=True, channel=chans[0])
        q.declare()
        for i, c in enumerate(chans):
            Producer(c).publish(str(i), routing_key=q.name, serializer="json")
        q99 = q.bind(chans[99])
        check_eq(sorted(int(m.payload) for m in get_all(q99)), list(range(100)), "one per channel")
        for c in chans:
            c.close()


def heartbeat():
    with connect(heartbeat=2) as conn:
        q = Queue(name("heartbeat"), exclusive=True, channel=conn.default_channel)
        q.declare()
        # kombu leaves heartbeats to the caller's event loop: heartbeat_check
        # is what a Celery worker calls from its hub.
        alive = deadline(10)
        while alive():
            conn.heartbeat_check(rate=2)
            drain(conn, 0.5)
        Producer(conn).publish(b"alive", routing_key=q.name)
        check_eq(get_one(q).body, b"alive", "after idle")


def server_cancel():
    with connect() as a, connect() as b:
        q = Queue(name("cancel"), channel=a.default_channel)
        q.declare()
        cancelled = []
        # py-amqp's basic_consume takes an on_cancel callback for a
        # server-sent basic.cancel; kombu passes it through.
        a.default_channel.basic_consume(q.name, callback=lambda m: None,
                                        on_cancel=lambda tag: cancelled.append(tag),
                                        consumer_tag="interop-consumer")
        Queue(q.name, channel=b.default_channel).delete()
        alive = deadline(5)
        while not cancelled and alive():
            try:
                a.drain_events(timeout=0.05)
            except socket.timeout:
                pass
        check_eq(cancelled, ["interop-consumer"], "server-sent basic.cancel")


SCENARIOS = {f.__name__: f for f in [
    hello, work_queues, pubsub, routing, topics, rpc, confirms_individual,
    confirms_batch, confirms_async, mandatory_return, nack_requeue,
    prefetch_limit, exclusive_locked, passive_404, redeclare_406,
    wrong_password, large_message, many_channels, heartbeat, server_cancel]}

if __name__ == "__main__":
    sys.exit(main(SCENARIOS))
