"""TLS to the rendezvous, with real processes on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from tests.procs import Lab

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_peers_chat_through_a_tls_rendezvous_and_refuse_a_changed_certificate(
    world: Lab,
) -> None:
    port = free_port()
    first_dir = world.tmp / "first"
    first_dir.mkdir()
    server = world.rendezvous("--tls", db=first_dir / "rdv.sqlite3", port=port)
    fingerprint = server.proc.before  # what the server printed before "listening on"
    assert "SHA-256 fingerprint" in fingerprint
    fp = fingerprint.split("SHA-256 fingerprint ", 1)[1].split()[0]

    alice = world.peer("alice", server, extra=("--tls",))
    alice.expect(rf"Pinned the rendezvous TLS certificate {fp}")
    alice.logged_in()
    bob = world.peer("bob", server, extra=("--tls-fingerprint", fp)).logged_in()
    alice.send("connect: bob")
    bob.expect(r"\* \[alice\] (alice opened a conversation with you|Now talking to alice)")
    alice.send("over tls")
    bob.expect_line("alice: over tls")
    alice.send("::quit")
    assert alice.wait() == 0

    # Someone else's server (another certificate) at the same address.
    assert server.stop() == 0
    other_dir = world.tmp / "other"
    other_dir.mkdir()
    world.rendezvous("--tls", db=other_dir / "rdv.sqlite3", port=port)
    again = world.peer("alice", f"127.0.0.1:{port}", extra=("--tls",))
    assert again.wait() == 2
    assert "CHANGED" in again.output or "changed" in again.output


def test_a_plain_client_cannot_talk_to_a_tls_rendezvous(world: Lab) -> None:
    server = world.rendezvous("--tls")
    plain = world.peer("carol", server)  # no --tls
    assert plain.wait() == 2
    # ... and is told why, in words it can act on (not "closed the connection").
    assert "speaks TLS" in plain.output and "--tls" in plain.output


def test_a_line_sent_in_clear_to_a_tls_rendezvous_is_answered_in_clear(world: Lab) -> None:
    server = world.rendezvous("--tls")
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"username: carol\n")
        answer = s.makefile("rb").readline()
    assert answer.startswith(b"Servidor[BYE]: This server speaks TLS")
