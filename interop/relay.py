"""A TCP relay in front of warren, for the `*-relay` columns of interop/run.sh.

    python3 relay.py TARGET_HOST TARGET_PORT

Listens on 127.0.0.1:0 and prints `relay listening on 127.0.0.1:PORT` once
bound. Every accepted connection gets its own connection to the target and
bytes are copied both ways, unchanged. Closes are passed on as they arrive:
a FIN from one side becomes shutdown(SHUT_WR) towards the other, a reset or
any other socket error resets both sides, and both sockets are closed once
both directions have ended. So a client sees the broker's close sequence
through a second TCP stack, with different timing, as it would behind a
proxy or a load balancer. Standard library only; it runs until killed.
"""

import asyncio
import socket
import struct
import sys

CHUNK = 64 * 1024


async def pump(loop, src, dst, what):
    """Copies src to dst until EOF (True) or a socket error (False)."""
    try:
        while True:
            data = await loop.sock_recv(src, CHUNK)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return True
            await loop.sock_sendall(dst, data)
    except OSError as e:
        print(f"relay: {what}: {e!r}", file=sys.stderr, flush=True)
        return False


def reset(sock):
    """Closes with SO_LINGER 0, which sends RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


async def relay(loop, client, target):
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.setblocking(False)
    try:
        await loop.sock_connect(upstream, target)
    except OSError as e:
        print(f"relay: connect {target}: {e!r}", file=sys.stderr, flush=True)
        reset(client)
        upstream.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = client.getpeername()[1]
    pending = {asyncio.ensure_future(pump(loop, client, upstream, f"client :{peer} -> broker")),
               asyncio.ensure_future(pump(loop, upstream, client, f"broker -> client :{peer}"))}
    clean = True
    while pending and clean:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        clean = all(t.result() for t in done)
    # A direction that failed leaves the other one nothing to wait for.
    for t in pending:
        t.cancel()
    for s in (client, upstream):
        if clean:
            s.close()
        else:
            reset(s)


async def main(host, port):
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    print(f"relay listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    tasks = set()  # the loop keeps only weak references to tasks
    while True:
        client, _ = await loop.sock_accept(listener)
        client.setblocking(False)
        t = asyncio.ensure_future(relay(loop, client, (host, port)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: relay.py TARGET_HOST TARGET_PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
