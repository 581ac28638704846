"""The server side of brokerctl: the admin frames 60-67 (protocol/SPEC.md §17).

The control socket they usually arrive on is ``brokerd/control.py``.
"""

from __future__ import annotations

from .extension import AdminExtension, install

__all__ = ["AdminExtension", "install"]
