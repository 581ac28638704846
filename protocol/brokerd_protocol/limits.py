"""Protocol constants shared by server and clients.

Every limit here is part of the wire contract and is listed in SPEC §13.
"""

from __future__ import annotations

#: Versions this codec speaks, newest last.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
PROTOCOL_VERSION = 1

#: Bytes in the big-endian length prefix of every frame.
HEADER_SIZE = 4
#: Default and hard ceiling for one frame's payload (the msgpack part).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HARD_MAX_FRAME = 64 * 1024 * 1024
#: Largest payload a server reads before it has sent Welcome (SPEC §2.1). A
#: Hello is tens of bytes plus the token; an unauthenticated peer must not be
#: able to make the server buffer a full-size frame.
MAX_HELLO_FRAME = 16 * 1024
#: Longest token (UTF-8 bytes) a server may be configured with: a Hello
#: carrying it still fits in MAX_HELLO_FRAME with room for the client name.
MAX_TOKEN_BYTES = 4096
#: Highest priority a message may carry (0 is the lowest).
MAX_PRIORITY = 9
#: Most unsettled deliveries one consumer may hold (``Consume.prefetch``).
MAX_PREFETCH = 65_535
#: Maximum nesting depth accepted inside a frame's msgpack payload.
MAX_DEPTH = 16

# Most items in one list field, per frame family. A receiver refuses a longer
# list as a protocol error before looking at its items, so one frame cannot
# make it do unbounded work; a sender splits larger batches into several frames.

#: Delivery ids in one Ack, Nack, Reject or Extend.
MAX_SETTLE_IDS = 10_000
#: Task ids in one ResultGet.
MAX_RESULT_GET_IDS = 1_000
#: Task ids in one ResultDelete.
MAX_RESULT_DELETE_IDS = 1_000
#: Task ids in one Revoke.
MAX_REVOKE_IDS = 10_000
#: Topics in one Subscribe.
MAX_SUBSCRIBE_TOPICS = 64
#: Characters of a Reject's ``reason`` a server keeps (``x-death-detail``).
MAX_REJECT_REASON = 1024
#: Most items one admin list request (ListQueues, ...) may ask for (SPEC §17).
MAX_LIST_LIMIT = 10_000
