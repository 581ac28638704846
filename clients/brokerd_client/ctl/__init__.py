"""brokerctl: administer a running brokerd with rabbitmqctl's command names.

``main.py`` parses the command line and maps outcomes to exit codes,
``target.py`` finds the broker (its control socket, or ``--url``) and the
token, ``commands.py`` speaks the admin frames, ``output.py`` prints tables
for people and JSON for scripts. See docs/brokerctl.md.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
