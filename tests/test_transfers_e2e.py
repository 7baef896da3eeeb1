"""File transfers end to end: a real rendezvous and real peers, as processes,
on 127.0.0.1, in plain mode (what a script reading chathack sees): over a
direct link, through the relay, and resumed after the receiver is killed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.procs import Lab, Peer

pytestmark = pytest.mark.e2e


def talking(world: Lab, *bob_extra: str) -> tuple[Peer, Peer]:
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    bob = world.peer("bob", server, extra=bob_extra).logged_in()
    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect(r"alice opened a conversation with you")
    bob.send("::switch alice")
    bob.expect(r"Talking to alice \(")
    return alice, bob


def source(tmp: Path, name: str, size: int) -> Path:
    path = tmp / "outbox" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_a_file_goes_over_the_direct_link(world: Lab, tmp_path: Path) -> None:
    alice, bob = talking(world)
    bob.expect_line("* [alice] Now talking to alice directly (direct)")
    src = source(tmp_path, "build log.tar.gz", 6_000_000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    alice.send(f"::send {src}")
    bob.expect(r"transfer 1: alice offers build log\.tar\.gz \(6\.0 MB, application/x-tar\)")
    bob.send(f"::accept {inbox}")
    bob.expect(re.escape(f"transfer 1: saved {inbox / 'build log.tar.gz'}"))
    alice.expect(r"transfer 1: bob saved build log\.tar\.gz \(6\.0 MB, SHA-256 verified\)")
    assert (inbox / "build log.tar.gz").read_bytes() == src.read_bytes()
    # The chat goes on as before.
    alice.send("got it?")
    bob.expect_line("alice: got it?")
    alice.send("::transfers")
    alice.expect(r"transfer 1 to bob: build log\.tar\.gz done")


def test_a_file_goes_through_the_relay_when_there_is_no_direct_path(
    world: Lab, tmp_path: Path
) -> None:
    alice, bob = talking(world, "--relay-only")
    src = source(tmp_path, "notes.bin", 120_000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    alice.send(f"::send {src}")
    bob.expect(r"transfer 1: alice offers notes\.bin")
    bob.send(f"::accept {inbox}")
    bob.expect(r"transfer 1: saved .*notes\.bin \(120\.0 KB from alice, SHA-256 verified\)")
    alice.expect(r"transfer 1: bob saved notes\.bin")
    assert (inbox / "notes.bin").read_bytes() == src.read_bytes()


def test_a_file_waits_for_a_direct_path_when_the_relay_is_not_allowed(
    world: Lab, tmp_path: Path
) -> None:
    alice, bob = talking(world, "--relay-only", "--no-file-relay")
    src = source(tmp_path, "private.bin", 1000)
    alice.send(f"::send {src}")
    bob.expect(r"transfer 1: alice offers private\.bin")
    bob.send(f"::accept {tmp_path}")
    alice.expect(r"transfer 1: waiting for a direct path \(the relay is not allowed for files\)")
    alice.send("::cancel 1")
    bob.expect(r"transfer 1: alice dropped private\.bin \(cancelled\)")
    assert not list(tmp_path.glob(".chathack-*.part"))


def test_a_killed_receiver_resumes_where_it_stopped(world: Lab, tmp_path: Path) -> None:
    # Through the relay, whose cap per user (--max-relay-bytes, 128 KiB/s) makes
    # it slow enough to kill the receiver in the middle.
    alice, bob = talking(world, "--relay-only")
    size = 1_000_000
    src = source(tmp_path, "movie.bin", size)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    alice.send(f"::send {src}")
    bob.expect(r"transfer 1: alice offers movie\.bin")
    bob.send(f"::accept {inbox}")
    bob.expect(r"transfer 1 from alice: movie\.bin \[#+-*\] [1-9]\d% ")
    bob.stop()  # SIGKILL
    [part] = list(inbox.glob(".chathack-*.part"))
    held = part.stat().st_size
    assert 0 < held < size
    bob = world.peer("bob", world.procs[0], extra=("--relay-only",)).logged_in()  # type: ignore[arg-type]
    bob.expect(r"transfer 1: saved .*movie\.bin \(1\.0 MB from alice, SHA-256 verified\)", 60)
    alice.expect(r"transfer 1: bob saved movie\.bin")
    assert (inbox / "movie.bin").read_bytes() == src.read_bytes()
    assert not part.exists()
