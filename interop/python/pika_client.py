"""pika's BlockingConnection against Warren."""

import logging
import ssl
import sys
import time

import pika
import pika.exceptions as pe

from common import (HOST, PORT, USER, PASSWORD, NotApplicable, TOPIC_BINDINGS,
                    TOPIC_EXPECTED, TOPIC_KEYS, TLS_CA, TLS_CLIENT_CERT,
                    TLS_CLIENT_KEY, TLS_CLIENT_USER, TLS_PORT, api_get, check,
                    check_eq, deadline, fib, large_body, main, name,
                    redeclare_text, sha)


def connect(password=PASSWORD, heartbeat=None):
    params = pika.ConnectionParameters(
        host=HOST, port=PORT, credentials=pika.PlainCredentials(USER, password),
        heartbeat=heartbeat, connection_attempts=1, blocked_connection_timeout=30)
    return pika.BlockingConnection(params)


def get_one(ch, queue, seconds=5):
    """basic.get until a message arrives; publishes are asynchronous."""
    alive = deadline(seconds)
    while alive():
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        ch.connection.sleep(0.02)
    raise AssertionError(f"no message on {queue} within {seconds}s")


def drain(ch, queue):
    out = []
    for _ in range(1000):
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((method, props, body))
    raise AssertionError("queue did not drain")


def hello():
    conn = connect()
    ch = conn.channel()
    q = name("hello")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"Hello World!")
    received = []

    def on_msg(ch_, method, props, body):
        received.append(body)
        ch_.stop_consuming()

    ch.basic_consume(q, on_msg, auto_ack=True)
    conn.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    check_eq(received, [b"Hello World!"], "hello body")
    ch.queue_delete(q)
    conn.close()


def work_queues():
    q = name("tasks")
    pub = connect()
    pch = pub.channel()
    pch.queue_declare(q, durable=True)
    workers = []
    for i in range(2):
        c = connect()
        ch = c.channel()
        ch.basic_qos(prefetch_count=1)
        pending = []
        ch.basic_consume(q, lambda ch_, m, p, b, pending=pending: pending.append(m.delivery_tag))
        workers.append((c, ch, pending, [0]))
    n = 20
    for i in range(n):
        pch.basic_publish("", q, f"task {i}".encode(),
                          pika.BasicProperties(delivery_mode=2))
    alive = deadline(15)
    while sum(w[3][0] for w in workers) < n and alive():
        for c, ch, pending, done in workers:
            c.process_data_events(time_limit=0.01)
            check(len(pending) <= 1, f"worker has {len(pending)} unacked with prefetch 1")
            for tag in pending:
                ch.basic_ack(tag)
                done[0] += 1
            pending.clear()
    counts = [w[3][0] for w in workers]
    check_eq(sum(counts), n, "tasks done")
    check(all(c > 0 for c in counts), f"fair dispatch: both workers get work, got {counts}")
    pch.queue_delete(q)
    for w in workers:
        w[0].close()
    pub.close()


def exclusive_bound_queue(conn, exchange, keys):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    check(q.startswith("amq.gen-"), f"server-named queue {q!r}")
    for k in keys:
        ch.queue_bind(q, exchange, routing_key=k)
    return ch, q


def pubsub():
    ex = name("logs")
    conns = [connect() for _ in range(3)]
    pch = conns[0].channel()
    pch.exchange_declare(ex, exchange_type="fanout")
    pch.confirm_delivery()
    subs = [exclusive_bound_queue(c, ex, [""]) for c in conns[1:]]
    pch.basic_publish(ex, "", b"log line")
    for ch, q in subs:
        check_eq(get_one(ch, q)[2], b"log line", "fanout copy")
    pch.exchange_delete(ex)
    for c in conns:
        c.close()


def routing():
    ex = name("direct_logs")
    conn = connect()
    pch = conn.channel()
    pch.exchange_declare(ex, exchange_type="direct")
    pch.confirm_delivery()
    ch_a, qa = exclusive_bound_queue(conn, ex, ["error"])
    ch_b, qb = exclusive_bound_queue(conn, ex, ["info", "warning", "error"])
    for sev in ["info", "warning", "error"]:
        pch.basic_publish(ex, sev, sev.encode())
    check_eq([b for _, _, b in drain(ch_a, qa)], [b"error"], "error-only queue")
    check_eq([b for _, _, b in drain(ch_b, qb)], [b"info", b"warning", b"error"], "all-severities queue")
    pch.exchange_delete(ex)
    conn.close()


