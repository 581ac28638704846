"""Where server and client meet, a shared class name says which side it is on.

``Connection``, ``Consumer``, ``Delivery``, ``Message`` and ``BrokerError`` are
classes of the server (``brokerd``) and of the SDK (``brokerd_client``) alike.
A test or bench module that takes such names from both must import one side
under aliases naming it (``ServerMessage``, ``ClientDelivery``) or use it
module-qualified (``brokerd_client.Message``), so a reader never has to scroll
up to learn which ``Message`` a line means.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = frozenset({"Connection", "Consumer", "Delivery", "Message", "BrokerError"})
#: Top-level package -> the word an alias of its names starts with.
SIDES = {"brokerd": "Server", "brokerd_client": "Client"}


def unmarked_sides(source: str) -> dict[str, list[str]]:
    """Per side, the shared names imported under their bare (or an unmarked) name,
    when the module imports shared names from both sides; else nothing."""
    imported: dict[str, list[tuple[str, str]]] = {side: [] for side in SIDES}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
            continue
        side = node.module.split(".")[0]
        if side not in SIDES:
            continue
        for alias in node.names:
            if alias.name in SHARED:
                imported[side].append((alias.name, alias.asname or alias.name))
    if not all(imported.values()):
        return {}
    unmarked = {
        side: [name for name, bound in names if not bound.startswith(SIDES[side])]
        for side, names in imported.items()
    }
    return unmarked if all(unmarked.values()) else {}


def test_modules_importing_shared_names_from_both_sides_alias_one_side() -> None:
    offenders = []
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found = unmarked_sides(path.read_text(encoding="utf-8"))
            if found:
                offenders.append(f"{path.relative_to(ROOT)}: {found}")
    assert not offenders, "\n".join(offenders)


def test_a_module_with_both_sides_bare_is_caught_and_an_aliased_side_is_not() -> None:
    both_bare = (
        "from brokerd.queues import Delivery\nfrom brokerd_client import Message\n"
        "from brokerd.message import Message as M\n"
    )
    assert unmarked_sides(both_bare) == {
        "brokerd": ["Delivery", "Message"],
        "brokerd_client": ["Message"],
    }
    aliased = (
        "from brokerd.message import Message as ServerMessage\n"
        "from brokerd_client import Delivery, Message\n"
    )
    assert unmarked_sides(aliased) == {}
    one_side = "from brokerd.queues import Consumer, Delivery\nimport brokerd_client\n"
    assert unmarked_sides(one_side) == {}
