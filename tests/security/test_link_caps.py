"""Weakness 6 of the trust issue: unauthenticated direct links exhausted a
peer's descriptors (560 stranger links, a Hello and a ping every few seconds,
held forever; the peer could no longer reconnect to the rendezvous). Incoming
links are now capped in all and per address (peer/links.py), and one that
does not verify its partner within 10 s is closed by the core
(tests/security/test_strangers_on_the_link_port.py)."""

from __future__ import annotations

import trio

from peer.links import MAX_INCOMING_PER_ADDRESS, IncomingCaps
from tests.test_node import DEADLINE, world


def test_caps_count_per_address_and_in_all() -> None:
    caps = IncomingCaps(total=3, per_address=2)
    assert caps.admit("192.0.2.1") and caps.admit("192.0.2.1")
    assert not caps.admit("192.0.2.1")  # the address's share is taken
    assert caps.admit("198.51.100.1")
    assert not caps.admit("203.0.113.1")  # all of it is taken
    caps.release("192.0.2.1")
    assert caps.admit("203.0.113.1")
    for address in ("192.0.2.1", "198.51.100.1", "203.0.113.1"):
        caps.release(address)
    assert caps.held == {}


async def test_connections_past_the_cap_are_closed_at_once() -> None:
    """Silent connections from one address: those past its share are closed
    straight away; the first ones wait for their Hello (and time out)."""
    async with world("alice") as w:
        port = w["alice"].node.listen_port
        assert port is not None
        extra = 4
        streams = []
        with trio.fail_after(DEADLINE):
            for _ in range(MAX_INCOMING_PER_ADDRESS + extra):
                streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        closed = 0

        async def closed_soon(stream: trio.SocketStream) -> None:
            nonlocal closed
            with trio.move_on_after(1.0):  # well before the 5 s Hello deadline
                if await stream.receive_some() == b"":
                    closed += 1

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(closed_soon, stream)
        for stream in streams:
            await stream.aclose()
        assert closed == extra
