"""A crash: the rendezvous is killed with SIGKILL (no goodbye, no flush) while
two real peers are connected, and restarted at the same address with the same
database. The peers notice, reconnect by themselves (backoff with jitter,
peer/server_link.py), log in again and chat through the new server.

Real processes on 127.0.0.1 (tests/procs.py); every wait is a pexpect
``expect`` with a timeout; every process and socket is closed in ``finally``.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.procs import EXPECT_TIMEOUT, Peer, Rendezvous, lab

pytestmark = pytest.mark.e2e

#: Seconds the peers get to come back: the restart plus a few backoff steps.
COMEBACK_TIMEOUT = 30


def free_port() -> int:
    """A port free right now on 127.0.0.1, so a restarted server can take it again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def frozen(*peers: Peer) -> Iterator[None]:
    """SIGSTOP the peers for the duration, SIGCONT them after, whatever happens."""
    for p in peers:
        os.kill(p.proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in peers:
            os.kill(p.proc.proc.pid, signal.SIGCONT)


def test_peers_come_back_by_themselves_after_the_rendezvous_is_killed(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "crash.sqlite3"
    with lab(tmp_path) as world:
        first = Rendezvous(db, port=port)
        world.procs.append(first)
        alice = world.peer("alice", first).logged_in()
        # bob takes no direct links: the conversation needs the rendezvous (relay).
        bob = world.peer("bob", first, extra=("--relay-only",)).logged_in()
        alice.send("connect: bob")
        alice.expect_line("* [bob] Talking to bob (relayed)")
        bob.expect_line(
            "* [alice] alice opened a conversation with you (relayed): ::switch alice to answer"
        )
        bob.send("::switch alice")
        bob.expect_line("* [alice] Talking to alice (relayed)")
        alice.send("before the crash")
        bob.expect_line("alice: before the crash")

        # The peers are frozen while the server dies, so that they notice only
        # once it is gone: a peer that reconnects *while* the kernel tears the
        # process down can reach its dying listener and be reset, and today's
        # peer gives up then (the next test).
        with frozen(alice, bob):
            first.stop(signal.SIGKILL)
        for peer in (alice, bob):
            peer.expect(r"\* warning: Lost the rendezvous; reconnecting")

        second = Rendezvous(db, port=port)
        world.procs.append(second)
        assert second.port == port
        for peer in (alice, bob):
            peer.expect_line("* Reconnected to the rendezvous", timeout=COMEBACK_TIMEOUT)

        alice.send("after the restart")
        bob.expect_line("alice: after the restart")
        bob.send("and back")
        alice.expect_line("bob: and back")
        # The accounts came through the crash (WAL): both logged in with their passwords.
        alice.send("::users")
        alice.expect_line("* Who do you want to talk to? alice online, bob online")


def test_a_peer_retries_when_the_dying_server_resets_its_reconnection(tmp_path: Path) -> None:
    """A reconnection that the server side closes before the login completes
    must be retried. It happens when a SIGKILLed server's kernel takes a
    connection into the dying listener's queue and then drops it (by a reset or
    a close, depending on timing); made deterministic here: the peer's first
    reconnection is accepted, its first line read, and the connection closed."""
    port = free_port()
    db = tmp_path / "crash.sqlite3"
    dying = socket.socket()
    try:
        with lab(tmp_path) as world:
            first = Rendezvous(db, port=port)
            world.procs.append(first)
            alice = world.peer("alice", first).logged_in()
            with frozen(alice):
                first.stop(signal.SIGKILL)
                dying.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                dying.bind(("127.0.0.1", port))
                dying.listen()
            dying.settimeout(EXPECT_TIMEOUT)
            conn, _ = dying.accept()
            with conn:
                conn.settimeout(EXPECT_TIMEOUT)
                assert conn.recv(4096).startswith((b"resume: alice ", b"username: alice"))
            dying.close()

            second = Rendezvous(db, port=port)
            world.procs.append(second)
            alice.expect_line("* Reconnected to the rendezvous", timeout=COMEBACK_TIMEOUT)
    finally:
        dying.close()
