"""Entry point of ``brokerd-worker`` and ``python -m brokerd_client.worker``.

The worker itself lives in :mod:`brokerd_client.tasks.worker`; this module
only keeps the console-script path declared in pyproject stable.
"""

from __future__ import annotations

from .tasks.worker.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
