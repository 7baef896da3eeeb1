"""Spreading password guesses over instances gains an attacker nothing
(rendezvous/login_guard.py on a real Redis): the delays after wrong
passwords, the one pending attempt per account and the registration rate
are the service's, not each instance's.

Two guards with their own connections are two instances. Waits are read
from the guard's answer (Redis's clock), never measured with sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from rendezvous.accounts import BASE_DELAY
from rendezvous.login_guard import Pending, RedisLoginGuard
from tests.redis_lab import RedisServer, clients

SOURCE, OTHER_SOURCE = "203.0.113.7", "198.51.100.9"


@pytest.fixture
async def guards(redis: RedisServer) -> AsyncIterator[tuple[RedisLoginGuard, RedisLoginGuard]]:
    async with clients(redis) as (one, two):
        yield RedisLoginGuard(one, 3), RedisLoginGuard(two, 3)


async def fail(guard: RedisLoginGuard, account: str, source: str) -> float:
    wait = await guard.admit(account, source)
    assert not isinstance(wait, Pending)
    await guard.verdict(account, source, False)
    return wait


async def test_one_pending_attempt_per_account_on_the_whole_service(
    guards: tuple[RedisLoginGuard, RedisLoginGuard],
) -> None:
    a, b = guards
    assert await a.admit("alice", SOURCE) == 0.0
    assert isinstance(await b.admit("ALICE", OTHER_SOURCE), Pending)
    await a.verdict("alice", SOURCE, None)  # given up unjudged: counts nothing
    assert await b.admit("alice", OTHER_SOURCE) == 0.0


async def test_wrong_passwords_on_one_instance_slow_the_next_on_another(
    guards: tuple[RedisLoginGuard, RedisLoginGuard],
) -> None:
    a, b = guards
    for _ in range(3):
        await fail(a, "alice", SOURCE)
    # Three failures: the next attempt, from another address and another
    # instance, waits the account's delay (0.5 s doubling: 2 s), less the
    # moments the test itself took.
    wait = await b.admit("alice", OTHER_SOURCE)
    assert isinstance(wait, float) and BASE_DELAY * 4 - 0.5 < wait <= BASE_DELAY * 4
    await b.verdict("alice", OTHER_SOURCE, True)  # the owner got in: the account's count clears
    assert await a.admit("alice", OTHER_SOURCE) == 0.0
    await a.verdict("alice", OTHER_SOURCE, True)


async def test_an_address_guessing_at_many_accounts_is_slowed_everywhere(
    guards: tuple[RedisLoginGuard, RedisLoginGuard],
) -> None:
    a, b = guards
    for name in ("u1", "u2", "u3"):
        await fail(a, name, SOURCE)
    wait = await b.admit("u4", SOURCE)
    assert isinstance(wait, float) and wait > BASE_DELAY * 4 - 0.5


async def test_attempts_booked_at_once_are_spaced_a_delay_apart(
    guards: tuple[RedisLoginGuard, RedisLoginGuard],
) -> None:
    a, b = guards
    await fail(a, "bob", SOURCE)
    await fail(b, "bob", SOURCE)  # two failures: a 1 s delay
    first = await a.admit("bob", SOURCE)
    await a.verdict("bob", SOURCE, None)  # still waiting, released: the booking stays
    second = await b.admit("bob", SOURCE)
    assert isinstance(first, float) and isinstance(second, float)
    assert second >= first + BASE_DELAY * 2 - 0.2


async def test_the_registration_rate_is_the_services(
    guards: tuple[RedisLoginGuard, RedisLoginGuard],
) -> None:
    a, b = guards
    took = []

    async def register(guard: RedisLoginGuard) -> None:
        took.append(await guard.admit_registration())

    async with trio.open_nursery() as nursery:
        for guard in (a, b, a, b, a, b):
            nursery.start_soon(register, guard)
    assert sorted(took) == [False, False, False, True, True, True]  # 3 a minute in all
