"""A vhost's names as its clients see them in messages (``Names.text_out``)."""

from __future__ import annotations

from brokerd.vhosts import Names


def test_internal_names_in_an_error_message_are_shown_as_the_clients_names() -> None:
    names = Names.of("orders")
    internal = names.inn("jobs")
    plain = f"no queue {internal}"
    quoted = f"queue {internal!r} exists ({ {'dead_letter_queue': names.inn('dead')} })"
    assert names.text_out(plain) == "no queue jobs"
    # Messages quote names with repr, which escapes the separator characters.
    assert names.text_out(quoted) == "queue 'jobs' exists ({'dead_letter_queue': 'dead'})"


def test_the_default_vhost_leaves_messages_alone() -> None:
    assert Names.of("/").text_out("queue 'jobs' exists") == "queue 'jobs' exists"
