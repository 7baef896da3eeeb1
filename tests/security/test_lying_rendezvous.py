"""A lying rendezvous against the peer's core: it rewrites, drops and
injects lines (tests/core_world.py's ``tamper``), and never gets plain text
out of a conversation with a chathack peer, nor has a forged line shown as
a known peer's.

Weakness 1 of the trust issue: a ``Servidor[PEER]: bob -`` (no addresses, no
key) or an injected ``bob: text`` line used to make alice treat bob, whom she
had pinned, as a plain-text partner: what she typed left as ``msg: bob
TEXT`` for the server to read, and the injected line was shown as bob's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chathack.link import is_relay_frame
from chathack.protocol import Msg, PeerAddress, ServerLine, UserLine, format_peer_address
from peer.core import records as rec
from peer.events import Incoming, Status, System
from tests.core_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def pinned_pair(world: World) -> None:
    """alice and bob talked once: each has the other's key pinned. alice's
    program then restarts (the rendezvous vouches for nothing yet)."""
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    world.type("alice", rec.Send(None, "first"))
    world.pump()
    assert world.peers["bob"].shown_texts("alice") == ["first"]
    world.start("alice", world.peers["alice"].state.keys.identity)
    world.pump()


def stripped(line: ServerLine | UserLine) -> list[ServerLine | UserLine]:
    """The rendezvous answers for bob without his key or addresses."""
    if (
        isinstance(line, ServerLine)
        and line.flag in ("PEER", "CALL")
        and line.text.startswith("bob")
    ):
        return [ServerLine(line.flag, format_peer_address(PeerAddress("bob", None, None, ())))]
    return [line]


def plain_to_bob(effects: list[rec.Effect]) -> list[str]:
    return [
        e.event.text
        for e in effects
        if isinstance(e, rec.ToServer)
        and isinstance(e.event, Msg)
        and e.event.to.lower() == "bob"
        and not is_relay_frame(e.event.text)
    ]


def test_a_keyless_answer_for_a_pinned_peer_is_refused_not_taken_for_plain_text(
    world: World,
) -> None:
    pinned_pair(world)
    alice = world.peers["alice"]
    world.tamper = stripped
    sent: list[rec.Effect] = []
    sent += world.type("alice", rec.Connect("bob"))
    world.pump()
    world.advance(2.0)
    sent += world.type("alice", rec.Send(None, "secret plans"))
    sent += world.type("alice", rec.Send("bob", "more secret plans"))
    world.pump()
    assert plain_to_bob(sent) == []
    assert not any(t.plain for t in alice.state.talks.values())
    assert any("no key" in n and "bob" in n for n in alice.notices())
    assert "secret plans" not in world.peers["bob"].shown_texts()


def test_a_plain_line_injected_as_a_pinned_peer_is_dropped(world: World) -> None:
    pinned_pair(world)
    alice = world.peers["alice"]
    assert "bob" not in alice.state.keys.vouched  # known by the pin alone
    world.feed(alice, rec.FromServer(UserLine("bob", "send me your password")))
    assert "send me your password" not in alice.shown_texts()
    assert any("always encrypts" in n for n in alice.notices())
    assert "bob" not in alice.state.talks or not alice.state.talks["bob"].plain


def test_a_plain_text_partner_needs_the_users_word_and_stays_marked(world: World) -> None:
    """gina uses nc: alice is told, and what she types goes to gina only
    after she confirms; the conversation shows as unencrypted throughout."""
    alice = world.add("alice")
    account = world.store.create_account("gina", "hash", world.now)
    from rendezvous.hub import Session
    from tests.core_world import PEER_IP, Outbox

    gina = Session(Outbox(), PEER_IP)
    world.hub.attach(gina, account, world.now)
    world.type("alice", rec.Connect("gina"))
    world.pump()
    world.advance(2.0)
    assert any("not a chathack peer" in n for n in alice.notices())
    effects = world.type("alice", rec.Send("gina", "hello?"))
    assert [e for e in effects if isinstance(e, rec.ToServer)] == []  # held: no word yet
    world.type("alice", rec.Connect("gina"))  # the word: talk unencrypted anyway
    effects = world.type("alice", rec.Send(None, "hello gina"))
    assert [e.event for e in effects if isinstance(e, rec.ToServer)] == [Msg("gina", "hello gina")]
    statuses = [e for e in alice.ui if isinstance(e, Status)]
    assert statuses[-1].partner == "gina" and statuses[-1].path == "unencrypted"
    world.hub.handle(gina, Msg("alice", "hi from nc"), world.now)
    world.pump()
    [got] = [e for e in alice.ui if isinstance(e, Incoming) and e.origin == "gina"]
    assert got.path == "unencrypted"
    assert not [e for e in alice.ui if isinstance(e, System) and "WARNING" in e.text]


def test_a_plain_line_under_a_peers_name_makes_no_plain_conversation_of_it(
    world: World,
) -> None:
    """An injected ``dave: hi`` opens a talk marked unencrypted; alice's
    ``connect: dave`` asks the rendezvous, which vouches for dave's key: the
    conversation is encrypted from then on, and stays so once dave's key is
    verified (it used to stay plain: ``msg: dave`` in clear to a pinned peer)."""
    alice, dave = world.add("alice"), world.add("dave")
    world.feed(alice, rec.FromServer(UserLine("dave", "hi, it's dave")))
    assert alice.state.talks["dave"].plain
    sent = world.type("alice", rec.Connect("dave"))
    world.pump()
    world.advance(1.0)
    assert not alice.state.talks["dave"].plain
    assert any("encrypted from now on" in n for n in alice.notices())
    world.connect("dave", "alice")
    world.type("dave", rec.Send(None, "the real dave"))
    world.pump()
    assert alice.shown_texts("dave")[-1] == "the real dave"
    assert alice.state.keys.pins.get("dave") == bytes(dave.state.keys.identity.verify_key)
    sent += world.type("alice", rec.Send(None, "my secret"))
    sent += world.type("alice", rec.Send("dave", "another secret"))
    world.pump()
    assert [
        e.event.text
        for e in sent
        if isinstance(e, rec.ToServer)
        and isinstance(e.event, Msg)
        and not is_relay_frame(e.event.text)
    ] == []
    assert dave.shown_texts("alice") == ["my secret", "another secret"]


def test_a_plain_text_user_who_wrote_first_needs_the_rendezvous_to_know_no_key(
    world: World,
) -> None:
    """gina (nc) writes first: alice's ``connect: gina`` is her word only once
    the rendezvous, asked, knows no key for gina; then alice talks to her
    unencrypted, marked so."""
    alice = world.add("alice")
    account = world.store.create_account("gina", "hash", world.now)
    from rendezvous.hub import Session
    from tests.core_world import PEER_IP, Outbox

    gina = Session(Outbox(), PEER_IP)
    world.hub.attach(gina, account, world.now)
    world.hub.handle(gina, Msg("alice", "hi alice, gina here"), world.now)
    world.pump()
    effects = world.type("alice", rec.Send("gina", "who?"))
    assert [e for e in effects if isinstance(e, rec.ToServer)] == []  # no word yet
    effects = world.type("alice", rec.Connect("gina"))
    assert [e.event for e in effects if isinstance(e, rec.ToServer)] != []  # asked first
    world.pump()
    world.advance(2.0)
    assert alice.state.active == "gina"
    assert alice.state.talks["gina"].plain_ok
    effects = world.type("alice", rec.Send(None, "hello gina"))
    assert [e.event for e in effects if isinstance(e, rec.ToServer)] == [Msg("gina", "hello gina")]
    assert any("UNENCRYPTED" in n for n in alice.notices())
