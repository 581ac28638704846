"""Subscribe and Event: one place for who listens to what.

Each part of the task layer that pushes news (revocations, rate limits)
registers a topic with a snapshot: what a subscriber must know of the past to
act on the events that follow (the ids revoked so far, the limits in force).
Subscribe answers with the snapshots of its topics; ``publish`` then sends an
Event frame per item to every live subscriber of the topic. Closed
connections are dropped at publish time and at each sweep, so a subscriber
costs nothing after it goes.
"""

from __future__ import annotations

from collections.abc import Callable

import brokerd_protocol as bp

from ..errors import invalid
from .common import Alive, Client

#: What a topic adds to the Subscribe reply (keys of the reply's map).
Snapshot = Callable[[], dict[str, object]]


class Topics:
    def __init__(self, alive: Alive) -> None:
        self.alive = alive
        self.snapshots: dict[str, Snapshot] = {}
        self.subscribers: dict[str, set[Client]] = {}

    def add(self, topic: str, snapshot: Snapshot) -> None:
        self.snapshots[topic] = snapshot
        self.subscribers[topic] = set()

    def subscribe(self, client: Client, f: bp.Subscribe) -> None:
        if not f.topics:
            raise invalid("subscribe to at least one topic")
        unknown = sorted(set(f.topics) - self.snapshots.keys())
        if unknown:
            raise invalid(
                f"unknown topic(s) {', '.join(unknown)}; known: {', '.join(sorted(self.snapshots))}"
            )
        value: dict[str, object] = {}
        for topic in dict.fromkeys(f.topics):
            self.subscribers[topic].add(client)
            value.update(self.snapshots[topic]())
        client.reply_ok(f.req, value)

    def publish(self, topic: str, events: list[dict[str, object]]) -> None:
        subscribers = self.subscribers[topic]
        for client in list(subscribers):
            if not self.alive(client):
                subscribers.discard(client)
                continue
            for data in events:
                client.send(bp.Event(topic, data))

    def sweep(self) -> None:
        """Forget the subscribers whose connections closed."""
        for subscribers in self.subscribers.values():
            for client in [c for c in subscribers if not self.alive(c)]:
                subscribers.discard(client)