def topics():
    ex = name("topic_logs")
    conn = connect()
    pch = conn.channel()
    pch.exchange_declare(ex, exchange_type="topic")
    pch.confirm_delivery()
    qs = {k: exclusive_bound_queue(conn, ex, pats) for k, pats in TOPIC_BINDINGS.items()}
    for key in TOPIC_KEYS:
        pch.basic_publish(ex, key, key.encode())
    for k, (ch, q) in qs.items():
        got = [m.routing_key for m, _, _ in drain(ch, q)]
        check_eq(got, TOPIC_EXPECTED[k], f"topic queue {k}")
    pch.exchange_delete(ex)
    conn.close()


def rpc():
    rpc_queue = name("rpc_queue")
    server = connect()
    sch = server.channel()
    sch.queue_declare(rpc_queue, auto_delete=True)
    sch.basic_qos(prefetch_count=1)

    def on_request(ch, method, props, body):
        reply = str(fib(int(body))).encode()
        ch.basic_publish("", props.reply_to, reply,
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    sch.basic_consume(rpc_queue, on_request)

    client = connect()
    cch = client.channel()
    callback_queue = cch.queue_declare("", exclusive=True).method.queue
    responses = {}
    cch.basic_consume(callback_queue,
                      lambda ch, m, p, b: responses.__setitem__(p.correlation_id, b),
                      auto_ack=True)
    for n in [1, 10, 30]:
        corr = f"corr-{n}"
        cch.basic_publish("", rpc_queue, str(n).encode(),
                          pika.BasicProperties(reply_to=callback_queue, correlation_id=corr))
        alive = deadline(5)
        while corr not in responses and alive():
            server.process_data_events(time_limit=0.01)
            client.process_data_events(time_limit=0.01)
        check_eq(responses.get(corr), str(fib(n)).encode(), f"fib({n})")
    client.close()
    server.close()


def confirms_individual():
    conn = connect()
    ch = conn.channel()
    q = name("confirms")
    ch.queue_declare(q, exclusive=True)
    ch.confirm_delivery()
    for i in range(100):
        # With confirms on, BlockingChannel.basic_publish waits for the ack
        # and raises NackError on a nack.
        ch.basic_publish("", q, str(i).encode())
    check_eq(ch.queue_declare(q, passive=True).method.message_count, 100, "messages confirmed")
    conn.close()


def confirms_batch():
    raise NotApplicable("BlockingChannel waits for each confirm; no batch API")


def confirms_async():
    raise NotApplicable("BlockingChannel has no asynchronous confirm callback")


def mandatory_return():
    conn = connect()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda ch_, m, p, b: returned.append((m, b)))
    ch.basic_publish("", name("nowhere"), b"lost", mandatory=True)
    alive = deadline(5)
    while not returned and alive():
        conn.process_data_events(time_limit=0.05)
    check(returned, "no basic.return")
    m, b = returned[0]
    check_eq((m.reply_code, m.reply_text, b), (312, "NO_ROUTE", b"lost"), "basic.return")
    conn.close()


def nack_requeue():
    conn = connect()
    ch = conn.channel()
    q = name("nack")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"again")
    seen = []

    def on_msg(ch_, m, p, b):
        seen.append((m.redelivered, b))
        if len(seen) == 1:
            ch_.basic_nack(m.delivery_tag, requeue=True)
        else:
            ch_.basic_ack(m.delivery_tag)
            ch_.stop_consuming()

    ch.basic_consume(q, on_msg)
    conn.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    check_eq(seen, [(False, b"again"), (True, b"again")], "deliveries")
    conn.close()


