"""Publishes N messages with x-delay to an x-delayed-message exchange and
prints the broker's resident memory before and after (bench/delayed_rss.sh
starts the broker). pika, one publish per write, no confirms; the last
step waits (bounded) for the broker to report every message held."""

import base64
import json
import sys
import time
import urllib.request

import pika

port, http_port, pid, n, size = (int(a) for a in sys.argv[1:6])


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def held():
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/exchanges/%2f/later")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r).get("messages_delayed", 0)


conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
ch = conn.channel()
ch.exchange_declare("later", exchange_type="x-delayed-message",
                    arguments={"x-delayed-type": "direct"})
ch.queue_declare("later-q")
ch.queue_bind("later-q", "later", routing_key="k")
before = rss_kib()
body = b"x" * size
props = pika.BasicProperties(headers={"x-delay": 3_600_000})
t0 = time.monotonic()
for i in range(n):
    ch.basic_publish("later", "k", body, props)
    if i % 50_000 == 0:
        conn.process_data_events(time_limit=0)
deadline = time.monotonic() + 120
while held() < n and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.5)
elapsed = time.monotonic() - t0
count = held()
after = rss_kib()
conn.close()
print(json.dumps({
    "messages": n, "body_bytes": size, "held": count,
    "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
    "bytes_per_message": round((after - before) * 1024 / max(count, 1)),
    "publish_seconds": round(elapsed, 1),
}))
