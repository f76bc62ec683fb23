"""A real Celery worker executing a task through Warren."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import check_eq, deadline, main, name


def celery_task():
    from celery_app import add

    queue = name("celery")
    work = Path(tempfile.mkdtemp(prefix="celery-interop-"))
    log = open(work / "worker.log", "w")
    # The default pool, mingle, gossip and events are left on: the worker
    # declares its pidbox and event exchanges through Warren as it would
    # against RabbitMQ.
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", queue,
         "--concurrency=1", "--loglevel=INFO", "-n", f"{queue}@localhost"],
        cwd=os.path.dirname(os.path.abspath(__file__)), stdout=log, stderr=subprocess.STDOUT)
    try:
        results = []
        for i, (x, y) in enumerate([(2, 3), (20, 22)]):
            out = str(work / f"result-{i}")
            results.append((out, x + y, add.apply_async((x, y, out), queue=queue)))
        alive = deadline(40)
        while not all(Path(o).exists() for o, _, _ in results) and alive():
            if worker.poll() is not None:
                raise AssertionError(f"worker exited with {worker.returncode}")
            time.sleep(0.1)
        for out, want, async_result in results:
            check_eq(Path(out).read_text() if Path(out).exists() else None, str(want), "task side effect")
            # The rpc:// result backend: the worker's reply comes back over AMQP.
            check_eq(async_result.get(timeout=20), want, "task result via rpc://")
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)
        log.close()
        print((work / "worker.log").read_text()[-3000:])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main({"celery_task": celery_task}))
