"""The server side of brokerd's task layer: results, revocations, schedules.

The SDK (``brokerd_client.tasks``) speaks to it with the frames 40-51 of the
protocol (see protocol/SPEC.md §14 and docs/tasks-server.md).
"""

from __future__ import annotations

from .extension import TaskExtension, install

__all__ = ["TaskExtension", "install"]