def prefetch_limit():
    conn = connect()
    ch = conn.channel()
    q = name("prefetch")
    ch.queue_declare(q, exclusive=True)
    total, limit = 30, 5
    for i in range(total):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=limit)
    unacked = []
    ch.basic_consume(q, lambda ch_, m, p, b: unacked.append(m.delivery_tag))
    done = 0
    alive = deadline(15)
    while done < total and alive():
        # Let the broker push as much as it will before acking anything.
        conn.process_data_events(time_limit=0.1)
        check(len(unacked) <= limit, f"{len(unacked)} unacked with prefetch {limit}")
        if unacked:
            check(len(unacked) == limit or done + len(unacked) == total,
                  f"only {len(unacked)} delivered while more are ready")
            ch.basic_ack(unacked[-1], multiple=True)
            done += len(unacked)
            unacked.clear()
    check_eq(done, total, "messages consumed")
    conn.close()


def expect_channel_close(fn, code):
    try:
        fn()
    except pe.ChannelClosedByBroker as e:
        check_eq(e.reply_code, code, f"reply code ({e.reply_text})")
        return e.reply_text
    raise AssertionError(f"expected channel.close {code}")


def exclusive_locked():
    a = connect()
    q = name("exclusive")
    a.channel().queue_declare(q, exclusive=True)
    b = connect()
    text = expect_channel_close(lambda: b.channel().queue_declare(q), 405)
    check(text.startswith("RESOURCE_LOCKED - "), f"text {text!r}")
    text = expect_channel_close(lambda: b.channel().basic_consume(q, lambda *a: None), 405)
    b.close()
    a.close()


def passive_404():
    conn = connect()
    q = name("missing")
    text = expect_channel_close(lambda: conn.channel().queue_declare(q, passive=True), 404)
    check_eq(text, f"NOT_FOUND - no queue '{q}' in vhost '/'", "text")
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"still working")
    check_eq(get_one(ch, q)[2], b"still working", "after 404")
    conn.close()


def redeclare_406():
    conn = connect()
    q = name("redeclare")
    ch = conn.channel()
    ch.queue_declare(q, durable=False)
    text = expect_channel_close(lambda: conn.channel().queue_declare(q, durable=True), 406)
    check_eq(text, redeclare_text(q), "text")
    conn.channel().queue_delete(q)
    conn.close()


def wrong_password():
    try:
        connect(password="wrong-password")
    except pe.ProbableAuthenticationError as e:
        check("403" in str(e) or "ACCESS_REFUSED" in str(e), f"error {e!r}")
        return
    except pe.AuthenticationError as e:
        return
    raise AssertionError("login with a wrong password succeeded")


def large_message():
    conn = connect()
    ch = conn.channel()
    q = name("large")
    ch.queue_declare(q, exclusive=True)
    body = large_body()
    ch.basic_publish("", q, body)
    got = get_one(ch, q, 20)[2]
    check_eq((len(got), sha(got)), (len(body), sha(body)), "body")
    conn.close()


def many_channels():
    conn = connect()
    q = name("channels")
    channels = [conn.channel() for _ in range(100)]
    channels[0].queue_declare(q, exclusive=True)
    channels[0].confirm_delivery()
    check_eq(len({c.channel_number for c in channels}), 100, "distinct channel ids")
    for i, c in enumerate(channels):
        c.basic_publish("", q, str(i).encode())
    channels[0].basic_publish("", q, b"sync")  # the confirm orders after the rest
    bodies = sorted(int(b) for _, _, b in drain(channels[-1], q) if b != b"sync")
    check_eq(bodies, list(range(100)), "one message per channel")
    for c in channels:
        c.close()
    conn.close()


def heartbeat():
    conn = connect(heartbeat=2)
    ch = conn.channel()
    q = name("heartbeat")
    ch.queue_declare(q, exclusive=True)
    # BlockingConnection.sleep keeps the I/O loop (and so heartbeats) going;
    # the application itself stays idle.
    conn.sleep(10)
    ch.basic_publish("", q, b"alive")
    check_eq(get_one(ch, q)[2], b"alive", "after idle")
    conn.close()


def server_cancel():
    a = connect()
    q = name("cancel")
    ch = a.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *args: None)
    b = connect()
    b.channel().queue_delete(q)
    b.close()
    alive = deadline(5)
    while not cancelled and alive():
        a.process_data_events(time_limit=0.05)
    check_eq(cancelled, [tag], "server-sent basic.cancel")
    a.close()


