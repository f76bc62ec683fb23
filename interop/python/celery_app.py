"""The Celery app a real worker runs in the celery_task scenario.

Results travel back through Celery's rpc:// backend (AMQP replies to the
caller), and the task also records its result as a file, so a failure shows
which half broke.
"""

import os
from pathlib import Path

from celery import Celery

PORT = os.environ.get("WARREN_PORT", "5672")
app = Celery("warren_interop", broker=f"amqp://guest:guest@127.0.0.1:{PORT}//", backend="rpc://")
app.conf.update(
    broker_connection_retry_on_startup=False,
    broker_connection_max_retries=0,
    worker_hijack_root_logger=False,
)


@app.task(name="interop.add")
def add(x, y, out):
    Path(out + ".tmp").write_text(str(x + y))
    os.replace(out + ".tmp", out)  # the caller never sees a half-written file
    return x + y
