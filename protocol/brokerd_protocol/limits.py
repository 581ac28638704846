"""Protocol constants shared by server and clients."""

from __future__ import annotations

#: Versions this codec speaks, newest last.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
PROTOCOL_VERSION = 1

#: Bytes in the big-endian length prefix of every frame.
HEADER_SIZE = 4
#: Default and hard ceiling for one frame's payload (the msgpack part).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HARD_MAX_FRAME = 64 * 1024 * 1024
#: Highest priority a message may carry (0 is the lowest).
MAX_PRIORITY = 9
#: Maximum nesting depth accepted inside a frame's msgpack payload.
MAX_DEPTH = 16
#: Characters of a Reject's ``reason`` a server keeps (``x-death-detail``).
MAX_REJECT_REASON = 1024
