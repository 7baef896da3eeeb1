"""Weakness 9 of the trust issue, its metadata half: a mail id used to be
``EPOCH-mN`` or ``EPOCH-SEQ``, so the mailbox could link every message one
sender sent in one run (and the epoch travels in clear in ``Hello``). Ids are
now random, or a hash of what only the two partners see; the same message
still has the same id on every path, so it is shown once."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest

from chathack.protocol import MAIL_ID_RE
from peer.core import records as rec
from peer.events import Delivery
from tests.core_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def stored_ids(world: World, name: str) -> list[str]:
    return [e.msg_id for e in world.peers[name].ui if isinstance(e, Delivery)]


def test_mail_ids_do_not_link_one_senders_messages(world: World) -> None:
    alice = world.add("alice")
    world.add("bob")
    world.connect("alice", "bob")
    world.fate = lambda line: (0, False)  # bob's acks are lost...
    for n in range(3):
        world.type("alice", rec.Send(None, f"in flight {n}"))
    world.pump()
    world.fate = lambda line: (1, False)
    world.logout(world.peers["bob"])  # ...and bob goes: those three are mailed
    world.pump()
    for n in range(3):  # typed after: kept on the server directly
        world.type("alice", rec.Send(None, f"kept {n}"))
    world.pump()
    ids = stored_ids(world, "alice")
    assert len(set(ids)) == 6, ids
    assert all(MAIL_ID_RE.fullmatch(i) for i in ids)
    assert not any(alice.state.epoch in i for i in ids)
    for a, b in combinations(ids, 2):
        same = sum(1 for x, y in zip(a, b, strict=False) if x == y)
        assert same < len(a) // 2, (a, b)  # nothing shared but chance


def test_a_message_delivered_live_and_mailed_is_shown_once(world: World) -> None:
    """The id a chat gets in the mailbox is the one its receiver computes from
    the chat itself: a copy delivered both ways is shown once."""
    world.add("alice")
    bob = world.add("bob")
    world.connect("alice", "bob")
    world.fate = lambda line: (0, False) if line.origin == "bob" else (1, False)  # type: ignore[union-attr]
    world.type("alice", rec.Send(None, "both ways"))
    world.pump()  # bob shows it; his ack is lost
    assert bob.shown_texts("alice") == ["both ways"]
    world.fate = lambda line: (1, False)
    world.logout(bob)  # alice mails what bob did not confirm
    world.pump()
    assert len(stored_ids(world, "alice")) == 1
    again = world.start("bob", bob.state.keys.identity)
    world.settle(5.0)
    assert again.shown_texts("alice") == []  # recognised by its id: not shown twice
