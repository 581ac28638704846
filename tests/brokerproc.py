"""A real brokerd in a child process, for integration and fault tests.

The same helper users get from ``brokerd_client.tasks.testing``: started on
port 0 with a temporary data directory; ``kill()`` is SIGKILL, ``terminate()``
the graceful stop, ``restart()`` keeps the port.
"""

from __future__ import annotations

from brokerd_client.tasks.testing import BrokerProcess

__all__ = ["BrokerProcess"]
