"""Shown once after a crash: a backlog of mail reaches a real peer while the
rendezvous is killed with SIGKILL twice, and every message is shown exactly
once, in order -- neither delivered again nor repeated as the "earlier" lines
of a conversation that opens once it has all been shown.

First the history's part, synchronously (:class:`peer.history.History`);
then real processes on 127.0.0.1 (tests/procs.py): a rendezvous on a fixed
port (restarted where its peers look for it, tests/test_mailbox_durability.py)
and two plain-mode peers. Every wait is a pexpect ``expect`` with a timeout;
every process is ended in a ``finally``; nothing waits with ``sleep``.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from peer.history import History
from tests.procs import Peer
from tests.test_mailbox_durability import Server

#: Messages alice leaves for bob.
BACKLOG = 200
#: Seconds the peers get to come back after a restart (a few backoff steps).
COMEBACK_TIMEOUT = 40
#: Seconds one expected line may take on a loaded machine.
LINE_TIMEOUT = 30


def test_a_reopened_conversation_repeats_only_what_earlier_runs_recorded(
    tmp_path: Path,
) -> None:
    earlier = History(tmp_path)
    earlier.add_outgoing("alice", "see you", 1.0, "e-1")
    earlier.add_incoming("alice", "bye", 2.0, "a-1")
    earlier.close()

    history = History(tmp_path)  # this run
    before = ["see you", "bye"]
    assert [e.text for e in history.last("alice", 3, before_this_run=True)] == before
    for n in range(BACKLOG):  # a backlog of mail, each shown as it was recorded
        assert history.add_incoming("alice", f"message {n}", 3.0, f"a-m{n}")
    assert not history.add_incoming("Alice", "message 199", 4.0, "a-m199")  # again: not new
    # The conversation opens now: its context is what no screen of this run showed.
    assert [e.text for e in history.last("Alice", 3, before_this_run=True)] == before
    # ::history shows everything.
    assert [e.text for e in history.last("alice", 2)] == ["message 198", "message 199"]
    history.close()

    history = History(tmp_path)  # the next run: all of it is earlier now
    assert [e.text for e in history.last("alice", 2, before_this_run=True)] == [
        "message 198",
        "message 199",
    ]
    history.close()
    in_memory = History(None)  # no data dir: no earlier run
    in_memory.add_incoming("alice", "hi", 1.0, "a-1")
    assert in_memory.last("alice", 3, before_this_run=True) == []
    in_memory.close()


@contextmanager
def frozen(peer: Peer) -> Iterator[None]:
    """SIGSTOP ``peer`` for the duration, SIGCONT it after, whatever happens."""
    os.kill(peer.proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(peer.proc.proc.pid, signal.SIGCONT)


def shown(peer: Peer, origin: str) -> list[str]:
    """Every line of ``peer``'s output that shows a message from ``origin``:
    as it arrived (``origin: text``) or again as context (``* earlier: ...``)."""
    pattern = re.compile(rf"^(?:\* \w+: \S+ \S+ )?{origin}: (.*)$")
    lines = peer.transcript.getvalue().splitlines()
    return [m.group(1) for ln in lines if (m := pattern.match(ln.rstrip("\r")))]


@pytest.mark.e2e
def test_a_backlog_delivered_across_two_sigkills_is_shown_once_each_in_order(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "rendezvous.sqlite3")
    peers: list[Peer] = []

    def peer(name: str) -> Peer:
        p = Peer(name, f"127.0.0.1:{server.port}", tmp_path / f"peer-{name}")
        peers.append(p)
        return p

    try:
        server.start()
        bob = peer("bob").logged_in()  # registers bob and his identity key
        bob.send("::quit")
        assert bob.wait() == 0

        alice = peer("alice").logged_in()
        alice.send("connect: bob")
        alice.expect(r"bob is offline: what you type is kept for bob on the server")
        for n in range(BACKLOG):
            alice.send(f"message {n}")
        for _ in range(BACKLOG):
            alice.expect(r"\* \[bob\] stored: message \S+", timeout=LINE_TIMEOUT)

        # First crash, with bob still away: the backlog waits in the database.
        server.kill()
        alice.expect(r"\* warning: Lost the rendezvous; reconnecting", timeout=LINE_TIMEOUT)
        server.start()
        alice.expect_line("* Reconnected to the rendezvous", timeout=COMEBACK_TIMEOUT)

        # bob logs in and the backlog starts flowing; the second crash comes
        # while bob is frozen part-way, so that some of what he was sent is
        # likely unacknowledged and comes again after the restart. alice stays frozen
        # until bob is back, so that her reconnection finds bob online and asks
        # for him (``connect: bob``): the server calls bob, whose conversation
        # with alice opens in the middle of it all.
        bob = peer("bob")
        bob.expect_line("alice: message 0", timeout=LINE_TIMEOUT)
        with frozen(alice):
            with frozen(bob):
                server.kill()
                server.start()
            bob.expect(r"\* warning: Lost the rendezvous; reconnecting", timeout=LINE_TIMEOUT)
            bob.expect_line("* Reconnected to the rendezvous", timeout=COMEBACK_TIMEOUT)
        alice.expect(r"\* warning: Lost the rendezvous; reconnecting", timeout=LINE_TIMEOUT)
        alice.expect_line("* Reconnected to the rendezvous", timeout=COMEBACK_TIMEOUT)

        # Whatever the new server sends again comes right after the login, so
        # before its answer to any later line of bob's: once ``::users`` is
        # answered, every copy delivered again has been shown or dropped.
        bob.send("::users")
        bob.expect(r"\* Who do you want to talk to\?", timeout=LINE_TIMEOUT)

        # bob answers: his conversation with alice is open (by alice's call, or
        # now), and whatever it shows on opening is on his screen; then one more
        # message from alice, on whichever path.
        bob.send("connect: alice")
        bob.expect(r"\* \[alice\] Talking to alice \(", timeout=LINE_TIMEOUT)
        alice.send("after the crashes")
        bob.expect_line("alice: after the crashes", timeout=LINE_TIMEOUT)

        got = shown(bob, "alice")
        want = [f"message {n}" for n in range(BACKLOG)] + ["after the crashes"]
        twice = sorted({t for t in got if got.count(t) > 1})
        assert not twice, f"shown more than once: {twice}"
        assert got == want
    finally:
        for p in reversed(peers):
            p.stop()
        server.close()
