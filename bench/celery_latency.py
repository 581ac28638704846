"""Run: python bench/celery_latency.py (N=300, BROKERD_ARGS="--durability normal").

p50 latency of a noop Celery task on an idle solo worker: brokerd vs RabbitMQ.

Side by side in one run: the same app (json, acks_late off, no results),
one solo worker per broker, tasks sent one at a time; latency = the task's
start time (time.time() in the worker) minus the send time.
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from brokerproc import BrokerProcess

APP = """
import os, time
from celery import Celery
import brokerd_client.celery
app = Celery("lat", broker=os.environ["LAT_URL"])
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    task_default_queue=os.environ["LAT_Q"],
    broker_connection_retry_on_startup=True,
)
@app.task(name="lat.noop")
def noop(sent):
    fd = os.open(os.environ["LAT_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{time.time() - sent:.6f}\\n".encode()); os.close(fd)
"""
N = int(os.environ.get("N", "300"))
d = Path(tempfile.mkdtemp())
(d / "latapp.py").write_text(APP)
b = BrokerProcess(d / "data", *os.environ.get("BROKERD_ARGS", "").split()).start()
urls = {"brokerd": b.url, "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}
workers = {}
try:
    for name, url in urls.items():
        env = dict(
            os.environ,
            LAT_URL=url,
            LAT_Q=f"lat-{os.getpid()}",
            LAT_OUT=str(d / f"{name}.out"),
            PYTHONPATH=str(d),
        )
        log = open(d / f"{name}.log", "wb")  # noqa: SIM115  (the worker's, closed at exit)
        workers[name] = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("celery")),
                "-A",
                "latapp",
                "worker",
                "-P",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=WARNING",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=d,
        )
    os.environ["LAT_URL"] = b.url
    os.environ["LAT_Q"] = "x"
    os.environ["LAT_OUT"] = "/dev/null"
    sys.path.insert(0, str(d))
    from celery import Celery

    import brokerd_client.celery  # noqa

    apps = {}
    for name, url in urls.items():
        a = Celery("lat", broker=url)
        a.conf.update(task_ignore_result=True, task_default_queue=f"lat-{os.getpid()}")
        apps[name] = a
    time.sleep(4)
    for name in urls:  # warm up
        for _ in range(20):
            apps[name].send_task("lat.noop", args=[time.time()])
            time.sleep(0.01)
    time.sleep(1)
    for name in urls:
        (d / f"{name}.out").write_text("")
    for _i in range(N):
        for name in urls:  # alternate: same conditions for both
            apps[name].send_task("lat.noop", args=[time.time()])
            time.sleep(0.02)  # idle worker: one task at a time
    time.sleep(2)
    for name in urls:
        vals = sorted(float(x) for x in (d / f"{name}.out").read_text().split())
        print(
            f"{name:9s} n={len(vals)} p50={statistics.median(vals) * 1000:.2f} ms "
            f"p90={vals[int(len(vals) * 0.9)] * 1000:.2f} ms"
        )
finally:
    for w in workers.values():
        os.killpg(w.pid, signal.SIGKILL)
        w.wait()
    b.kill()
