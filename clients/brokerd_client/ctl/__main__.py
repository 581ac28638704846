"""``python -m brokerd_client.ctl``: the ``brokerctl`` command."""

from __future__ import annotations

from .main import main

main()