class LoggedErrors(logging.Handler):
    """Collects what pika logs at ERROR, such as a socket error while closing:
    BlockingConnection.close() can log those rather than raise them."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []
        logging.getLogger("pika").addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())


def close_clean():
    # RabbitMQ's "hello world" sender, 50 times: the close must succeed.
    q = name("close")
    logged = LoggedErrors()
    for i in range(50):
        try:
            conn = connect()
            ch = conn.channel()
            ch.queue_declare(q)
            ch.basic_publish("", q, b"Hello World!")
            conn.close()
        except Exception as e:
            raise AssertionError(f"iteration {i}: {e!r}") from e
        check(conn.is_closed, f"iteration {i}: connection not closed after close()")
        check(not logged.messages, f"iteration {i}: pika logged {logged.messages}")
    conn = connect()
    check_eq(conn.channel().queue_delete(q).method.message_count, 50, "messages published before each close")
    conn.close()


def close_after_burst():
    # Publishes queue up in pika's output buffer; close() must flush them.
    q = name("burst")
    logged = LoggedErrors()
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    n = 5000
    for i in range(n):
        ch.basic_publish("", q, b"burst %d" % i)
    conn.close()
    check(conn.is_closed, "connection not closed after close()")
    check(not logged.messages, f"pika logged {logged.messages}")
    conn = connect()
    check_eq(conn.channel().queue_delete(q).method.message_count, n, "messages published before close")
    conn.close()


def cc_bcc_round(ch, ex, keys):
    """One publish with CC and BCC headers; keys route to queues a, b, c."""
    qs = [ch.queue_declare(name(f"cc-{x}"), exclusive=True).method.queue for x in "abc"]
    if ex:
        for q, k in zip(qs, keys):
            ch.queue_bind(q, ex, routing_key=k)
    else:
        keys = qs
    headers = {"CC": [keys[1]], "BCC": [keys[2]], "x-other": "kept"}
    ch.basic_publish(ex, keys[0], b"cc and bcc", pika.BasicProperties(headers=headers))
    # Each queue gets one copy, with the publish's routing key, and BCC gone.
    got, want = [], []
    for x, q in zip("abc", qs):
        try:
            m, props, body = get_one(ch, q, 2)
            again = ch.basic_get(q, auto_ack=True)[0] is not None
            got.append((x, m.routing_key, body, props.headers, f"second copy: {again}"))
        except AssertionError as e:
            got.append((x, str(e)))
        want.append((x, keys[0], b"cc and bcc", {"CC": [keys[1]], "x-other": "kept"}, "second copy: False"))
    check_eq(got, want, "deliveries")


def cc_bcc():
    conn = connect()
    ch = conn.channel()
    cc_bcc_round(ch, "", None)
    ex = name("cc")
    ch.exchange_declare(ex, exchange_type="direct")
    cc_bcc_round(ch, ex, ["key-a", "key-b", "key-c"])
    ch.exchange_delete(ex)
    conn.close()


def channel_close_race():
    # The broker's channel.close (404, no exchange) and ours cross on the
    # wire; then another channel must work and the connection close cleanly.
    # That channel is opened first, as a client that reuses the freed number
    # at once could take the broker's late close-ok for the old channel as
    # the reply to the new channel.open.
    for i in range(20):
        try:
            conn = connect()
            ch2 = conn.channel()
            ch = conn.channel()
            ch.basic_publish(name("missing"), "key", b"lost")
            try:
                ch.close()
            except pe.ChannelClosedByBroker as e:
                check_eq(e.reply_code, 404, f"reply code ({e.reply_text})")
            q = ch2.queue_declare("", exclusive=True).method.queue
            ch2.basic_publish("", q, b"after the race")
            check_eq(get_one(ch2, q)[2], b"after the race", "message on the second channel")
            conn.close()
        except Exception as e:
            raise AssertionError(f"iteration {i}: {e!r}") from e


def tls_connect(client_cert):
    """AMQPS to warren, verifying its certificate against the run's CA and
    its name (localhost); with client_cert, logging in with EXTERNAL."""
    ctx = ssl.create_default_context(cafile=TLS_CA)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    creds = pika.PlainCredentials(USER, PASSWORD)
    if client_cert:
        ctx.load_cert_chain(TLS_CLIENT_CERT, TLS_CLIENT_KEY)
        creds = pika.credentials.ExternalCredentials()
    params = pika.ConnectionParameters(
        host=HOST, port=TLS_PORT, credentials=creds, connection_attempts=1,
        ssl_options=pika.SSLOptions(ctx, server_hostname="localhost"))
    return pika.BlockingConnection(params)


def tls_round_trip(conn, what):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = f"over TLS ({what})".encode()
    ch.confirm_delivery()
    ch.basic_publish("", q, body)
    check_eq(get_one(ch, q)[2], body, "message over TLS")


def tls_session(user, mechanism):
    """The broker's view of our one TLS connection, from its API."""
    alive = deadline(5)
    while alive():
        mine = [c for c in api_get("/api/connections")
                if c.get("ssl") and c.get("user") == user and c.get("auth_mechanism") == mechanism]
        if mine:
            return mine[0]
        time.sleep(0.05)
    raise AssertionError(f"no TLS connection of {user} with {mechanism} listed")


