"""What the peer says in its own words when a command finds nothing
(issue 14's list): every command answers, and never suggests the impossible.
Synchronous, on :class:`tests.core_world.World` (a real hub and real cores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.core import records as rec
from tests.core_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def said(world: World, name: str, command: rec.UserCommand) -> list[str]:
    peer = world.peers[name]
    before = len(peer.notices())
    world.type(name, command)
    world.pump()
    return peer.notices()[before:]


def test_history_with_nobody_says_so(world: World) -> None:
    world.add("alice")
    world.add("eve")
    world.pump()
    assert said(world, "alice", rec.ShowHistory("eve", 10)) == ["No messages with eve yet"]
    world.type("alice", rec.ListUsers())
    world.pump()  # the full list of users: "nobody" is not on it
    assert said(world, "alice", rec.ShowHistory("nobody", 10)) == [
        "There is no user named nobody: ::users lists who is there"
    ]


def test_whois_of_a_name_nobody_has_does_not_suggest_connecting(world: World) -> None:
    world.add("alice")
    world.add("bob")
    world.type("alice", rec.ListUsers())
    world.pump()
    lines = said(world, "alice", rec.Whois("nobody"))
    assert not any("connect: nobody" in line for line in lines)
    assert any("no user named nobody" in line for line in lines)
    lines = said(world, "alice", rec.Whois("bob"))
    assert any("connect: bob" in line for line in lines)  # bob exists: that is the way


def test_a_refused_connect_is_told_in_the_programs_words(world: World) -> None:
    from peer.events import ServerNotice

    world.add("alice")
    world.pump()
    peer = world.peers["alice"]
    before = len(peer.ui)
    world.connect("alice", "nobody")
    world.pump()
    new = peer.ui[before:]
    assert not any(isinstance(e, ServerNotice) for e in new)  # no raw Servidor[ERROR]
    assert any("There is no user named nobody" in t for t in peer.notices())


def test_switch_always_answers(world: World) -> None:
    world.add("alice")
    world.add("dave")
    world.add("eve")
    world.pump()
    # No conversation with dave yet: said so, with the way to open one.
    assert said(world, "alice", rec.Switch("dave")) == [
        "No open conversation with dave: connect: dave opens one"
    ]
    world.connect("alice", "dave")
    world.connect("alice", "eve")
    world.pump()
    lines = said(world, "alice", rec.Switch("dave"))
    assert any(line.startswith("Talking to dave") for line in lines), lines


def test_a_message_to_someone_offline_is_told_one_true_way(world: World) -> None:
    """Never "dave is offline: try again" and then "stored": one notice that
    says where the message goes, and the message's own state."""
    from peer.events import Delivery, ServerNotice

    world.add("alice")
    dave = world.add("dave")
    world.pump()
    world.logout(dave)
    world.pump()
    peer = world.peers["alice"]
    before = len(peer.ui)
    world.connect("alice", "dave")
    world.type("alice", rec.Send(None, "see you tomorrow"))
    world.pump()
    new = peer.ui[before:]
    words = [e.text for e in new if hasattr(e, "text") and not hasattr(e, "origin")]
    assert not any(isinstance(e, ServerNotice) for e in new), new
    assert not any("try again" in w.lower() for w in words), words
    offline = [w for w in words if "offline" in w]
    assert offline == [
        "dave is offline: what you type is kept for dave on the server "
        "and delivered at the next login"
    ]
    assert [e.state for e in new if isinstance(e, Delivery)] == ["stored"]
