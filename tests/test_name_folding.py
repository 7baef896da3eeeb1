"""User names are folded on the peer as on the rendezvous (``Dave`` is dave):
one data dir and one identity key per user, whatever the spelling typed;
data an older version kept under another spelling is found and moved, never
lost silently; pins and history are looked up case-insensitively.

Mostly synchronous tests on files in ``tmp_path`` (the per-user data folder
is pointed there with ``XDG_DATA_HOME``); one check runs the real
``chathack-peer`` twice against a real rendezvous on 127.0.0.1.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from chathack.secure import b64
from peer.cli import default_data_dir, find_data_dir, peers_root
from peer.history import History
from peer.identity import IDENTITY_FILE, PINS_FILE, Pins, fold_name, load_identity
from tests.procs import EXPECT_TIMEOUT, Rendezvous, command


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user peers folder, inside ``tmp_path`` (never the real home)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return peers_root()


def key_in(data_dir: Path) -> bytes:
    return bytes(load_identity(data_dir))


def names_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# --------------------------------------------------------------------------
# The data dir
# --------------------------------------------------------------------------


def test_dave_after_dave_uses_the_same_data_dir_and_identity_key(root: Path) -> None:
    first = key_in(default_data_dir("dave"))
    assert key_in(default_data_dir("Dave")) == first
    assert key_in(default_data_dir("DAVE")) == first
    assert names_in(root) == ["dave"]


def test_find_data_dir_folds_and_has_nothing_to_say_on_a_clean_install(root: Path) -> None:
    assert find_data_dir("Dave") == (root / "dave", [])  # no root yet: first run
    key = key_in(root / "dave")
    assert find_data_dir("dAVE") == (root / "dave", [])
    assert key_in(root / "dave") == key


@pytest.mark.parametrize("typed", ["Dave", "dave"])
def test_an_old_mixed_case_data_dir_is_moved_with_its_identity(root: Path, typed: str) -> None:
    old = root / "Dave"  # what an older version made for `chathack-peer Dave`
    key = key_in(old)
    Pins(old).pin("alice", b"k" * 32)
    History(old).add_incoming("alice", "hi", 1.0, "m1")

    data_dir, notes = find_data_dir(typed)

    assert data_dir == root / "dave"
    assert names_in(root) == ["dave"]
    assert key_in(data_dir) == key  # the same identity: no key-change alarm for anyone
    assert Pins(data_dir).get("Alice") == b"k" * 32
    assert not History(data_dir).add_incoming("Alice", "hi", 2.0, "m1")  # seen already
    assert len(notes) == 1 and "Moved your data" in notes[0] and str(old) in notes[0]
    assert find_data_dir(typed) == (root / "dave", [])  # said once


def test_with_both_spellings_the_folded_one_is_used_and_the_other_named(root: Path) -> None:
    key = key_in(root / "dave")
    other = key_in(root / "Dave")
    assert other != key

    data_dir, notes = find_data_dir("Dave")

    assert data_dir == root / "dave" and key_in(data_dir) == key
    assert names_in(root) == ["Dave", "dave"]  # nothing moved, nothing lost
    assert key_in(root / "Dave") == other
    assert len(notes) == 1 and f"Not using {root / 'Dave'}" in notes[0]


def test_of_several_old_spellings_the_last_used_is_moved(root: Path) -> None:
    keys = {name: key_in(root / name) for name in ("DAVE", "Dave", "daVe")}
    for n, name in enumerate(("DAVE", "daVe", "Dave")):  # Dave was used last
        for path in (root / name, root / name / IDENTITY_FILE):
            os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))

    data_dir, notes = find_data_dir("dave")

    assert key_in(data_dir) == keys["Dave"]
    assert names_in(root) == ["DAVE", "daVe", "dave"]
    assert [n.split(":")[0] for n in notes] == [
        f"Moved your data (identity key, pinned keys, history) from {root / 'Dave'} to "
        f"{root / 'dave'}",
        f"Not using {root / 'DAVE'}",
        f"Not using {root / 'daVe'}",
    ]


def test_an_old_dir_that_cannot_be_moved_is_used_where_it_is(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key_in(root / "Dave")

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    data_dir, notes = find_data_dir("dave")
    assert data_dir == root / "Dave" and key_in(data_dir) == key
    assert len(notes) == 1 and "could not be renamed" in notes[0]


def test_a_file_named_like_the_user_is_not_taken_for_a_data_dir(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "Dave").write_text("not a data dir")
    assert find_data_dir("dave") == (root / "dave", [])


# --------------------------------------------------------------------------
# Pins and history
# --------------------------------------------------------------------------


def test_fold_name_is_the_rendezvous_fold() -> None:
    assert fold_name("Dave_01.x-Y") == "dave_01.x-y"


def test_pins_are_kept_folded_and_looked_up_whatever_the_spelling(tmp_path: Path) -> None:
    Pins(tmp_path).pin("Dave", b"d" * 32)
    with (tmp_path / PINS_FILE).open("a") as f:
        f.write(f"Erin {b64(b'x' * 32)}\n")  # written by hand, in mixed case
    pins = Pins(tmp_path)
    assert pins.get("dave") == pins.get("DAVE") == b"d" * 32
    assert pins.get("erin") == b"x" * 32
    pins.pin("ERIN", b"e" * 32)  # ::trust ERIN replaces erin's pin, never adds a second
    lines = (tmp_path / PINS_FILE).read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["dave", "erin"]
    assert Pins(tmp_path).get("Erin") == b"e" * 32


def test_history_is_one_conversation_whatever_the_spelling(tmp_path: Path) -> None:
    history = History(tmp_path)
    assert history.add_incoming("Dave", "hi", 1.0, "m1")
    assert not history.add_incoming("dave", "hi", 2.0, "m1")  # the same message: shown once
    assert not history.add_incoming("DAVE", "hi", 3.0, "m1")
    history.add_outgoing("dave", "hello", 4.0, "e-1", payload="#cm1:x")
    history.add_outgoing("Dave", "hello", 4.0, "e-1", payload="#cm1:x")  # a resend, not a row
    assert history.advance("DAVE", "e-1", "stored")
    assert history.state_of("dAVE", "e-1") == "stored"
    assert [e.text for e in history.last("dave", 10)] == ["hi", "hello"]
    assert [e.text for e in history.last("DAVE", 10)] == ["hi", "hello"]
    history.close()


# --------------------------------------------------------------------------
# The real program
# --------------------------------------------------------------------------


def run_peer(name: str, server: Rendezvous, xdg: Path) -> str:
    """``chathack-peer NAME`` with the default data dir: log in, quit; its stderr."""
    env = dict(os.environ, CHATHACK_PASSWORD="dave-secret", XDG_DATA_HOME=str(xdg))
    argv = [command("chathack-peer"), name, "--server", server.address]
    argv += ["--listen", "127.0.0.1:0"]
    # subprocess.run kills the peer if it outlives the timeout.
    done = subprocess.run(
        argv, input="::quit\n", capture_output=True, text=True, env=env, timeout=EXPECT_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert f"* Logged in as {name} at {server.address}" in done.stdout
    return done.stderr


def registered_key(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        (key,) = conn.execute("SELECT pubkey FROM accounts WHERE name = 'dave'").fetchone()
    return str(key)


@pytest.mark.e2e
def test_the_real_peer_as_dave_then_Dave_keeps_one_identity(tmp_path: Path) -> None:
    db = tmp_path / "rendezvous.sqlite3"
    xdg = tmp_path / "xdg"
    server = Rendezvous(db)
    try:
        assert run_peer("dave", server, xdg) == ""
        key = registered_key(db)
        assert run_peer("Dave", server, xdg) == ""
        # The rendezvous vouches for the same key: no partner gets a key-change alarm.
        assert registered_key(db) == key
        assert names_in(xdg / "chathack" / "peers") == ["dave"]

        # An older version's folder under another spelling is moved, and said so.
        (xdg / "chathack" / "peers" / "dave").rename(xdg / "chathack" / "peers" / "DaVe")
        err = run_peer("dave", server, xdg)
        assert "chathack-peer: Moved your data" in err
        assert registered_key(db) == key
        assert names_in(xdg / "chathack" / "peers") == ["dave"]
    finally:
        server.stop()
