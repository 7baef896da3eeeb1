"""Strangers on the direct-link port, against the peer's core.

Weakness 2 of the trust issue: anyone who learned a peer's port could dial it
with a Hello claiming to be, say, bob (even a name nobody registered): the
victim pinned the stranger's key as bob's and showed "first conversation
with bob"; the real bob was then the one blocked. A link is now taken only
from a partner this peer expects (an open or requested conversation, or a
call) whose key the rendezvous vouched for in this session, it is never the
place a key is first pinned, and one whose key exchange does not finish in
time is closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from chathack.protocol import Connect as AskFor
from chathack.secure import Handshake, KeyReply
from peer.core import records as rec
from peer.core.records import CloseLink, LinkInfo, ToLink
from tests.core_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def stranger_dials(
    world: World, victim: str, claims: str, link_id: int = 7
) -> tuple[list[rec.Effect], Handshake]:
    """A link comes up from someone claiming ``claims``, who starts a key
    exchange with a key of their own."""
    peer = world.peers[victim]
    effects = peer.state.handle(rec.LinkUp(LinkInfo(link_id, claims, "direct", claims)), world.now)
    mallory = Handshake(SigningKey.generate(), claims, victim, initiator=True)
    effects += peer.state.handle(rec.LinkFrame(link_id, mallory.start()), world.now)
    return effects, mallory


def test_a_stranger_claiming_an_unknown_name_is_hung_up_on(world: World) -> None:
    alice = world.add("alice")
    effects, _ = stranger_dials(world, "alice", "bob")
    assert CloseLink(7) in effects
    assert not [e for e in effects if isinstance(e, ToLink)]  # not even a reply
    assert alice.state.keys.pins.get("bob") is None
    assert "bob" not in alice.state.talks


def test_a_stranger_posing_as_an_expected_partner_is_refused_and_pins_nothing(
    world: World,
) -> None:
    """alice is connecting to bob (the rendezvous vouched for bob's key): a
    stranger dialling in as bob fails the key check and pins nothing."""
    alice = world.add("alice")
    world.add("bob")
    world.type("alice", rec.Connect("bob"))
    world.pump()
    real_bob = alice.state.keys.vouched["bob"]
    effects, mallory = stranger_dials(world, "alice", "bob")
    [reply] = [e.frame for e in effects if isinstance(e, ToLink) and isinstance(e.frame, KeyReply)]
    mallory.on_reply(reply)
    confirm, _ = mallory.confirm()
    effects = alice.state.handle(rec.LinkFrame(7, confirm), world.now)
    assert CloseLink(7) in effects
    assert any("impersonating bob" in n for n in alice.notices() + _texts(effects))
    assert alice.state.keys.pins.get("bob") in (None, real_bob)
    world.advance(1.0)
    talk = alice.state.talks["bob"]
    assert 7 not in talk.links and talk.link != 7


def _texts(effects: list[rec.Effect]) -> list[str]:
    return [getattr(e.event, "text", "") for e in effects if isinstance(e, rec.Show)]


def test_a_link_whose_key_exchange_never_finishes_is_closed(world: World) -> None:
    alice = world.add("alice")
    world.add("bob")
    world.connect("alice", "bob")
    peer = world.peers["alice"]
    effects = peer.state.handle(rec.LinkUp(LinkInfo(9, "bob", "direct", "bob")), world.now)
    assert CloseLink(9) not in effects  # expected: given its chance
    closed: list[rec.Effect] = []
    for _ in range(24):
        world.now += 0.5
        closed += [e for e in peer.state.handle(rec.Tick(), world.now) if e == CloseLink(9)]
    assert closed == [CloseLink(9)]
    assert alice.state.talks["bob"].link != 9


def test_where_the_callee_is_goes_to_a_caller_only_once_its_key_checked_out(
    tmp_path: Path,
) -> None:
    """bob, called by alice, calls her back (``connect: alice``: the
    rendezvous then gives each the other's addresses) only after alice's key
    checked out on the relay; before that, alice knows nothing of where bob is."""
    world = World(tmp_path)
    try:
        world.add("alice"), world.add("bob")
        bob = world.peers["bob"]
        seen: list[bool] = []  # at each call-back: was alice's key checked?
        feed = world.feed

        def watching(peer, event):  # type: ignore[no-untyped-def]
            effects = feed(peer, event)
            if peer is bob:
                for e in effects:
                    if isinstance(e, rec.ToServer) and e.event == AskFor("alice"):
                        talk = bob.state.talks.get("alice")
                        seen.append(talk is not None and talk.relay_sec.session is not None)
            return effects

        world.feed = watching  # type: ignore[method-assign]
        world.type("alice", rec.Connect("bob"))
        world.pump()
        assert seen == [True]
        assert "alice" in world.hub.online["bob"].invited
    finally:
        world.close()
