"""Property tests for the vhost name mapping (``brokerd/vhosts.py``).

The promises: a client name mapped into a vhost and back out is the same
name; the internal name splits into exactly that vhost and name; names of two
different vhosts (or two different names) never map to the same internal
name; a vhost owns its own names and no other vhost's; and no client name can
spell another vhost's internal name (U+001F is refused).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerd.errors import BrokerError
from brokerd.vhosts import DEFAULT_VHOST, SEP, Names, check_vhost, prefix_of, split

#: Any text without U+001F: what a client may send as a name.
client_names = st.text(
    alphabet=st.characters(blacklist_characters=SEP, blacklist_categories=("Cs",)), max_size=40
)
#: Valid vhost names (no control characters), "/" among them.
vhosts = st.one_of(
    st.just(DEFAULT_VHOST),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20),
)


@given(vhosts, client_names)
def test_a_name_round_trips_and_splits_into_its_vhost(vhost: str, name: str) -> None:
    names = Names.of(check_vhost(vhost))
    internal = names.inn(name)
    assert names.out(internal) == name
    assert split(internal) == (vhost, name)
    assert names.owns(internal)
    assert prefix_of(internal) == names.prefix
    exchange, key = names.route_in("", name)
    assert names.route_out(exchange, key) == ("", name)
    if name:
        assert names.route_out(*names.route_in(name, "k")) == (name, "k")


@given(vhosts, client_names, vhosts, client_names)
def test_different_vhost_or_name_never_collide(v1: str, n1: str, v2: str, n2: str) -> None:
    a, b = Names.of(v1), Names.of(v2)
    if (v1, n1) != (v2, n2):
        assert a.inn(n1) != b.inn(n2)
    if v1 != v2:
        assert not a.owns(b.inn(n2))
        assert not b.owns(a.inn(n1))


@given(vhosts, client_names, client_names)
def test_no_client_name_spells_an_internal_name(vhost: str, before: str, after: str) -> None:
    names = Names.of(vhost)
    with pytest.raises(BrokerError):
        names.inn(before + SEP + after)
    with pytest.raises(BrokerError):
        names.route_in("", before + SEP + after)


@given(st.text(max_size=300))
def test_vhost_names_are_checked(name: str) -> None:
    ok = 1 <= len(name) <= 255 and not any(ord(c) < 32 or ord(c) == 127 for c in name)
    if ok:
        assert check_vhost(name) == name
    else:
        with pytest.raises(BrokerError):
            check_vhost(name)
