"""Micro-benchmark of the broker's Deliver encoding, the one frame sent per message.

    python -m bench.delivercheck [--count 300000] [--repeat 5] [--size 256]

Encodes ``--count`` deliveries three ways and prints the best of ``--repeat``
runs of each, in ns per delivery:

* ``inline``: the payload list packed in place with the codec's private packer
  (how the session built Deliver frames before ``encode_deliver`` existed);
* ``encode_deliver``: the public fast encoder the session uses;
* ``encode(Deliver)``: the generic path, building the frozen frame first.

Each variant also builds the props map the session builds, so the figures
are the encoding share of one delivery on the broker's loop. It measures;
it asserts nothing (the byte equality is a unit test).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import brokerd_protocol as bp
from brokerd_protocol import codec

Encoder = Callable[[int, int, bytes, int], bytes]


def _props(timestamp: int, attempts: int) -> dict[str, Any]:
    props: dict[str, Any] = {"timestamp": timestamp}
    if attempts:
        props["redelivered"] = True
    return props


_LEN = codec._LENGTH
_pack = codec._packb
_DELIVER = bp.Deliver.TYPE


def inline(did: int, timestamp: int, body: bytes, attempts: int) -> bytes:
    payload = _pack(
        [_DELIVER, 1, did, "", "jobs", body, _props(timestamp, attempts), attempts + 1, 30.0]
    )
    return _LEN.pack(len(payload)) + payload


_encode_deliver = bp.encode_deliver


def fast(did: int, timestamp: int, body: bytes, attempts: int) -> bytes:
    return _encode_deliver(
        1, did, "", "jobs", body, _props(timestamp, attempts), attempts + 1, 30.0
    )


def generic(did: int, timestamp: int, body: bytes, attempts: int) -> bytes:
    return bp.encode(
        bp.Deliver(1, did, "", "jobs", body, _props(timestamp, attempts), attempts + 1, 30.0)
    )


VARIANTS: dict[str, Encoder] = {
    "inline": inline,
    "encode_deliver": fast,
    "encode(Deliver)": generic,
}


def run(encoder: Encoder, count: int, body: bytes) -> float:
    """Seconds to encode ``count`` deliveries."""
    ts = 1_700_000_000_000
    gc.disable()
    try:
        start = time.perf_counter()
        for did in range(1, count + 1):
            encoder(did, ts, body, 0)
        return time.perf_counter() - start
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=256, help="body bytes")
    args = parser.parse_args(argv)
    body = bytes(args.size)
    assert len({enc(7, 1, body, 0) for enc in VARIANTS.values()}) == 1, "variants disagree"
    best = dict.fromkeys(VARIANTS, float("inf"))
    # Interleaved rounds, so a busy moment of the machine hits every variant alike.
    for _ in range(args.repeat):
        for name, encoder in VARIANTS.items():
            best[name] = min(best[name], run(encoder, args.count, body))
    print(f"{args.count} deliveries of {args.size} B, best of {args.repeat}:")
    for name, seconds in best.items():
        print(f"  {name:<16} {seconds * 1e9 / args.count:7.0f} ns/delivery  ({seconds:.3f} s)")


if __name__ == "__main__":
    main()
