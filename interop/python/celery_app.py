"""The Celery app a real worker runs in the celery_task scenario.

Result strategy: no result backend. Celery's rpc:// backend needs direct
reply-to (amq.rabbitmq.reply-to), which Warren does not implement yet, so the
task records its result as a file named by the caller and the test reads it.
"""

import os
from pathlib import Path

from celery import Celery

PORT = os.environ.get("WARREN_PORT", "5672")
app = Celery("warren_interop", broker=f"amqp://guest:guest@127.0.0.1:{PORT}//")
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=False,
    broker_connection_max_retries=0,
    worker_hijack_root_logger=False,
)


@app.task(name="interop.add")
def add(x, y, out):
    Path(out + ".tmp").write_text(str(x + y))
    os.replace(out + ".tmp", out)  # the caller never sees a half-written file
    return x + y
