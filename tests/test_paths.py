"""Sans-IO parts of finding a direct path: a partner's candidates
(:func:`peer.paths.candidates_of`, read from a ``Servidor[PEER]``/``[CALL]``
line) and the NAT verdict of ``::netcheck`` (:func:`peer.netcheck.nat_verdict`).

Synchronous; no sockets. The lines are the ones :mod:`rendezvous.hub` writes
(see ``tests/test_hub.py``), parsed by :func:`chathack.protocol.parse_peer_address`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chathack.protocol import PeerAddress, format_peer_address, parse_peer_address
from peer.core.candidates import Candidates, candidates_of
from peer.netcheck import nat_verdict


def cands(text: str) -> Candidates:
    return candidates_of(parse_peer_address(text))


# --------------------------------------------------------------------------
# candidates_of
# --------------------------------------------------------------------------


def test_a_nated_peer_lan_addresses_first_then_where_the_server_sees_it() -> None:
    c = cands("bob 203.0.113.102:40002 public=203.0.113.102:40002 lan=198.51.100.10:40002")
    assert c == Candidates(
        name="bob",
        addrs=(("198.51.100.10", 40002), ("203.0.113.102", 40002)),
        public=("203.0.113.102", 40002),
        frames=True,
    )


def test_several_lan_addresses_keep_their_order() -> None:
    c = cands("bob 203.0.113.102:4000 lan=198.51.100.10:4000,192.0.2.2:4000,[2001:db8::7]:4000")
    assert c.addrs == (
        ("198.51.100.10", 4000),
        ("192.0.2.2", 4000),
        ("2001:db8::7", 4000),  # brackets off
        ("203.0.113.102", 4000),
    )


def test_duplicates_are_dialled_once() -> None:
    # A public host's own address is also what the server sees; a repeated item too.
    c = cands(
        "pub 203.0.113.20:4000 public=203.0.113.20:4000 lan=203.0.113.20:4000,203.0.113.20:4000"
    )
    assert c.addrs == (("203.0.113.20", 4000),)
    assert c.public == ("203.0.113.20", 4000)


def test_public_is_the_observed_endpoint_not_a_dial_target() -> None:
    # Behind a symmetric NAT the rendezvous connection came from another port:
    # that endpoint is for punching, never part of the direct race.
    c = cands("s1 203.0.113.103:40003 public=203.0.113.103:61234 lan=198.51.100.130:40003")
    assert c.public == ("203.0.113.103", 61234)
    assert ("203.0.113.103", 61234) not in c.addrs


def test_a_relay_only_peer_has_nothing_to_dial_but_speaks_frames() -> None:
    c = cands("dave - public=203.0.113.20:50000 lan=-")
    assert c.addrs == () and c.frames is True
    assert c.public == ("203.0.113.20", 50000)


@pytest.mark.parametrize(
    "text",
    [
        "carol 203.0.113.5:5000",  # nc user that sent port: (unlikely, but allowed)
        "carol -",  # nc user
        "carol - public=203.0.113.5:50500",  # public= alone does not make a peer
    ],
)
def test_a_plain_client_speaks_no_frames(text: str) -> None:
    c = cands(text)
    assert c.frames is False
    assert c.addrs == ((("203.0.113.5", 5000),) if "5000" in text else ())


def test_unknown_extras_are_ignored() -> None:
    c = cands("bob 203.0.113.102:4000 key=AAAA lan=198.51.100.10:4000 colour=blue")
    assert c.addrs == (("198.51.100.10", 4000), ("203.0.113.102", 4000)) and c.frames


@pytest.mark.parametrize(
    "item",
    [
        "",
        "-",
        "198.51.100.10",  # no port
        "198.51.100.10:",
        ":4000",  # no host
        "198.51.100.10:0",
        "198.51.100.10:65536",
        "198.51.100.10:port",
        "198.51.100.10:-5",
        "[]:4000",
    ],
)
def test_garbage_lan_items_are_skipped(item: str) -> None:
    c = cands(f"bob 203.0.113.102:4000 public=203.0.113.102:4000 lan={item},198.51.100.10:4000")
    assert c.addrs == (("198.51.100.10", 4000), ("203.0.113.102", 4000))


@pytest.mark.parametrize("public", ["", "nonsense", "203.0.113.102", "203.0.113.102:0"])
def test_a_garbage_public_endpoint_is_none(public: str) -> None:
    assert cands(f"bob - public={public} lan=-").public is None


endpoints = st.tuples(st.ip_addresses().map(str), st.integers(1, 65535))


def _text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@given(
    st.lists(endpoints, max_size=8),
    st.none() | endpoints,
    st.none() | endpoints,
)
def test_candidates_are_every_distinct_address_once_lan_first(
    lan: list[tuple[str, int]],
    listen: tuple[str, int] | None,
    public: tuple[str, int] | None,
) -> None:
    extra = [("lan", ",".join(_text(*ep) for ep in lan) or "-")]
    if public is not None:
        extra.insert(0, ("public", _text(*public)))
    host, port = listen if listen else (None, None)
    line = format_peer_address(PeerAddress("bob", host, port, tuple(extra)))
    c = cands(line)
    expected = list(dict.fromkeys(lan))
    if listen is not None and listen not in expected:
        expected.append(listen)
    assert c.addrs == tuple(expected)
    assert c.public == public
    assert c.frames is True


# --------------------------------------------------------------------------
# nat_verdict (::netcheck)
# --------------------------------------------------------------------------


def test_no_nat_when_the_server_sees_our_own_address_and_port() -> None:
    assert nat_verdict("203.0.113.20", 40000, "203.0.113.20", 40000).startswith("no NAT")


def test_a_port_keeping_nat_should_punch() -> None:
    verdict = nat_verdict("192.0.2.10", 40000, "203.0.113.101", 40000)
    assert "keeps the port" in verdict and "hole punching should work" in verdict


@pytest.mark.parametrize(
    ("local_ip", "local_port", "seen_ip", "seen_port"),
    [
        ("198.51.100.130", 40000, "203.0.113.103", 61234),  # symmetric NAT
        ("203.0.113.20", 40000, "203.0.113.20", 51000),  # no NAT, but the port was taken
        (None, None, "203.0.113.103", 61234),  # no connection to compare with
    ],
)
def test_a_port_changing_nat_will_likely_use_the_relay(
    local_ip: str | None, local_port: int | None, seen_ip: str, seen_port: int
) -> None:
    verdict = nat_verdict(local_ip, local_port, seen_ip, seen_port)
    assert "changes the port" in verdict and "relay" in verdict