def tls_hello():
    conn = tls_connect(client_cert=False)
    tls_round_trip(conn, "password")
    c = tls_session(USER, "PLAIN")
    check(c["ssl_protocol"] in ("tlsv1.3", "tlsv1.2"), f"ssl_protocol {c['ssl_protocol']}")
    check_eq(c["port"], TLS_PORT, "the connection's broker port")
    conn.close()
    check(conn.is_closed, "connection closed")


def tls_external():
    conn = tls_connect(client_cert=True)
    tls_round_trip(conn, "EXTERNAL")
    c = tls_session(TLS_CLIENT_USER, "EXTERNAL")
    check(f"CN={TLS_CLIENT_USER}" in (c["peer_cert_subject"] or ""),
          f"peer_cert_subject {c['peer_cert_subject']!r}")
    conn.close()
    check(conn.is_closed, "connection closed")
    # Without a certificate the broker does not offer EXTERNAL: pika
    # refuses to log in with it, as against RabbitMQ.
    ctx = ssl.create_default_context(cafile=TLS_CA)
    params = pika.ConnectionParameters(
        host=HOST, port=TLS_PORT, credentials=pika.credentials.ExternalCredentials(),
        connection_attempts=1, ssl_options=pika.SSLOptions(ctx, server_hostname="localhost"))
    try:
        pika.BlockingConnection(params).close()
    except (pe.AuthenticationError, pe.ProbableAuthenticationError,
            pe.AMQPConnectionError) as e:
        print(f"refused without a certificate, as expected: {e!r}")
    else:
        raise AssertionError("EXTERNAL without a client certificate logged in")


ACK_TIMEOUT_TEXT = ("PRECONDITION_FAILED - delivery acknowledgement on channel {} "
                    "timed out. Timeout value used: 1000 ms. This timeout value can "
                    "be configured, see consumers doc guide to learn more")


def consumer_timeout():
    # x-consumer-timeout 1000 on the queue (the broker's default stays 30
    # minutes): a consumer that never acks loses its channel with 406.
    conn = connect()
    ch = conn.channel()
    q = name("ctimeout")
    ch.queue_declare(q, exclusive=True, arguments={"x-consumer-timeout": 1000})
    ch.basic_publish("", q, b"slow")
    got = []
    ch.basic_consume(q, lambda ch_, m, p, b: got.append(m.redelivered))
    conn.call_later(10, ch.stop_consuming)
    text = expect_channel_close(ch.start_consuming, 406)
    check_eq(text, ACK_TIMEOUT_TEXT.format(ch.channel_number), "close text")
    check_eq(got, [False], "deliveries before the timeout")
    # The connection lives; the message came back, redelivered.
    ch2 = conn.channel()
    method, _, body = get_one(ch2, q)
    check_eq((method.redelivered, body), (True, b"slow"), "requeued message")
    # A consumer that acks in time keeps its channel.
    ch2.basic_publish("", q, b"fast")
    acked = []

    def on_msg(ch_, m, p, b):
        ch_.basic_ack(m.delivery_tag)
        acked.append(b)

    ch2.basic_consume(q, on_msg)
    alive = deadline(2.5)
    while alive():
        conn.process_data_events(time_limit=0.1)
    check_eq(acked, [b"fast"], "acked deliveries")
    check(ch2.is_open, "the acking consumer's channel was closed")
    conn.close()


