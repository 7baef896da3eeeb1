"""Offline delivery with real processes: a rendezvous and plain-mode peers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Lab, lab

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Lab]:
    with lab(tmp_path) as the_lab:
        yield the_lab


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
    alice.expect(r"\* stored: message \S+ to bob")
    alice.expect(r"\* stored: message \S+ to bob")
    alice.send("::quit")
    assert alice.wait() == 0

    alice = world.peer("alice", server).logged_in()  # a new run, same data dir
    alice.send("::history bob")
    alice.expect(r"history: \S+ \S+ alice: first while you were out \[stored\]")
    alice.expect(r"history: \S+ \S+ alice: second while you were out \[stored\]")

    bob = world.peer("bob", server)  # the mail comes right after the login
    bob.expect_line("alice: first while you were out")
    bob.expect_line("alice: second while you were out")
    alice.expect(r"\* delivered: message \S+ to bob")
    alice.expect(r"\* read: message \S+ to bob")
    alice.send("::history bob 2")
    alice.expect(r"alice: second while you were out \[read\]")
