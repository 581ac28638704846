"""Users, passwords, tags and permissions (docs/security.md).

``users`` holds them (the store keeps the record), ``passwords`` hashes,
``verifier`` checks off the event loop, ``rules`` says what each frame
needs and ``access`` decides it for one session. ``admin`` serves the admin
frames that manage them (SPEC §17.6).
"""

from .access import Access
from .users import Permission, User, Users
from .verifier import Verifier

__all__ = ["Access", "Permission", "User", "Users", "Verifier"]