def delivery_limit():
    # A quorum queue with x-delivery-limit 2: three deliveries counted 0, 1,
    # 2 in x-delivery-count, each nacked back; then it is dead-lettered to
    # the default exchange's dlq with reason delivery_limit.
    conn = connect()
    ch = conn.channel()
    q, dlq = name("dlimit"), name("dlimit-dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    try:
        ch.basic_publish("", q, b"poison")
        seen = []

        def on_msg(ch_, m, p, b):
            seen.append((m.redelivered, (p.headers or {}).get("x-delivery-count")))
            ch_.basic_nack(m.delivery_tag, requeue=True)
            if len(seen) == 3:
                ch_.stop_consuming()

        ch.basic_consume(q, on_msg)
        conn.call_later(10, ch.stop_consuming)
        ch.start_consuming()
        check_eq(seen, [(False, 0), (True, 1), (True, 2)], "deliveries")
        _, props, body = get_one(ch, dlq)
        check_eq(body, b"poison", "dead letter")
        check_eq(props.headers.get("x-first-death-reason"), "delivery_limit",
                 "x-first-death-reason")
        check_eq(props.headers["x-death"][0]["reason"], "delivery_limit", "x-death reason")
        check_eq(ch.queue_declare(q, passive=True).method.message_count, 0,
                 "left in the quorum queue")
    finally:
        ch.queue_delete(q)
    conn.close()


def delayed_retry():
    # The delayed-retry pattern: a consumer that fails a message nacks it
    # without requeue and republishes it to an x-delayed-message exchange
    # with x-delay; it comes back to the work queue no earlier than the
    # delay, with x-delay negated by the exchange, and succeeds then.
    conn = connect()
    ch = conn.channel()
    ex, q = name("retry-x"), name("retry-q")
    ch.exchange_declare(ex, exchange_type="x-delayed-message",
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, ex, routing_key=q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"job-1")
    attempts = []

    def on_msg(ch_, m, p, b):
        attempts.append((time.monotonic(), (p.headers or {}).get("x-delay")))
        if len(attempts) == 1:
            # Fail the first attempt: retry in 600 ms through the exchange.
            ch_.basic_publish(ex, q, b, pika.BasicProperties(headers={"x-delay": 600}))
            ch_.basic_ack(m.delivery_tag)
        else:
            ch_.basic_ack(m.delivery_tag)
            ch_.stop_consuming()

    ch.basic_consume(q, on_msg)
    conn.call_later(10, ch.stop_consuming)
    ch.start_consuming()
    check_eq(len(attempts), 2, "attempts")
    waited = attempts[1][0] - attempts[0][0]
    check(waited >= 0.55, f"retried after {waited:.3f}s, before its 600 ms delay")
    check_eq(attempts[1][1], -600, "x-delay on the retried message")
    # A delay in the past routes at once.
    ch.basic_publish(ex, q, b"now", pika.BasicProperties(headers={"x-delay": -5}))
    check_eq(get_one(ch, q)[2], b"now", "negative delay routed at once")
    # The plugin refuses a delayed exchange without x-delayed-type.
    try:
        ch.exchange_declare(name("retry-bad"), exchange_type="x-delayed-message")
    except pe.ChannelClosedByBroker as e:
        check_eq(e.reply_code, 406, "reply code")
        check_eq(e.reply_text, "PRECONDITION_FAILED - Invalid argument, "
                 "'x-delayed-type' must be an existing exchange type", "reply text")
    else:
        raise AssertionError("x-delayed-message without x-delayed-type was accepted")
    ch = conn.channel()
    ch.exchange_delete(ex)
    conn.close()


SCENARIOS = {f.__name__: f for f in [
    hello, work_queues, pubsub, routing, topics, rpc, confirms_individual,
    confirms_batch, confirms_async, mandatory_return, nack_requeue,
    prefetch_limit, exclusive_locked, passive_404, redeclare_406,
    wrong_password, large_message, many_channels, heartbeat, server_cancel,
    close_clean, close_after_burst, cc_bcc, channel_close_race, tls_hello,
    tls_external, consumer_timeout, delivery_limit, delayed_retry]}

if __name__ == "__main__":
    sys.exit(main(SCENARIOS))
