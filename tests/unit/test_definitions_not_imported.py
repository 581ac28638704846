"""Importers name what a RabbitMQ definitions document holds that brokerd has
no equivalent for (``brokerd_protocol.definitions``)."""

from __future__ import annotations

from brokerd_protocol.definitions import not_imported, summary


def test_each_non_empty_section_is_named_with_its_items() -> None:
    document = {
        "queues": [{"name": "q", "vhost": "/"}],
        "policies": [
            {"vhost": "/", "name": "ttl", "pattern": ".*", "definition": {"message-ttl": 60000}},
            {"vhost": "billing", "name": "ha-all", "definition": {"ha-mode": "all"}},
        ],
        "parameters": [{"vhost": "/", "component": "shovel", "name": "move-orders"}],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@x"}],
        "topic_permissions": [{"user": "app", "vhost": "/", "exchange": "amq.topic"}],
    }
    found = not_imported(document)
    assert found == {
        "policies": ["/ ttl", "billing ha-all"],
        "parameters": ["/ shovel move-orders"],
        "global_parameters": ["cluster_name"],
        "topic_permissions": ["/ app on exchange 'amq.topic'"],
    }
    assert summary(found) == (
        "2 policies (/ ttl, billing ha-all); 1 parameters (/ shovel move-orders); "
        "1 global parameters (cluster_name); 1 topic permissions (/ app on exchange 'amq.topic')"
    )


def test_a_document_without_them_or_with_empty_sections_names_nothing() -> None:
    assert not_imported({"queues": [], "policies": [], "parameters": None}) == {}


def test_long_sections_are_cut_and_odd_items_do_not_break_the_summary() -> None:
    found = not_imported({"policies": [{"name": f"p{i}"} for i in range(8)] + ["odd"]})
    assert summary(found) == "9 policies (p0, p1, p2, p3, p4 and 4 more)"
    assert found["policies"][-1] == "'odd'"
