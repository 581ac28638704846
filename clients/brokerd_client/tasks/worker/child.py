"""A worker's child process (``--pool processes``): runs one task at a time.

Started by the parent as ``python -m brokerd_client.tasks.worker.child`` with
one end of a socket pair; it imports the app itself (a fresh interpreter, like
multiprocessing's "spawn"), then loops: read a job, run it, send the outcome.
The parent owns the broker connection, acks and leases; the child only runs
code, so killing it (hard time limit, revoke with terminate) loses nothing
but the task being killed.

It ignores SIGINT/SIGTERM (the parent decides when to stop; a Ctrl-C reaches
the whole process group) and dies with its parent (``PR_SET_PDEATHSIG`` on
Linux), so a task never keeps running after the worker that owned its message
is gone and the message has gone to another worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any

from .. import states
from ..exceptions import SoftTimeLimitExceeded
from ..execution import execute
from ..outcome import Outcome
from ..request import Request
from ..serialization import decode_body, encode_result
from .ipc import pack, recv_message

log = logging.getLogger("brokerd_client.tasks.worker.child")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _run(app: Any, msg: dict[str, Any]) -> dict[str, Any]:
    task = app.tasks.get(msg["name"])
    if task is None:
        from ..exceptions import NotRegistered

        outcome = Outcome.failure(NotRegistered(f"task {msg['name']!r} is not registered"))
        return _reply(outcome, None, msg)
    try:
        args, kwargs = decode_body(
            msg["body"],
            msg["ser"],
            msg.get("comp"),
            app.conf.task_max_decompressed_size,
            celery=bool(msg.get("celery")),
        )
    except Exception as exc:
        return _reply(Outcome.failure(exc), None, msg)
    info = msg.get("req") or {}
    req = Request(
        id=msg["id"],
        task=task.name,
        args=args,
        kwargs=kwargs,
        retries=int(info.get("retries", 0)),
        attempt=int(info.get("attempt", 1)),
        called_directly=False,
        hostname=info.get("hostname"),
        parent_id=info.get("parent_id"),
        root_id=info.get("root_id"),
        delivery_info=info.get("delivery_info") or {},
        time_limit=(msg.get("hard"), msg.get("soft")),
    )
    soft = msg.get("soft")
    if soft:
        signal.setitimer(signal.ITIMER_REAL, float(soft))
    try:
        outcome = execute(task, req, args, kwargs)
    finally:
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return _reply(outcome, msg.get("rser"), msg)


def _reply(outcome: Outcome, result_serializer: str | None, msg: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {"t": "done", "s": outcome.state}
    if outcome.state == states.SUCCESS:
        if result_serializer and not msg.get("ignore"):
            try:
                reply["p"] = encode_result(outcome.value, result_serializer)
            except Exception as exc:
                return _reply(Outcome.failure(exc), None, msg)
        return reply
    if outcome.exc is not None:
        reply["e"] = outcome.exc.as_dict()
    if outcome.state == states.RETRY:
        reply["c"] = outcome.countdown
        reply["a"] = outcome.args
        reply["k"] = outcome.kwargs
    return reply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="brokerd-worker child")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("-A", "--app", required=True)
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--broker")
    parser.add_argument("--max-decompressed-size", type=int)
    args = parser.parse_args(argv)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    logging.basicConfig(
        level=args.loglevel.upper(),
        format=f"[%(asctime)s: %(levelname)s/child-{os.getpid()}] %(message)s",
    )
    sock = socket.socket(fileno=args.fd)
    from ..loader import load_app

    try:
        app = load_app(args.app, args.broker, task_max_decompressed_size=args.max_decompressed_size)
    except BaseException as exc:
        sock.sendall(pack({"t": "fatal", "error": f"{type(exc).__name__}: {exc}"}))
        raise SystemExit(1) from exc
    from ..signals import worker_process_init

    if worker_process_init.receivers:
        worker_process_init.send(None)
    sock.sendall(pack({"t": "ready", "pid": os.getpid(), "tasks": sorted(app.tasks)}))
    while True:
        try:
            msg = recv_message(sock)
        except SoftTimeLimitExceeded:  # an alarm that fired just after its task ended
            continue
        if msg is None or msg.get("t") == "exit":
            break
        try:
            reply = _run(app, msg)
        except BaseException as exc:
            # A soft limit that fired outside the task body, a KeyboardInterrupt
            # from the task, an error raised describing its error: fail the
            # task, keep the child.
            reply = _reply(Outcome.failure(exc), None, msg)
        sock.sendall(pack(reply))
    with contextlib.suppress(Exception):
        app.close()


if __name__ == "__main__":
    main()
