"""The peer's sans-IO core (:mod:`peer.core`), whole-system and synchronous:
real rendezvous domain, real peer cores, no sockets (tests/core_world.py).

Each numbered bug of the issue that made the core has its regression here:
it failed on the peer before the core existed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chathack.link import Chat
from chathack.protocol import Msg, UserLine
from peer.core import records as rec
from peer.events import Incoming, ServerNotice, Status, System
from tests.core_world import World, count


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def talking(world: World, a: str, b: str) -> None:
    """``a`` connects to ``b`` and says hello; both see it once."""
    world.type(a, rec.Connect(b))
    world.pump()
    world.advance(1.0)
    answer = world.peers[a].answers[-1]
    assert (answer.what, answer.name.lower(), answer.ok) == ("connect", b.lower(), True)
    world.type(a, rec.Send(None, f"hello {b}"))
    world.pump()
    assert world.peers[b.lower()].shown_texts(a)[-1] == f"hello {b}"


# ------------------------------------------------------------- bug 1
def test_a_reply_is_matched_to_its_request_by_name(world: World) -> None:
    """Bug 1: ``msg: ghost hi`` then ``connect: bob``: the refusal about ghost
    is not taken for the answer about bob."""
    alice, bob = world.add("alice"), world.add("bob")
    world.type("alice", rec.Connect("bob"))
    # The refusal of an earlier request arrives first, while the connect waits.
    world._to_hub(alice, Msg("ghost", "hi"))
    world.pump()
    world.advance(1.0)
    assert alice.answers == [rec.Answered("connect", "bob", True)]
    assert alice.state.active == "bob"
    ghost = [e for e in alice.ui if isinstance(e, System | ServerNotice) and "ghost" in e.text]
    assert ghost and all(getattr(e, "about", None) in (None, "ghost") for e in ghost)
    world.type("alice", rec.Send(None, "hi bob"))
    world.pump()
    assert bob.shown_texts("alice") == ["hi bob"]


def test_a_connect_the_rendezvous_refuses_says_why_and_opens_nothing(world: World) -> None:
    alice = world.add("alice")
    world.type("alice", rec.Connect("ghost"))
    world.pump()
    assert alice.answers == [rec.Answered("connect", "ghost", False)]
    assert alice.state.active is None and not alice.state.talks
    # Said in the program's own words (a System line), not as a raw server line.
    assert not [e for e in alice.ui if isinstance(e, ServerNotice)]
    [notice] = [e for e in alice.ui if isinstance(e, System) and e.level == "error"]
    assert "ghost" in notice.text and notice.about == "ghost"


def test_a_connect_nobody_answers_ends_at_its_deadline(world: World) -> None:
    alice = world.add("alice")
    world.logout(alice)  # its lines go nowhere from now on
    alice.session = None
    world.feed(alice, rec.ServerState("online"))  # it believes it is online
    world.type("alice", rec.Connect("bob"))
    world.advance(9.0)
    assert alice.answers == []
    world.advance(2.0)
    assert alice.answers == [rec.Answered("connect", "bob", False)]
    assert any("did not answer in time" in e.text for e in alice.ui if isinstance(e, System))


# ------------------------------------------------------------- bug 2
def test_someone_else_opening_a_conversation_never_redirects_typed_lines(world: World) -> None:
    """Bug 2: carol talks to dave; eve writes to carol; carol's next line
    still goes to dave, and eve's line says it is eve's."""
    carol, dave, eve = world.add("carol"), world.add("dave"), world.add("eve")
    talking(world, "carol", "dave")
    talking(world, "eve", "carol")
    assert carol.state.active == "dave"
    assert not any(n.startswith("Talking to eve") for n in carol.notices())
    opened = [e for e in carol.ui if isinstance(e, System) and "eve opened" in e.text]
    assert opened and opened[0].about == "eve" and "::switch eve" in opened[0].text
    [from_eve] = [e for e in carol.shown() if e.origin == "eve"]
    assert from_eve.text == "hello carol"
    world.type("carol", rec.Send(None, "for dave only"))
    world.pump()
    assert dave.shown_texts("carol")[-1] == "for dave only"
    assert "for dave only" not in eve.shown_texts()
    world.type("carol", rec.Switch("eve"))
    world.type("carol", rec.Send(None, "now for eve"))
    world.pump()
    assert eve.shown_texts("carol") == ["now for eve"]
    statuses = [e for e in carol.ui if isinstance(e, Status)]
    assert statuses[-1].partner == "eve"


def test_every_event_about_a_conversation_names_it(world: World) -> None:
    world.add("alice"), world.add("bob")
    talking(world, "alice", "bob")
    world.type("bob", rec.End("alice"))
    world.pump()
    alice = world.peers["alice"]
    ended = [e for e in alice.ui if isinstance(e, System) and "ended" in e.text]
    assert ended and all(e.about == "bob" for e in ended)
    world.type("alice", rec.Whois("bob"))
    about_bob = [e for e in alice.ui if isinstance(e, System) and "bob" in e.text]
    assert len(about_bob) >= 4  # opened, first key pinned, ended, whois
    assert all(e.about == "bob" for e in about_bob), [e for e in about_bob if e.about != "bob"]
    assert alice.state.active is None  # the next typed line goes nowhere, and says so
    world.type("alice", rec.Send(None, "anyone?"))
    assert "You are not in a conversation" in alice.notices()[-1]


# ------------------------------------------------------------- bug 3
def test_a_backlog_is_shown_once_when_the_rendezvous_dies_while_delivering(
    world: World,
) -> None:
    """Bug 3: 200 messages for offline bob; the rendezvous dies twice, the
    second time in the middle of delivering them: bob shows each once."""
    alice = world.add("alice")
    bob_key = world.add("bob").state.keys.identity
    talking(world, "alice", "bob")
    world.logout(world.peers["bob"])
    world.pump()
    texts = [f"message {i}" for i in range(200)]
    for text in texts:
        world.type("alice", rec.Send("bob", text))
    world.pump()
    assert alice.state.mail.history.pending_mail() == []  # all stored
    world.crash()
    bob = world.start("bob", bob_key)
    for _ in range(40):  # part of the backlog, then the second crash
        world._step()
    assert 0 < len(bob.shown_texts("alice")) < 200
    world.crash()
    world.settle(30.0)
    shown = bob.shown_texts("alice")
    assert sorted(set(shown), key=texts.index) == texts
    assert all(count(shown, t) == 1 for t in texts)


# ------------------------------------------------------------- bug 4
def test_a_replaced_session_sends_nothing_and_records_nothing(world: World) -> None:
    """Bug 4: a line typed in a session replaced by a login elsewhere is
    refused, never recorded as sent, and never reaches anyone."""
    alice = world.add("alice")
    bob_key = world.add("bob").state.keys.identity
    talking(world, "bob", "alice")
    old_bob = world.peers["bob"]
    new_bob = world.start("bob", bob_key)  # the same user logs in elsewhere
    world.pump()
    world.drain(old_bob)  # the old program reads its session's last lines
    assert old_bob.state.kicked
    world.type("bob", rec.Send(None, "lost?"))  # typed in the NEW session: fine
    before = len(old_bob.ui)
    effects = old_bob.state.handle(rec.Send(None, "from the old one"), world.now)
    assert not any(isinstance(e, rec.ToServer) for e in effects)
    shown = [e.event for e in effects if isinstance(e, rec.Show)]
    assert any(isinstance(e, System) and "replaced" in e.text for e in shown)
    assert not any(
        isinstance(e, rec.Show) and e.event.__class__.__name__ == "Outgoing" for e in effects
    )
    assert len(old_bob.ui) == before
    world.pump()
    assert "from the old one" not in alice.shown_texts()
    history = [e.text for e in new_bob.state.mail.history.last("alice", 10)]
    assert "from the old one" not in history


def test_quit_says_what_was_not_delivered(world: World) -> None:
    alice = world.add("alice")
    world.add("bob")
    talking(world, "alice", "bob")
    world.logout(world.peers["bob"])  # bob's program vanishes; the hub knows soon
    world.type("alice", rec.Send(None, "unconfirmed"))
    effects = world.type("alice", rec.Quit())
    texts = [
        e.event.text for e in effects if isinstance(e, rec.Show) and isinstance(e.event, System)
    ]
    assert (
        any("Not delivered" in t and "bob" in t for t in texts)
        or not alice.state.convs.unacknowledged()
    )


# ------------------------------------------------------------- bug 5
def test_a_dropped_relayed_frame_is_sent_again_on_a_timer(world: World) -> None:
    """Bug 5: one relayed chat frame lost on the way: re-sent by the timer,
    shown once, and the later messages are shown after it, in order."""
    alice, bob = world.add("alice"), world.add("bob")
    talking(world, "alice", "bob")
    dropped: list[UserLine] = []

    def drop_first_chat(line: object) -> tuple[int, bool]:
        if not dropped and isinstance(line, UserLine) and line.origin == "alice":
            dropped.append(line)
            return 0, False
        return 1, False

    world.fate = drop_first_chat
    for i in range(3):
        world.type("alice", rec.Send(None, f"after {i}"))
    world.pump()
    assert dropped and bob.shown_texts("alice") == ["hello bob"]  # the rest wait in order
    world.fate = lambda line: (1, False)
    world.advance(10.0)
    assert bob.shown_texts("alice") == ["hello bob", "after 0", "after 1", "after 2"]
    assert alice.state.convs.unacknowledged() == 0


def test_a_lost_key_exchange_frame_is_retried(world: World) -> None:
    _alice, bob = world.add("alice"), world.add("bob")
    world.fate = lambda line: (0, False)  # the relay loses everything for a while
    world.connect("alice", "bob")
    world.type("alice", rec.Send(None, "through at last"))
    world.pump()
    world.fate = lambda line: (1, False)
    world.advance(40.0)
    assert bob.shown_texts("alice") == ["through at last"]


# ------------------------------------------------------------- bug 6
def test_names_are_folded_in_memory(world: World) -> None:
    """Bug 6 (the core's half; the data folder is tests/test_name_folding.py):
    ``Bob`` and ``bob`` are one conversation."""
    alice, bob = world.add("alice"), world.add("bob")
    talking(world, "alice", "Bob")
    world.type("alice", rec.Send("BOB", "same one"))
    world.pump()
    assert list(alice.state.talks) == ["bob"]
    assert bob.shown_texts("alice")[-1] == "same one"


# --------------------------------------------------------------- other
def test_a_stranger_relaying_plain_text_as_a_known_peer_is_dropped(world: World) -> None:
    alice = world.add("alice")
    world.add("bob")
    talking(world, "alice", "bob")
    world.feed(alice, rec.FromServer(UserLine("bob", "send me your password")))
    assert "send me your password" not in alice.shown_texts()
    assert any("always encrypts" in n for n in alice.notices())


def test_a_chat_frame_in_clear_on_the_relay_is_not_shown(world: World) -> None:
    from chathack.link import frame_to_relay_text

    alice = world.add("alice")
    world.add("bob")
    talking(world, "alice", "bob")
    clear = Chat("x", 99, 1, "unsealed", 0.0)
    world.feed(alice, rec.FromServer(UserLine("bob", frame_to_relay_text(clear))))
    assert "unsealed" not in alice.shown_texts()


def test_incoming_is_shown_with_its_partner(world: World) -> None:
    world.add("alice"), world.add("bob")
    talking(world, "alice", "bob")
    [got] = [e for e in world.peers["bob"].ui if isinstance(e, Incoming)]
    assert got.origin == "alice"
