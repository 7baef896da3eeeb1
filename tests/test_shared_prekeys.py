"""One-time prekeys in a cluster (rendezvous/shared_prekeys.py, Redis): each
goes to one sender only, even when two instances hand them out at once; the
cap holds; a new identity key drops what the old one signed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from rendezvous.shared_prekeys import RedisPrekeys
from tests.redis_lab import RedisServer, clients


@pytest.fixture
async def desks(redis: RedisServer) -> AsyncIterator[tuple[RedisPrekeys, RedisPrekeys]]:
    async with clients(redis) as (one, two):
        yield RedisPrekeys(one), RedisPrekeys(two)


async def test_each_one_time_prekey_goes_to_one_sender_across_instances(
    desks: tuple[RedisPrekeys, RedisPrekeys],
) -> None:
    one, two = desks
    forms = [(i, f"{i}:PUBLIC{i}") for i in range(1, 41)]
    assert await one.publish("Bob", "1:SPK:SIG", forms, cap=100) == 40
    taken: list[str] = []

    async def take(desk: RedisPrekeys) -> None:
        for _ in range(10):
            got, _left = await desk.take("bob", 3)
            taken.extend(got)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, one)
        nursery.start_soon(take, two)
    assert sorted(taken) == sorted(f for _, f in forms)  # all 40 handed out, none twice
    assert await two.take("bob", 3) == ([], 0)
    assert await two.signed("BOB") == "1:SPK:SIG"


async def test_the_cap_holds_and_a_known_id_is_kept_as_it_was(
    desks: tuple[RedisPrekeys, RedisPrekeys],
) -> None:
    one, two = desks
    assert await one.publish("carol", "s", [(1, "1:A"), (2, "2:B")], cap=3) == 2
    assert await two.publish("carol", "s", [(2, "2:CHANGED"), (3, "3:C"), (4, "4:D")], cap=3) == 3
    got, left = await one.take("carol", 10)
    assert got == ["1:A", "2:B", "3:C"] and left == 0


async def test_a_new_identity_key_drops_the_old_prekeys(
    desks: tuple[RedisPrekeys, RedisPrekeys],
) -> None:
    one, two = desks
    await one.publish("dave", "s", [(1, "1:A")], cap=10)
    await two.drop("DAVE")
    assert await one.signed("dave") is None
    assert await one.take("dave", 1) == ([], 0)
