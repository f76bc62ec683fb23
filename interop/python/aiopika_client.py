"""aio-pika (asyncio, on aiormq) against Warren."""

import asyncio
import sys

import aio_pika
import aiormq.exceptions as aex
from aio_pika import ExchangeType, Message

from common import (HOST, PORT, USER, PASSWORD, TOPIC_BINDINGS, TOPIC_EXPECTED,
                    TOPIC_KEYS, check, check_eq, fib, large_body, main, name,
                    redeclare_text, sha)


async def connect(password=PASSWORD, heartbeat=None):
    url = f"amqp://{USER}:{password}@{HOST}:{PORT}/"
    if heartbeat is not None:
        url += f"?heartbeat={heartbeat}"
    # connect, not connect_robust: reconnection would hide a dropped link.
    return await aio_pika.connect(url)


async def get_one(queue, seconds=5):
    for _ in range(int(seconds / 0.02)):
        m = await queue.get(no_ack=True, fail=False)
        if m is not None:
            return m
        await asyncio.sleep(0.02)
    raise AssertionError(f"no message on {queue.name}")


async def drain(queue):
    out = []
    for _ in range(1000):
        m = await queue.get(no_ack=True, fail=False)
        if m is None:
            return out
        out.append(m)
    raise AssertionError("queue did not drain")


async def expect_close(coro, code):
    try:
        await coro
    except aex.ChannelClosed as e:
        # aiormq maps well-known codes to subclasses that carry only the text.
        by_class = {aex.ChannelAccessRefused: 403, aex.ChannelNotFoundEntity: 404,
                    aex.ChannelLockedResource: 405, aex.ChannelPreconditionFailed: 406}
        got_code = by_class.get(type(e))
        text = e.args[0] if got_code else e.args[1]
        check_eq(got_code or e.args[0], code, f"reply code ({text})")
        return text
    raise AssertionError(f"expected channel.close {code}")


async def until(cond, seconds, what):
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def bound_queue(conn, exchange, keys):
    ch = await conn.channel()
    q = await ch.declare_queue("", exclusive=True)
    check(q.name.startswith("amq.gen-"), f"server-named queue {q.name!r}")
    for k in keys:
        await q.bind(exchange, routing_key=k)
    return q


async def hello():
    async with await connect() as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name("hello"))
        await ch.default_exchange.publish(Message(b"Hello World!"), routing_key=q.name)
        async with q.iterator(no_ack=True) as it:
            m = await asyncio.wait_for(it.__anext__(), 5)
        check_eq(m.body, b"Hello World!", "body")
        await q.delete()


