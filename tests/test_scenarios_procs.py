"""The peer core's promises, end to end with real processes on 127.0.0.1:
a real ``chathack-rendezvous`` and plain-mode ``chathack-peer`` processes
(tests/procs.py), driven only by what a user types and sees.

One test per bug of the issue that made the peer's core sans-IO; the other
two have real-process tests of their own: shown once after two SIGKILLs
(tests/test_mail_crash_once.py) and ``Dave`` is ``dave`` on disk
(tests/test_name_folding.py::test_the_real_peer_as_dave_then_Dave_keeps_one_identity).
Every wait is a pexpect ``expect`` with a timeout; every process (and the
proxy) is ended in a ``finally``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from chathack.link import Sealed, is_relay_frame, relay_text_to_frame
from tests.procs import Lab, Peer, lab
from tests.relay_proxy import LineProxy, drop_first

pytestmark = pytest.mark.e2e

#: Seconds a line may take on a loaded machine (the re-send timer included).
SLOW = 30


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Lab]:
    with lab(tmp_path) as the_lab:
        yield the_lab


def talking(a: Peer, b: Peer) -> None:
    """``a`` opens a conversation with ``b``; both have shown it."""
    a.send(f"connect: {b.name}")
    a.expect(rf"Talking to {b.name} \(")
    b.expect(rf"{a.name} opened a conversation with you")


def test_reply_matched_to_its_request(world: Lab) -> None:
    """A refusal about ghost, arriving while ``connect: bob`` waits, is not
    taken for the answer about bob."""
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    bob = world.peer("bob", server).logged_in()
    alice.send("msg: ghost hi")
    alice.send("connect: bob")
    alice.expect(r"Talking to bob \(")
    assert "ghost" in alice.transcript.getvalue()  # the refusal was shown, as ghost's
    alice.send("hello bob")
    bob.expect_line("alice: hello bob")


def test_typed_line_goes_to_chosen_partner(world: Lab) -> None:
    """carol talks to dave; eve writes to carol; carol's next line still goes
    to dave, and eve's line is shown as eve's."""
    server = world.rendezvous()
    carol = world.peer("carol", server).logged_in()
    dave = world.peer("dave", server).logged_in()
    eve = world.peer("eve", server).logged_in()
    talking(carol, dave)
    eve.send("connect: carol")
    eve.expect(r"Talking to carol \(")
    eve.send("from eve")
    carol.expect(r"eve opened a conversation with you .*::switch eve")
    carol.expect_line("eve: from eve")
    carol.send("for dave")
    dave.expect_line("carol: for dave")
    carol.send("::switch eve")
    carol.expect(r"Talking to eve \(")
    carol.send("now for eve")
    eve.expect_line("carol: now for eve")
    assert "for dave" not in eve.transcript.getvalue()
    assert not re.search(r"Talking to eve", carol.transcript.getvalue().split("::switch eve")[0])


def test_replaced_session_sends_nothing(world: Lab) -> None:
    """bob logs in elsewhere: the old session refuses what is typed there,
    records nothing as sent, and nothing reaches alice."""
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    old_bob = world.peer("bob", server).logged_in()
    talking(old_bob, alice)
    old_bob.send("before")
    alice.expect_line("bob: before")
    # The same user on the same machine, in a second window: same data folder.
    new_bob = Peer("bob", server.address, world.tmp / "peer-bob", password="pw-bob-secret")
    world.procs.append(new_bob)
    new_bob.logged_in()
    old_bob.expect(r"logged in (again|elsewhere)")
    old_bob.send("lost words")
    old_bob.expect(r"replaced by a login elsewhere: nothing can be sent")
    old_bob.send("::quit")
    old_bob.wait()
    assert "the message waits" not in old_bob.transcript.getvalue()
    new_bob.send("connect: alice")
    new_bob.expect(r"Talking to alice \(")
    new_bob.send("::history alice")
    new_bob.expect(r"history: .* bob: before")  # the history is there...
    assert "lost words" not in new_bob.transcript.getvalue()  # ...without what was refused
    new_bob.send("still here")
    alice.expect_line("bob: still here")
    assert "lost words" not in alice.transcript.getvalue()


def _first_sealed_frame(line: bytes) -> bool:
    """A ``msg:`` line carrying a sealed frame (chat, ack or goodbye)."""
    text = line.decode("utf-8", "replace").rstrip("\r")
    if not text.startswith("msg: "):
        return False
    payload = text.split(" ", 2)[2] if text.count(" ") >= 2 else ""
    return is_relay_frame(payload) and isinstance(relay_text_to_frame(payload), Sealed)


def test_dropped_relayed_frame_is_resent(world: Lab) -> None:
    """The relay loses alice's first sealed frame (her first message): the
    re-send timer brings it, shown once, and the later ones after it, in order."""
    server = world.rendezvous()
    dropped: list[bytes] = []
    proxy = LineProxy((server.host, server.port), up=drop_first(_first_sealed_frame, dropped))
    try:
        alice = world.peer("alice", proxy.address, extra=("--relay-only",)).logged_in()
        bob = world.peer("bob", server, extra=("--relay-only",)).logged_in()
        talking(alice, bob)
        for text in ("one", "two", "three"):
            alice.send(text)
        for text in ("one", "two", "three"):
            bob.expect_line(f"alice: {text}", timeout=SLOW)
        assert len(dropped) == 1
        alice.send("four")
        bob.expect_line("alice: four")
        shown = re.findall(r"(?m)^alice: (\w+)\r?$", bob.transcript.getvalue())
        assert shown == ["one", "two", "three", "four"]
    finally:
        proxy.close()
