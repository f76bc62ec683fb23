"""Issue 13's scale check: N queues and M open AMQP connections, then the
time of GET /api/queues (one page of 100, and the whole list) and of a few
other lists, as the management API answers them. Prints one JSON line.

    python bench/mgmt_scale.py AMQP_PORT HTTP_PORT [QUEUES] [CONNECTIONS]
"""

import base64
import http.client
import json
import sys
import time

import pika

amqp_port, http_port = int(sys.argv[1]), int(sys.argv[2])
n_queues = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
n_conns = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
auth = "Basic " + base64.b64encode(b"guest:guest").decode()


def get(path):
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    t0 = time.perf_counter()
    c.request("GET", path, headers={"Authorization": auth})
    r = c.getresponse()
    body = r.read()
    elapsed = time.perf_counter() - t0
    c.close()
    assert r.status == 200, (path, r.status, body[:200])
    return elapsed, len(body)


params = pika.ConnectionParameters("127.0.0.1", amqp_port, heartbeat=0)
setup = pika.BlockingConnection(params)
ch = setup.channel()
for i in range(n_queues):
    ch.queue_declare(f"scale-{i:05d}")
conns = [pika.BlockingConnection(params) for _ in range(n_conns)]
for c in conns[:100]:
    c.channel()

result = {"queues": n_queues, "connections": n_conns + 1}
for name, path in [
    ("queues_page_100", "/api/queues?page=1&page_size=100"),
    ("queues_all", "/api/queues"),
    ("queues_vhost_page_100_sorted_by_messages", "/api/queues/%2F?page=3&page_size=100&sort=messages"),
    ("connections_all", "/api/connections"),
    ("overview", "/api/overview"),
]:
    runs = sorted(get(path)[0] for _ in range(5))
    result[name + "_ms_median"] = round(runs[2] * 1000, 1)
    result[name + "_ms_max"] = round(runs[-1] * 1000, 1)
result["queues_all_bytes"] = get("/api/queues")[1]
print(json.dumps(result))
for c in conns:
    c.close()
setup.close()