async def work_queues():
    n = 20
    async with await connect() as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name("tasks"), durable=True)
        stats = []
        for _ in range(2):
            wconn = await connect()
            wch = await wconn.channel()
            await wch.set_qos(prefetch_count=1)
            wq = await wch.get_queue(q.name, ensure=False)
            s = {"unacked": 0, "max": 0, "done": 0, "conn": wconn}

            async def work(msg, s=s):
                s["unacked"] += 1
                s["max"] = max(s["max"], s["unacked"])
                await asyncio.sleep(0.005)
                s["unacked"] -= 1
                s["done"] += 1
                await msg.ack()

            await wq.consume(work)
            stats.append(s)
        for i in range(n):
            await ch.default_exchange.publish(
                Message(f"task {i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=q.name)
        await until(lambda: sum(s["done"] for s in stats) == n, 15, "all tasks")
        for s in stats:
            check(s["max"] <= 1, f"worker had {s['max']} unacked with prefetch 1")
            check(s["done"] > 0, f"fair dispatch: {[x['done'] for x in stats]}")
        for s in stats:
            await s["conn"].close()
        await q.delete()


async def routed(kind, bindings, keys):
    """Declares an exchange, binds exclusive queues, publishes with confirms."""
    async with await connect() as conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(name(kind), kind)
        queues = {k: await bound_queue(conn, ex, pats) for k, pats in bindings.items()}
        for key, body in keys:
            await ex.publish(Message(body), routing_key=key)
        out = {k: await drain(q) for k, q in queues.items()}
        await ex.delete()
        return out


async def pubsub():
    got = await routed(ExchangeType.FANOUT, {"a": [""], "b": [""]}, [("", b"log line")])
    check_eq({k: [m.body for m in v] for k, v in got.items()},
             {"a": [b"log line"], "b": [b"log line"]}, "fanout copies")


async def routing():
    got = await routed(ExchangeType.DIRECT, {"a": ["error"], "b": ["info", "warning", "error"]},
                       [(s, s.encode()) for s in ["info", "warning", "error"]])
    check_eq([m.body for m in got["a"]], [b"error"], "error-only queue")
    check_eq([m.body for m in got["b"]], [b"info", b"warning", b"error"], "all-severities queue")


async def topics():
    got = await routed(ExchangeType.TOPIC, TOPIC_BINDINGS, [(k, k.encode()) for k in TOPIC_KEYS])
    for k, msgs in got.items():
        check_eq([m.routing_key for m in msgs], TOPIC_EXPECTED[k], f"topic queue {k}")


async def rpc():
    async with await connect() as server, await connect() as client:
        sch = await server.channel()
        await sch.set_qos(prefetch_count=1)
        rq = await sch.declare_queue(name("rpc_queue"), auto_delete=True)

        async def on_request(msg):
            async with msg.process():
                reply = str(fib(int(msg.body))).encode()
                await sch.default_exchange.publish(
                    Message(reply, correlation_id=msg.correlation_id), routing_key=msg.reply_to)

        await rq.consume(on_request)
        cch = await client.channel()
        callback = await cch.declare_queue("", exclusive=True)
        futures = {}

        async def on_reply(msg):
            fut = futures.pop(msg.correlation_id, None)
            if fut:
                fut.set_result(msg.body)

        await callback.consume(on_reply, no_ack=True)
        for n in [1, 10, 30]:
            corr = f"corr-{n}"
            futures[corr] = asyncio.get_running_loop().create_future()
            await cch.default_exchange.publish(
                Message(str(n).encode(), reply_to=callback.name, correlation_id=corr),
                routing_key=rq.name)
            check_eq(await asyncio.wait_for(futures[corr], 5), str(fib(n)).encode(), f"fib({n})")


async def confirms(style):
    async with await connect() as conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(name("confirms"), exclusive=True)
        x = ch.default_exchange
        if style == "individual":
            for i in range(100):
                # With confirms on, publish returns once the broker has acked.
                await x.publish(Message(str(i).encode()), routing_key=q.name)
        elif style == "batch":
            for b in range(10):
                await asyncio.gather(*[x.publish(Message(str(i).encode()), routing_key=q.name)
                                       for i in range(10)])
        else:
            tasks = [asyncio.ensure_future(x.publish(Message(str(i).encode()), routing_key=q.name))
                     for i in range(100)]
            acked = []
            for t in tasks:
                t.add_done_callback(lambda f: acked.append(f.exception() is None))
            await until(lambda: len(acked) == 100, 10, "confirms")
            check(all(acked), "a publish was nacked")
        q2 = await ch.declare_queue(q.name, passive=True)
        check_eq(q2.declaration_result.message_count, 100, "messages confirmed")


async def confirms_individual():
    await confirms("individual")


async def confirms_batch():
    await confirms("batch")


async def confirms_async():
    await confirms("async")


async def mandatory_return():
    async with await connect() as conn:
        # aiormq matches a basic.return to its publish through the publisher
        # confirm and the message_id, and raises it from publish().
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        try:
            await ch.default_exchange.publish(Message(b"lost", message_id="m1"),
                                              routing_key=name("nowhere"), mandatory=True)
        except aio_pika.exceptions.PublishError as e:
            frame = e.frame
            check_eq((frame.reply_code, frame.reply_text, e.message.body), (312, "NO_ROUTE", b"lost"),
                     "basic.return")
            return
        raise AssertionError("no basic.return")


async def nack_requeue():
    async with await connect() as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name("nack"), exclusive=True)
        await ch.default_exchange.publish(Message(b"again"), routing_key=q.name)
        seen = []

        async def on_msg(msg):
            seen.append((msg.redelivered, msg.body))
            if len(seen) == 1:
                await msg.nack(requeue=True)
            else:
                await msg.ack()

        await q.consume(on_msg)
        await until(lambda: len(seen) >= 2, 5, "redelivery")
        check_eq(seen, [(False, b"again"), (True, b"again")], "deliveries")


async def prefetch_limit():
    total, limit = 30, 5
    async with await connect() as conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(name("prefetch"), exclusive=True)
        for i in range(total):
            await ch.default_exchange.publish(Message(str(i).encode()), routing_key=q.name)
        await ch.set_qos(prefetch_count=limit)
        unacked = []
        await q.consume(lambda m: unacked.append(m))
        done = 0
        for _ in range(150):
            if done >= total:
                break
            # Let the broker push as much as it will before acking anything.
            await asyncio.sleep(0.1)
            got, unacked[:] = list(unacked), []
            check(len(got) <= limit, f"{len(got)} unacked with prefetch {limit}")
            if got:
                check(len(got) == limit or done + len(got) == total,
                      f"only {len(got)} delivered while more are ready")
                await got[-1].ack(multiple=True)
                done += len(got)
        check_eq(done, total, "consumed")


async def exclusive_locked():
    async with await connect() as a, await connect() as b:
        q = name("exclusive")
        await (await a.channel()).declare_queue(q, exclusive=True)
        text = await expect_close((await b.channel()).declare_queue(q), 405)
        check(text.startswith("RESOURCE_LOCKED - "), f"text {text!r}")
        bq = await (await b.channel()).get_queue(q, ensure=False)
        await expect_close(bq.consume(lambda m: None), 405)


async def passive_404():
    async with await connect() as conn:
        q = name("missing")
        text = await expect_close((await conn.channel()).declare_queue(q, passive=True), 404)
        check_eq(text, f"NOT_FOUND - no queue '{q}' in vhost '/'", "text")
        ch = await conn.channel()
        queue = await ch.declare_queue(q, exclusive=True)
        await ch.default_exchange.publish(Message(b"still working"), routing_key=q)
        check_eq((await get_one(queue)).body, b"still working", "after 404")


async def redeclare_406():
    async with await connect() as conn:
        q = name("redeclare")
        await (await conn.channel()).declare_queue(q, durable=False)
        text = await expect_close((await conn.channel()).declare_queue(q, durable=True), 406)
        check_eq(text, redeclare_text(q), "text")
        await (await conn.channel()).queue_delete(q)


async def wrong_password():
    try:
        conn = await connect(password="wrong-password")
    except (aex.ProbableAuthenticationError, aex.ConnectionClosed, aex.AMQPConnectionError) as e:
        check("403" in repr(e) or "ACCESS_REFUSED" in repr(e), f"error {e!r}")
        return
    await conn.close()
    raise AssertionError("login with a wrong password succeeded")


async def large_message():
    async with await connect() as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name("large"), exclusive=True)
        body = large_body()
        await ch.default_exchange.publish(Message(body), routing_key=q.name)
        got = (await get_one(q, 20)).body
        check_eq((len(got), sha(got)), (len(body), sha(body)), "body")


