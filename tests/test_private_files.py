"""What chathack writes is its user's alone: folders 0700, files 0600, for
the peer (messages in clear in its history, typed lines, pins, its key) and
the rendezvous (password hashes, mail, addresses), whatever the umask of the
shell that started them. Real processes on 127.0.0.1 (tests/procs.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.procs import lab

pytestmark = pytest.mark.e2e


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_peer_and_the_rendezvous_write_private_files(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: others may read what is not protected
    try:
        with lab(tmp_path) as world:
            server = world.rendezvous(db=tmp_path / "srv" / "rendezvous.sqlite3")
            alice = world.peer("alice", server).logged_in()
            bob = world.peer("bob", server).logged_in()
            alice.send("connect: bob")
            alice.expect(r"Talking to bob \(")
            alice.send("hello")
            bob.expect_line("alice: hello")
            alice.send("::quit")
            alice.wait()
    finally:
        os.umask(old)
    folder = tmp_path / "peer-alice"
    assert mode(folder) == 0o700
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {
        "identity.key",
        "history.sqlite3",
        "known_peers",
        "prekeys.sqlite3",
    }
    for path in written:
        assert mode(path) & 0o077 == 0, f"{path.name} is {mode(path):o}"
    assert mode(tmp_path / "srv") == 0o700
    for path in (tmp_path / "srv").iterdir():
        assert mode(path) & 0o077 == 0, f"{path.name} is {mode(path):o}"


def test_an_old_world_readable_data_folder_is_closed(tmp_path: Path) -> None:
    folder = tmp_path / "peer-carol"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with lab(tmp_path) as world:
        server = world.rendezvous()
        world.peer("carol", server).logged_in()
    assert mode(folder) == 0o700
