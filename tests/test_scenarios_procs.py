"""Six promises of the peer, end to end with real processes on 127.0.0.1: a
real ``chathack-rendezvous`` and plain-mode ``chathack-peer`` processes
(tests/procs.py), driven only by what a user types and checked only by what
the user sees (and, where a lossy path is the point, by the documented wire
lines a proxy between a peer and the rendezvous lets through or loses:
tests/relay_proxy.py). Nothing here knows the peer's internals, so the
tests hold across a rewrite of them.

One test per bug, named after it. Two have relatives elsewhere, which these
extend rather than repeat: tests/test_mail_crash_once.py keeps the sender
online while the backlog crosses two SIGKILLs; here the sender has left, and
a proxy makes the second crash land deterministically half-way through the
delivery, with the receiver's acknowledgements lost. tests/test_name_folding.py
checks the data folder and the rendezvous's record for ``Dave``; here a
partner checks the key: no warning, the same fingerprint.

Every wait is a pexpect ``expect`` (or a ``threading.Event``) with a
timeout; nothing synchronises with ``sleep``; every process and the proxy
are ended in a ``finally`` or by the ``world`` fixture (tests/conftest.py),
even when a test fails.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.procs import Lab, Peer
from tests.relay_proxy import LineProxy, drop_first
from tests.test_mail_crash_once import frozen, shown
from tests.test_mailbox_durability import Server

pytestmark = pytest.mark.e2e

#: Seconds a line may take on a loaded machine, a re-send or a reconnection included.
SLOW = 30
#: The relay's re-send timer fires 2 s after a frame was first sent
#: (docs/PROTOCOL.md 3.6): a message lost on the way cannot arrive before
#: half of that, and must arrive well within this.
RESEND_NOT_BEFORE = 1.0
RESEND_WITHIN = 12.0
#: Messages alice leaves for bob, and how many of them reach bob before the
#: second crash.
BACKLOG = 60
BEFORE_CRASH = 10
#: A key fingerprint as ``::whois`` and the first-use notice show it.
FINGERPRINT = r"[0-9a-f]{4}(?: [0-9a-f]{4})+"
#: Runs argv without its ``--data-dir DIR``: tests/procs.py always names one,
#: and the case-folding of the *default* data folder is the point of the test.
WITHOUT_DATA_DIR = (
    "import os, sys; argv = sys.argv[1:]; at = argv.index('--data-dir'); "
    "del argv[at:at + 2]; os.execv(argv[0], argv)"
)


def talking(a: Peer, b: Peer) -> None:
    """``a`` opens a conversation with ``b``; both have shown it."""
    a.send(f"connect: {b.name}")
    a.expect(rf"Talking to {b.name} \(")
    b.expect(rf"{a.name} opened a conversation with you")


def everything_shown(peer: Peer) -> str:
    """``peer``'s output up to its answer to ``::users``: whatever it had to
    show before that line was read has been read."""
    peer.send("::users")
    peer.expect(r"Who do you want to talk to\?")
    return peer.transcript.getvalue()


# --------------------------------------------------------------------------
# 1. A reply is matched to its request
# --------------------------------------------------------------------------


def test_reply_matched_to_its_request(world: Lab) -> None:
    """The refusal of ``msg: ghost`` arrives while ``connect: bob`` waits for
    its answer: it is shown as ghost's, and bob's conversation opens."""
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    bob = world.peer("bob", server).logged_in()
    alice.send("msg: ghost hi")
    alice.send("connect: bob")
    alice.expect(r"Talking to bob \(")
    bob.expect("alice opened a conversation with you")
    alice.send("hello bob")
    bob.expect_line("alice: hello bob")

    lines = everything_shown(alice).splitlines()
    about_ghost = [n for n, line in enumerate(lines) if "ghost" in line]
    talking_to_bob = [n for n, line in enumerate(lines) if "Talking to bob" in line]
    assert len(about_ghost) == 1, lines  # shown once, as the answer about ghost
    assert len(talking_to_bob) == 1, lines
    assert about_ghost[0] < talking_to_bob[0]
    assert "bob" not in lines[about_ghost[0]]
    errors = [line for line in lines if re.search(r"ERROR|error:|did not answer", line)]
    assert errors == [lines[about_ghost[0]]]  # nothing went wrong with bob
    assert "ghost" not in bob.transcript.getvalue()


# --------------------------------------------------------------------------
# 2. A typed line goes to the partner the user chose
# --------------------------------------------------------------------------


def test_typed_line_goes_to_chosen_partner(world: Lab) -> None:
    """carol talks to dave; eve writes to carol; eve's line is shown as eve's,
    carol stays with dave, and her next line reaches dave, never eve."""
    server = world.rendezvous()
    carol = world.peer("carol", server).logged_in()
    dave = world.peer("dave", server).logged_in()
    eve = world.peer("eve", server).logged_in()
    talking(carol, dave)
    carol.send("hi dave")
    dave.expect_line("carol: hi dave")
    dave.send("::switch carol")
    dave.send("hi carol")
    carol.expect_line("dave: hi carol")

    eve.send("connect: carol")
    eve.expect(r"Talking to carol \(")
    eve.send("from eve")
    carol.expect(r"eve opened a conversation with you .*::switch eve")
    carol.expect_line("eve: from eve")
    carol.send("for dave")
    dave.expect_line("carol: for dave")
    seen_by_carol = everything_shown(carol)
    assert "Talking to eve" not in seen_by_carol
    assert "dave: from eve" not in seen_by_carol

    carol.send("::switch eve")
    carol.expect(r"Talking to eve \(")
    carol.send("now for eve")
    # Lines on one conversation arrive in order: had "for dave" gone to eve,
    # eve would have shown it before this one.
    eve.expect_line("carol: now for eve")
    assert "for dave" not in eve.transcript.getvalue()
    assert "from eve" not in dave.transcript.getvalue()


# --------------------------------------------------------------------------
# 3. A mailbox backlog is shown once, across two crashes of the rendezvous
# --------------------------------------------------------------------------


class CutMidBacklog:
    """Proxy rewrites for bob's rendezvous connection: while ``cutting``, only
    the first ``through`` ``Servidor[MAIL]`` lines reach bob, the rest are
    lost, and so is every ``ack:`` and ``read:`` bob sends: what a crash
    half-way through a delivery loses on the wire, both ways."""

    def __init__(self, through: int, backlog: int) -> None:
        self.through, self.backlog = through, backlog
        self.cutting = True
        self.passed = self.lost = 0
        self.all_lost = threading.Event()  # the rest of the backlog was sent and lost

    def down(self, line: bytes) -> list[bytes]:
        if not (self.cutting and line.startswith(b"Servidor[MAIL]: ")):
            return [line]
        if self.passed < self.through:
            self.passed += 1
            return [line]
        self.lost += 1
        if self.lost == self.backlog - self.through:
            self.all_lost.set()
        return []

    def up(self, line: bytes) -> list[bytes]:
        if self.cutting and line.startswith((b"ack: ", b"read: ")):
            return []
        return [line]


def test_mailbox_backlog_shown_once_after_server_crashes(tmp_path: Path) -> None:
    server = Server(tmp_path / "rendezvous.sqlite3")
    cut = CutMidBacklog(BEFORE_CRASH, BACKLOG)
    proxy: LineProxy | None = None
    peers: list[Peer] = []

    def peer(name: str, address: str) -> Peer:
        p = Peer(name, address, tmp_path / f"peer-{name}")
        peers.append(p)
        return p

    try:
        server.start()
        bob = peer("bob", f"127.0.0.1:{server.port}").logged_in()  # registers bob's key
        bob.send("::quit")
        assert bob.wait() == 0

        # alice leaves the backlog and goes: only the mailbox can bring it.
        alice = peer("alice", f"127.0.0.1:{server.port}").logged_in()
        alice.send("connect: bob")
        alice.expect(r"bob is offline: what you type is kept for bob on the server")
        for n in range(BACKLOG):
            alice.send(f"message {n}")
        for _ in range(BACKLOG):
            alice.expect(r"\* \[bob\] stored: message \S+", timeout=SLOW)
        alice.send("::quit")
        assert alice.wait() == 0
        assert "Not delivered" not in alice.transcript.getvalue()

        server.kill()  # first crash: the backlog waits on disk
        server.start()

        proxy = LineProxy(("127.0.0.1", server.port), up=cut.up, down=cut.down)
        bob = peer("bob", proxy.address)
        bob.expect_line(f"alice: message {BEFORE_CRASH - 1}", timeout=SLOW)
        assert cut.all_lost.wait(SLOW), "the server did not send the whole backlog"
        # Second crash, half-way: bob has shown some, acknowledged none. He is
        # frozen so that he reconnects only to the new server.
        with frozen(bob):
            server.kill()
            cut.cutting = False
            server.start()
        bob.expect(r"\* warning: Lost the rendezvous; reconnecting", timeout=SLOW)
        bob.expect_line("* Reconnected to the rendezvous", timeout=SLOW)
        for n in range(BEFORE_CRASH, BACKLOG):
            bob.expect_line(f"alice: message {n}", timeout=SLOW)
        # The new server sends its copies right after the login, before its
        # answer to any later line: all of them have been shown or dropped now.
        everything_shown(bob)

        got = shown(bob, "alice")
        twice = sorted(text for text, count in Counter(got).items() if count > 1)
        assert not twice, f"shown more than once: {twice}"
        assert got == [f"message {n}" for n in range(BACKLOG)]
    finally:
        for p in reversed(peers):
            p.stop()
        if proxy is not None:
            proxy.close()
        server.close()


# --------------------------------------------------------------------------
# 4. A session replaced by a login elsewhere sends nothing
# --------------------------------------------------------------------------


def test_replaced_session_sends_nothing(world: Lab) -> None:
    """bob logs in again elsewhere: the old session is told, refuses what is
    typed there, leaves with nothing pending, and nothing reaches alice."""
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    old_bob = world.peer("bob", server).logged_in()
    talking(old_bob, alice)
    old_bob.send("before")
    alice.expect_line("bob: before")
    old_bob.send("::history alice")
    old_bob.expect(r"bob: before \[delivered\]")

    # The same user on the same machine, in a second window: same data folder.
    new_bob = Peer("bob", server.address, world.tmp / "peer-bob", password="pw-bob-secret")
    world.procs.append(new_bob)
    new_bob.logged_in()
    old_bob.expect(r"logged in (again|elsewhere)")
    old_bob.send("lost words")
    refusal = old_bob.expect(r"[^\n]*replaced by a login elsewhere: nothing can be sent[^\n]*")
    assert "wait" not in refusal.group(0)
    old_bob.send("::history alice")
    old_bob.expect(r"bob: before \[delivered\]")
    old_bob.send("::quit")
    assert old_bob.wait() == 0
    said = old_bob.transcript.getvalue()
    assert "Not delivered" not in said  # nothing pending: the refused line is not kept
    assert "waits" not in said
    assert "lost words" not in said  # neither in its history nor anywhere else

    new_bob.send("connect: alice")
    new_bob.expect(r"Talking to alice \(")
    new_bob.send("::history alice")
    new_bob.expect(r"history: .* bob: before")  # the history is there...
    new_bob.send("still here")
    alice.expect_line("bob: still here")
    assert "lost words" not in everything_shown(new_bob)  # ...without what was refused
    assert "lost words" not in alice.transcript.getvalue()


# --------------------------------------------------------------------------
# 5. A relayed frame the relay loses is re-sent
# --------------------------------------------------------------------------


def test_dropped_relayed_frame_is_resent(world: Lab) -> None:
    """The path to the relay loses alice's first sealed ``msg: bob`` line (her
    first message): the re-send timer brings it within a bound, shown once,
    and the later ones after it, in order."""
    server = world.rendezvous()
    armed = threading.Event()
    dropped: list[bytes] = []

    def first_message(line: bytes) -> bool:
        # docs/PROTOCOL.md 2.3: a sealed frame's relay text begins "#ch1:A";
        # hellos and key exchange lines are JSON ("#ch1:ey...").
        return armed.is_set() and line.startswith(b"msg: bob #ch1:A")

    proxy = LineProxy((server.host, server.port), up=drop_first(first_message, dropped))
    try:
        alice = world.peer("alice", proxy.address, extra=("--relay-only",)).logged_in()
        bob = world.peer("bob", server, extra=("--relay-only",)).logged_in()
        talking(alice, bob)
        for me, partner in ((alice, bob), (bob, alice)):  # the relay's keys are agreed
            me.expect(rf"first conversation with {partner.name}: key {FINGERPRINT} pinned")
        armed.set()

        sent_at = time.monotonic()
        for text in ("one", "two", "three"):
            alice.send(text)
        bob.expect_line("alice: one", timeout=RESEND_WITHIN)
        took = time.monotonic() - sent_at
        assert len(dropped) == 1
        assert took >= RESEND_NOT_BEFORE, f"'one' came in {took:.2f}s: the lost line was another"
        for text in ("two", "three"):
            bob.expect_line(f"alice: {text}", timeout=SLOW)
        alice.send("four")
        bob.expect_line("alice: four")
        got = re.findall(r"(?m)^alice: (.*?)\r?$", everything_shown(bob))
        assert got == ["one", "two", "three", "four"]
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# 6. ``Dave`` is ``dave``: the same identity, no key-change warning
# --------------------------------------------------------------------------


def test_case_folded_name_keeps_identity(
    world: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chathack-peer dave``, then ``chathack-peer Dave`` with the default
    data folder: the same key (``::whois``), one folder, and alice, who
    pinned dave's key, keeps talking to him without a warning."""
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))  # the peers inherit it: the data root
    default_dir = (sys.executable, "-c", WITHOUT_DATA_DIR)
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()

    dave = world.peer("dave", server, password="pw-dave-secret", prefix=default_dir)
    dave.logged_in()
    talking(dave, alice)
    dave.send("hi from dave")
    alice.expect_line("dave: hi from dave")
    # The first-use notice comes before "dave opened a conversation", which talking() read.
    first_use = rf"first conversation with dave: key ({FINGERPRINT}) pinned"
    found = re.search(first_use, alice.transcript.getvalue())
    assert found, alice.transcript.getvalue()
    pinned = found.group(1)
    dave.send("::whois alice")
    first_key = dave.expect(rf"you: ({FINGERPRINT})").group(1)
    assert first_key == pinned
    dave.send("::quit")
    assert dave.wait() == 0

    again = world.peer("Dave", server, password="pw-dave-secret", prefix=default_dir)
    again.logged_in()
    again.send("connect: alice")
    again.expect(r"Talking to alice \(")
    again.send("hi again")
    alice.expect(r"(?im)^dave: hi again\r?$")  # not held back for a changed key
    again.send("::whois alice")
    assert again.expect(rf"you: ({FINGERPRINT})").group(1) == first_key

    alice.send("::whois dave")
    vouched = alice.expect(rf"dave \(as the rendezvous vouches\): ({FINGERPRINT})").group(1)
    still_pinned = alice.expect(rf"dave \(pinned\): ({FINGERPRINT})").group(1)
    assert vouched == still_pinned == pinned
    said = everything_shown(alice)
    assert not re.search(r"(?i)key changed|changed key|impersonat|::trust", said), said
    assert sorted(p.name for p in (xdg / "chathack" / "peers").iterdir()) == ["dave"]