async def many_channels():
    async with await connect() as conn:
        chans = [await conn.channel(publisher_confirms=True) for _ in range(100)]
        q = await chans[0].declare_queue(name("channels"), exclusive=True)
        await asyncio.gather(*[c.default_exchange.publish(Message(str(i).encode()), routing_key=q.name)
                               for i, c in enumerate(chans)])
        q99 = await chans[99].get_queue(q.name, ensure=False)
        check_eq(sorted(int(m.body) for m in await drain(q99)), list(range(100)), "one per channel")
        for c in chans:
            await c.close()


async def heartbeat():
    async with await connect(heartbeat=2) as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name("heartbeat"), exclusive=True)
        await asyncio.sleep(10)
        check(not conn.is_closed, "connection closed while idle")
        await ch.default_exchange.publish(Message(b"alive"), routing_key=q.name)
        check_eq((await get_one(q)).body, b"alive", "after idle")


async def server_cancel():
    async with await connect() as a, await connect() as b:
        ch = await a.channel()
        q = await ch.declare_queue(name("cancel"))
        tag = await q.consume(lambda m: None)
        # aiormq drops a consumer the server cancelled from its table.
        await (await b.channel()).queue_delete(q.name)
        await until(lambda: tag not in ch.channel.consumers, 5, "server-sent basic.cancel")


SCENARIOS = {f.__name__: (lambda f=f: asyncio.run(f())) for f in [
    hello, work_queues, pubsub, routing, topics, rpc, confirms_individual,
    confirms_batch, confirms_async, mandatory_return, nack_requeue,
    prefetch_limit, exclusive_locked, passive_404, redeclare_406,
    wrong_password, large_message, many_channels, heartbeat, server_cancel]}

if __name__ == "__main__":
    sys.exit(main(SCENARIOS))
