"""The contract of the shared-state ports (rendezvous/shared.py), run against
every implementation: this process's own (SQLite and memory) and Redis.

"Two instances" are two independent objects over the same storage: for
Redis two clients with their own connections, as two processes would have.
The races are real: both registrations (or redemptions) are in flight at
once, in one trio nursery, and exactly one may win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from rendezvous.redis_shared import RedisShared
from rendezvous.shared import LocalAccountBook, LocalClaims, LocalTokenBook, Taken
from rendezvous.store import Account, SqliteStore
from tests.redis_lab import RedisServer, clients


class Pair:
    """Two instances' views of one shared state."""

    def __init__(self, one: object, two: object) -> None:
        self.one = one
        self.two = two


class LocalShared:
    """The three single-process ports as one object, the shape of RedisShared."""

    def __init__(self, *ports: object) -> None:
        self._ports = ports

    def __getattr__(self, name: str) -> object:
        for port in self._ports:
            if hasattr(port, name):
                return getattr(port, name)
        raise AttributeError(name)


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    if request.param == "local":
        store = SqliteStore(tmp_path / "db.sqlite3")
        accounts, tokens, claims = LocalAccountBook(store), LocalTokenBook(), LocalClaims()

        one = LocalShared(accounts, tokens, claims)
        yield Pair(one, one)
        store.close()
        return
    server: RedisServer = request.getfixturevalue("redis")
    async with clients(server) as (one, two):
        yield Pair(RedisShared(one), RedisShared(two))


async def test_a_registered_name_is_found_by_every_instance(pair: Pair) -> None:
    made = await pair.one.register("Alice", "hash-1", 100.0)  # type: ignore[attr-defined]
    assert isinstance(made, Account) and made.name == "Alice"
    got = await pair.two.get("alice")  # type: ignore[attr-defined]
    assert got is not None and got.name == "Alice" and got.pw_hash == "hash-1"
    assert await pair.two.get("bob") is None  # type: ignore[attr-defined]


async def test_a_name_registered_at_once_on_two_instances_exists_once(pair: Pair) -> None:
    results: list[object] = []

    async def register(book: object, pw: str) -> None:
        results.append(await book.register("carol", pw, 100.0))  # type: ignore[attr-defined]

    for _ in range(5):  # several rounds: the interleaving differs
        results.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(register, pair.one, "first")
            nursery.start_soon(register, pair.two, "second")
        accounts = [r for r in results if isinstance(r, Account)]
        taken = [r for r in results if isinstance(r, Taken)]
        held = await pair.one.get("carol")  # type: ignore[attr-defined]
        assert held is not None
        if accounts:  # the first round: one won
            assert len(accounts) == 1 and len(taken) == 1 and taken[0].same
            assert held.pw_hash == accounts[0].pw_hash
        else:  # later rounds: both lose to the first round's winner
            assert len(taken) == 2


async def test_names_that_read_alike_are_registered_once(pair: Pair) -> None:
    results: list[object] = []

    async def register(book: object, name: str) -> None:
        results.append(await book.register(name, "h", 100.0))  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(register, pair.one, "dave")
        nursery.start_soon(register, pair.two, "DAVE")
        nursery.start_soon(register, pair.two, "clave")  # "cl" reads as "d"
    made = [r for r in results if isinstance(r, Account)]
    assert len(made) == 1, results
    assert all(isinstance(r, Taken) for r in results if r is not made[0])
    assert await pair.two.lookalike("c1ave") == made[0].name  # type: ignore[attr-defined]
    assert await pair.two.lookalike(made[0].name) is None  # type: ignore[attr-defined]


async def test_a_password_change_is_seen_everywhere(pair: Pair) -> None:
    await pair.one.register("erin", "old", 100.0)  # type: ignore[attr-defined]
    await pair.two.set_password_hash("ERIN", "new")  # type: ignore[attr-defined]
    got = await pair.one.get("erin")  # type: ignore[attr-defined]
    assert got is not None and got.pw_hash == "new"


async def test_a_resume_token_is_single_use_across_instances(pair: Pair) -> None:
    token = await pair.one.issue("frank", "198.51.100.4", 10.0)  # type: ignore[attr-defined]
    wins: list[bool] = []

    async def redeem(book: object) -> None:
        wins.append(await book.redeem("frank", token, "198.51.100.4", 11.0))  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(redeem, pair.one)
        nursery.start_soon(redeem, pair.two)
    assert sorted(wins) == [False, True]


async def test_a_token_is_bound_to_its_address_and_burnt_by_a_wrong_one(pair: Pair) -> None:
    token = await pair.one.issue("gina", "198.51.100.4", 10.0)  # type: ignore[attr-defined]
    assert not await pair.two.redeem("gina", token, "203.0.113.66", 11.0)  # type: ignore[attr-defined]
    assert not await pair.two.redeem("gina", token, "198.51.100.4", 11.0)  # type: ignore[attr-defined]


async def test_a_new_token_or_a_revoke_ends_the_old_one(pair: Pair) -> None:
    old = await pair.one.issue("hugo", "198.51.100.4", 10.0)  # type: ignore[attr-defined]
    new = await pair.two.issue("hugo", "198.51.100.4", 10.0)  # type: ignore[attr-defined]
    assert not await pair.one.redeem("hugo", old, "198.51.100.4", 11.0)  # type: ignore[attr-defined]
    await pair.one.revoke("HUGO")  # type: ignore[attr-defined]
    assert not await pair.two.redeem("hugo", new, "198.51.100.4", 11.0)  # type: ignore[attr-defined]


async def test_login_epochs_grow_across_instances_and_never_repeat(pair: Pair) -> None:
    seen: list[int] = []

    async def claim(book: object) -> None:
        for _ in range(20):
            seen.append(await book.claim("ivan"))  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim, pair.one)
        nursery.start_soon(claim, pair.two)
    assert len(set(seen)) == 40
    assert all(e > 0 for e in seen)
