"""What the management-API clients (pyrabbit2, rabbitmqadmin) share: the
AMQP side of their scenarios, through pika, and the bounded waits.

The management API reports state that RabbitMQ samples (queue counts, the
connection list lag behind AMQP by up to its stats interval), so a check
after an AMQP action polls until the value is there, within a deadline,
and fails with the last value it saw.
"""

import time

import pika
import pika.exceptions as pe

from common import HOST, PORT, USER, PASSWORD, check_eq

# What RabbitMQ sends to a connection closed through the API without an
# `X-Reason` header (rabbit_mgmt_wm_connection, rabbit_reader).
FORCED_CODE = 320
FORCED_TEXT = "CONNECTION_FORCED - Closed via management plugin"

# RabbitMQ's name for the password hash its API shows and exports.
SHA256 = "rabbit_password_hashing_sha256"


def amqp_connect(vhost="/", user=USER, password=PASSWORD, connection_name=None):
    props = {"connection_name": connection_name} if connection_name else None
    params = pika.ConnectionParameters(
        host=HOST, port=PORT, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        client_properties=props, connection_attempts=1,
        blocked_connection_timeout=30)
    return pika.BlockingConnection(params)


def wait_until(probe, what, want=None, seconds=10, interval=0.05):
    """Calls `probe` until it returns `want` (or, without `want`, something
    true); returns that. A bounded poll: the API has no event to wait on."""
    end = time.monotonic() + seconds
    while True:
        last = probe()
        if (last == want) if want is not None else last:
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"{what}: not within {seconds}s (last: {last!r})")
        time.sleep(interval)


def wait_forced_close(conn, text=FORCED_TEXT, seconds=10):
    """Runs pika's I/O loop until the broker closes `conn`; checks that it
    was 320 CONNECTION_FORCED with `text` (RabbitMQ's, by default the one
    for a close through the API)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn.process_data_events(time_limit=0.2)
        except pe.ConnectionClosedByBroker as e:
            check_eq((e.reply_code, e.reply_text), (FORCED_CODE, text),
                     "pika's view of the close (reply code, text)")
            check_eq(conn.is_closed, True, "pika connection closed")
            return
    raise AssertionError(f"pika saw no connection.close within {seconds}s")


def pick(item, *keys):
    """The fields `keys` of `item` (missing ones as None), to compare what
    RabbitMQ guarantees and nothing else."""
    return {k: item.get(k) for k in keys}


def matching(items, **fields):
    """The items whose fields have these values."""
    return [i for i in items if all(i.get(k) == v for k, v in fields.items())]


def one(items, what, **fields):
    found = matching(items, **fields)
    check_eq(len(found), 1, f"{what} matching {fields}")
    return found[0]
