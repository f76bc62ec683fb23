#!/usr/bin/env python3
"""Disk used under a steady persistent load whose backlog never empties.

One producer publishes persistent, confirmed 1 KiB messages to a durable
queue at --rate msg/s for --minutes. Consumers come in bursts: when the
queue holds more than --high messages a consumer drains it (faster than the
producer) until it holds fewer than --low, then stops. Every --every seconds
the script records the queue's depth (management API), the live message
bytes it implies and the bytes the data directory's files take, and at the
end prints the worst ratios.

  python3 bench/steady.py --warren target/release/warren --perf target/release/warren-perf

Writes a CSV (seconds, depth, live_bytes, disk_bytes) to --out.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def depth(api, queue):
    req = urllib.request.Request(f"{api}/api/queues/%2F/{queue}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["messages"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warren", default="target/release/warren")
    ap.add_argument("--perf", default="target/release/warren-perf")
    ap.add_argument("--port", type=int, default=5697)
    ap.add_argument("--mgmt", type=int, default=15697)
    ap.add_argument("--data", default="/tmp/warren-steady")
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--low", type=int, default=50000)
    ap.add_argument("--high", type=int, default=500000)
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("--out", default="bench/results/steady.csv")
    a = ap.parse_args()

    subprocess.run(["rm", "-rf", a.data], check=True)
    broker = subprocess.Popen(
        [a.warren, "--listen", f"127.0.0.1:{a.port}", "--management-listen",
         f"127.0.0.1:{a.mgmt}", "--metrics-listen", "127.0.0.1:0", "--data-dir", a.data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{a.mgmt}"
    perf = [a.perf, "--port", str(a.port), "--quiet", "--size", str(a.size), "--persistent",
            "--durable", "--queue-prefix", "steady"]
    subprocess.run([a.perf, "--port", str(a.port), "--quiet", "--probe", "--duration", "30"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    seconds = int(a.minutes * 60)
    producer = subprocess.Popen(
        perf + ["--producers", "1", "--consumers", "0", "--rate", str(a.rate), "--confirm", "1000",
                "--duration", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    consumer = None
    rows = []
    start = time.time()
    next_sample = start
    # Bounded: the run's length plus a minute for the last burst.
    while time.time() - start < seconds + 60 and producer.poll() is None:
        try:
            d = depth(api, "steady-0")
        except Exception:  # noqa: BLE001 - the queue may not exist yet
            d = 0
        if consumer is None and d > a.high:
            consumer = subprocess.Popen(
                perf + ["--producers", "0", "--consumers", "1", "--no-purge", "--prefetch", "1000",
                        "--duration", "600"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif consumer is not None and (d < a.low or consumer.poll() is not None):
            consumer.terminate()
            consumer.wait(timeout=30)
            consumer = None
        if time.time() >= next_sample:
            rows.append((round(time.time() - start, 1), d, d * a.size, dir_bytes(a.data)))
            next_sample += a.every
        time.sleep(0.2)
    if consumer is not None:
        consumer.terminate()
        consumer.wait(timeout=30)
    producer.wait(timeout=60)
    broker.terminate()
    broker.wait(timeout=60)

    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        f.write("seconds,depth,live_bytes,disk_bytes\n")
        for r in rows:
            f.write(",".join(map(str, r)) + "\n")
    mib = 1 << 20
    # After the first minute (the backlog is built once).
    steady = [r for r in rows if r[0] >= 60]
    worst_over = max(r[3] - 2 * r[2] for r in steady)
    worst_ratio = max(r[3] / r[2] for r in steady if r[2] > 0)
    print(f"samples {len(rows)}, depth {min(r[1] for r in steady)}..{max(r[1] for r in steady)}")
    print(f"disk used {min(r[3] for r in steady) / mib:.0f}..{max(r[3] for r in steady) / mib:.0f} MiB")
    print(f"worst disk / live bytes: {worst_ratio:.2f}")
    print(f"worst disk - 2 x live bytes: {worst_over / mib:.0f} MiB")
    for r in rows[:: max(1, len(rows) // 30)]:
        print(f"  t={r[0]:>7}s depth={r[1]:>7} live={r[2] / mib:7.0f} MiB disk={r[3] / mib:7.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
