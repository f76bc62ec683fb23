"""Shared plumbing for the Python interop clients.

Each client module defines scenario functions and calls `main(SCENARIOS)`.
The runner calls `python CLIENT.py SCENARIO`; exit 0 is a pass, exit 3 means
the client library cannot express the scenario (n/a), anything else fails.
"""

import hashlib
import os
import sys
import time
import traceback
import uuid

HOST = os.environ.get("WARREN_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_PORT", "5672"))
USER = os.environ.get("WARREN_USER", "guest")
PASSWORD = os.environ.get("WARREN_PASSWORD", "guest")
URL = f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/%2F"
# The management HTTP API (run.sh reads its port from warren's log).
HTTP_PORT = int(os.environ.get("WARREN_HTTP_PORT", "15672"))
HTTP_URL = os.environ.get("WARREN_HTTP_URL", f"http://{HOST}:{HTTP_PORT}")

# AMQPS (run.sh makes a CA, a server and a client certificate with openssl).
TLS_PORT = int(os.environ.get("WARREN_TLS_PORT", "5671"))
TLS_CA = os.environ.get("WARREN_TLS_CA", "")
TLS_CLIENT_CERT = os.environ.get("WARREN_TLS_CLIENT_CERT", "")
TLS_CLIENT_KEY = os.environ.get("WARREN_TLS_CLIENT_KEY", "")
# The user the client certificate's CN names (EXTERNAL logs in as it).
TLS_CLIENT_USER = os.environ.get("WARREN_TLS_CLIENT_USER", "tls-client")

EXIT_NA = 3


def api_get(path):
    """GET a management API path as the guest user; the decoded JSON."""
    import base64
    import json
    import urllib.request
    req = urllib.request.Request(HTTP_URL + path)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)

# The texts RabbitMQ sends; Warren must send the same.
def redeclare_text(queue):
    return (f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{queue}' "
            f"in vhost '/': received 'true' but current is 'false'")

TOPIC_BINDINGS = {"q1": ["*.orange.*"], "q2": ["*.*.rabbit", "lazy.#"]}
TOPIC_KEYS = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
              "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
              "quick.orange.new.rabbit", "lazy.orange.new.rabbit", "lazy"]
TOPIC_EXPECTED = {
    "q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
    "q2": ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
           "lazy.pink.rabbit", "lazy.orange.new.rabbit", "lazy"],
}
LARGE_SIZE = 8 * 1024 * 1024


class NotApplicable(Exception):
    """The client library cannot express this scenario."""


def name(prefix):
    """A queue or exchange name no other run or client will use."""
    return f"interop-py-{prefix}-{uuid.uuid4().hex[:10]}"


def large_body():
    return os.urandom(LARGE_SIZE)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end


def main(scenarios):
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} SCENARIO|list", file=sys.stderr)
        return 2
    scenario = sys.argv[1]
    if scenario == "list":
        print("\n".join(scenarios))
        return 0
    fn = scenarios.get(scenario)
    if fn is None:
        print(f"n/a: no such scenario for this client")
        return EXIT_NA
    try:
        fn()
    except NotApplicable as e:
        print(f"n/a: {e}")
        return EXIT_NA
    except Exception:
        traceback.print_exc()
        return 1
    return 0
