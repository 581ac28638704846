"""What happened when a task ran, in a form every pool can report.

Running a task (in a thread, on the loop, in a child process, eagerly) always
ends in one :class:`Outcome`: the value, the error, or a request to retry.
Turning it into a result record, a retry message and an ack is then one piece
of code, whichever pool ran the task.
"""

from __future__ import annotations

import traceback as _tb
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import states

__all__ = ["ExcInfo", "Outcome"]

_EXECUTION_FILE = str(Path(__file__).with_name("execution.py"))


@dataclass(frozen=True, slots=True)
class ExcInfo:
    """An exception reduced to text: what a result payload stores."""

    exc_type: str
    exc_module: str
    exc_message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ExcInfo:
        etype = type(exc)
        tb = exc.__traceback__
        # Start at the task's own code, not at the frame that called it.
        while tb is not None and tb.tb_frame.f_code.co_filename == _EXECUTION_FILE:
            tb = tb.tb_next
        text = "".join(_tb.format_exception(etype, exc, tb or exc.__traceback__))
        message = str(exc)
        if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
            # str(KeyError("k")) is "'k'": keep the key, so the rebuilt
            # KeyError("k") reads the same and is not quoted twice.
            message = exc.args[0]
        return cls(etype.__name__, etype.__module__, message, text)

    def as_dict(self) -> dict[str, str]:
        return {
            "exc_type": self.exc_type,
            "exc_module": self.exc_module,
            "exc_message": self.exc_message,
            "traceback": self.traceback,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExcInfo:
        return cls(
            str(data.get("exc_type", "Exception")),
            str(data.get("exc_module", "builtins")),
            str(data.get("exc_message", "")),
            str(data.get("traceback", "")),
        )


@dataclass(slots=True)
class Outcome:
    """One task run's result.

    ``state`` is SUCCESS (``value``), FAILURE or REVOKED (``exc``), or RETRY
    (``exc`` may be ``None``; run again in ``countdown`` seconds, with
    ``args``/``kwargs`` replaced when not ``None``). ``exception`` is the live
    exception object when the run happened in this process (eager mode
    re-raises it); it never crosses a process boundary.
    """

    state: str
    value: Any = None
    exc: ExcInfo | None = None
    countdown: float = 0.0
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    exception: BaseException | None = None
    #: A result payload already encoded (by a child process), or None.
    payload: bytes | None = None

    @classmethod
    def success(cls, value: Any) -> Outcome:
        return cls(states.SUCCESS, value)

    @classmethod
    def failure(cls, exc: BaseException) -> Outcome:
        return cls(states.FAILURE, exc=ExcInfo.from_exception(exc), exception=exc)

    @classmethod
    def revoked(cls, reason: str) -> Outcome:
        return cls(
            states.REVOKED,
            exc=ExcInfo("TaskRevokedError", "brokerd_client.tasks.exceptions", reason, ""),
        )
