"""Offline delivery with real processes: a rendezvous and plain-mode peers."""

from __future__ import annotations

import pytest

from tests.procs import Lab

pytestmark = pytest.mark.e2e


def test_offline_messages_wait_and_their_states_survive_a_restart(world: Lab) -> None:
    server = world.rendezvous()
    bob = world.peer("bob", server).logged_in()  # registers bob and his key
    bob.send("::quit")
    assert bob.wait() == 0

    alice = world.peer("alice", server).logged_in()
    alice.send("connect: bob")
    alice.expect(r"bob is offline: what you type is kept for bob on the server")
    alice.send("first while you were out")
    alice.send("second while you were out")
    alice.expect(r"\* \[bob\] stored: message \S+")
    alice.expect(r"\* \[bob\] stored: message \S+")
    alice.send("::quit")
    assert alice.wait() == 0

    alice = world.peer("alice", server).logged_in()  # a new run, same data dir
    alice.send("::history bob")
    alice.expect(r"history: \S+ \S+ alice: first while you were out \[stored\]")
    alice.expect(r"history: \S+ \S+ alice: second while you were out \[stored\]")

    bob = world.peer("bob", server)  # the mail comes right after the login
    bob.expect_line("alice: first while you were out")
    bob.expect_line("alice: second while you were out")
    alice.expect(r"\* \[bob\] delivered: message \S+")
    alice.expect(r"\* \[bob\] read: message \S+")
    alice.send("::history bob 2")
    alice.expect(r"alice: second while you were out \[read\]")


def test_a_backlog_of_10000_messages_reaches_a_real_peer_once_each_in_order(world: Lab) -> None:
    import socket
    import time

    n = 10_000
    server = world.rendezvous("--max-msg-rate", "0", "--max-cmd-rate", "0")
    bob = world.peer("bob", server).logged_in()
    bob.send("::quit")
    assert bob.wait() == 0
    # gina, a plain line client, leaves bob 10,000 messages.
    with socket.create_connection((server.host, server.port), timeout=30) as s:
        f = s.makefile("rwb")
        f.write(b"username: gina\npassword: gina-secret\n")
        stored, window, deadline = 0, 500, time.monotonic() + 120
        for first in range(0, n, window):  # the server queues few replies for a non-reader
            f.write(
                b"".join(
                    f"mail: bob g{i} message {i}\n".encode()
                    for i in range(first, min(n, first + window))
                )
            )
            f.flush()
            while stored < min(n, first + window) and time.monotonic() < deadline:
                line = f.readline()
                assert line, "the server closed the connection"
                stored += line.startswith(b"Servidor[STORED]: bob g")
        assert stored == n
    start = time.monotonic()
    bob = world.peer("bob", server)
    bob.expect_line(f"gina: message {n - 1}", timeout=120)
    took = time.monotonic() - start
    shown = [ln for ln in bob.transcript.getvalue().splitlines() if ln.startswith("gina: ")]
    assert shown == [f"gina: message {i}" for i in range(n)]
    print(f"\n10,000-message backlog shown by a real peer in {took:.2f} s")
