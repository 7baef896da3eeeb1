"""Weakness 8 of the trust issue, its names half: ``aIice``, ``a1ice`` and
``alice.`` registered silently beside ``alice``, and a conversation list
showed them alike. A name that reads like a registered one is now refused
at registration, with the reason; a database from before gets the
look-alike index on its first start."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from rendezvous.lookalike import skeleton
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from tests.test_server import InstantPasswords, running


@pytest.mark.parametrize(
    "twin", ["aIice", "a1ice", "alice.", "al1ce", "_alice", "a-lice", "ALlCE", "aiice"]
)
def test_look_alikes_share_alices_skeleton(twin: str) -> None:
    assert skeleton(twin) == skeleton("alice")


@pytest.mark.parametrize("other", ["alicia", "bob", "alice2", "malice", "alce"])
def test_other_names_do_not(other: str) -> None:
    assert skeleton(other) != skeleton("alice")


def test_rn_reads_as_m_and_vv_as_w() -> None:
    assert skeleton("rnary") == skeleton("mary")
    assert skeleton("vvill") == skeleton("will")


async def test_a_look_alike_is_refused_at_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(
        SqliteStore(":memory:"),
        passwords=InstantPasswords(),
        limits=Limits(max_login_tries=100, max_login_rate=0, login_timeout=1000),
    )
    async with running(server) as connect:
        alice = await connect()
        await alice.login("alice", "alice-password")
        twin = await connect("203.0.113.9")
        await twin.expect("USERNAME")
        await twin.send_line("username: aIice")
        refusal = await twin.expect("ERROR")
        assert "aIice reads too much like alice" in refusal
        await twin.expect("USERNAME")  # asked again: another name will do
        assert (await twin.login("alicia", "alicia-password", greeted=True)).startswith(
            "Registered alicia"
        )
        again = await connect()
        assert "Welcome back alice" in await again.login("ALICE", "alice-password")


def test_an_older_database_gets_the_index(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    store = SqliteStore(db)
    store.create_account("alice", "hash", 1.0)
    store._db.execute("UPDATE accounts SET skeleton = NULL")  # as version 4 left it
    store.close()
    store = SqliteStore(db)
    assert store.find_lookalike("a1ice") == "alice"
    assert store.find_lookalike("alice") is None  # one's own name is no look-alike
    store.close()
