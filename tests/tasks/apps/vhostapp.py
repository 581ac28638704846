"""One app run as two projects on two vhosts of one broker (test_e2e_vhosts.py).

Both use the same task names, the queue ``celery`` and a schedule named
``tick``; ``VH_PROJECT`` says which project a worker is, and every task
records it, so a test sees which worker ran what.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from brokerd_client.tasks import App

PROJECT = os.environ.get("VH_PROJECT", "producer")

app = App("vh", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(task_default_queue="celery")
if os.environ.get("VH_BEAT"):
    app.conf.beat_schedule = {
        "tick": {"task": "vh.tick", "schedule": 1.0, "args": (PROJECT,)},
    }


def mark(kind: str, **data: object) -> None:
    state = os.environ.get("E2E_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "project": PROJECT, "t": time.time(), **data})
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


@app.task(name="vh.whoami")
def whoami(sent_to: str) -> str:
    mark("ran", sent_to=sent_to)
    return PROJECT


@app.task(name="vh.tick")
def tick(scheduled_by: str) -> None:
    mark("tick", scheduled_by=scheduled_by)
