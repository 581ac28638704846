"""What a RabbitMQ definitions document holds that brokerd has no equivalent
for, named so an import can say it left it out.

One answer for both importers, the management API's ``POST /api/definitions``
and ``brokerctl import_definitions``: a document exported from RabbitMQ often
carries policies (a message TTL, a length limit, dead-lettering, mirroring),
runtime parameters (shovels, federation, vhost limits) and topic permissions.
brokerd has none of these, and dropping them without a word would leave an
operator believing, say, that a TTL policy now applies. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: The sections of a RabbitMQ definitions document brokerd does not import.
NOT_IMPORTED: Final = ("policies", "parameters", "global_parameters", "topic_permissions")

#: How many item names a summary lists per section before "and N more".
SHOWN: Final = 5


def not_imported(document: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each non-empty section of ``NOT_IMPORTED`` in ``document``, with a
    label per item (its vhost and name, as RabbitMQ's own listings show it)."""
    found: dict[str, list[str]] = {}
    for section in NOT_IMPORTED:
        items = document.get(section)
        if not isinstance(items, list) or not items:
            continue
        found[section] = [_label(section, item) for item in items]
    return found


def summary(found: Mapping[str, list[str]]) -> str:
    """One line for a log or an answer: ``2 policies (/ ha-all, / ttl), ...``."""
    parts = []
    for section, labels in found.items():
        shown = ", ".join(labels[:SHOWN])
        more = f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else ""
        parts.append(f"{len(labels)} {section.replace('_', ' ')} ({shown}{more})")
    return "; ".join(parts)


def _label(section: str, item: Any) -> str:
    if not isinstance(item, Mapping):
        return repr(item)[:80]
    vhost = item.get("vhost")
    if section == "topic_permissions":
        name = f"{item.get('user', '?')} on exchange {item.get('exchange', '?')!r}"
    elif section == "parameters":
        name = f"{item.get('component', '?')} {item.get('name', '?')}"
    else:
        name = str(item.get("name", "?"))
    return f"{vhost} {name}" if vhost is not None else name
