"""The cluster's trio driver (rendezvous/cluster_engine.py) in one process,
on a Redis of the module's own: two instances' engines and hubs, sessions
attached as the login dialogue attaches them. What is checked here is what
only the driver does: presence through pub/sub, the lease, a dead
instance's records forgotten (in every copy and in Redis), batches across.

Every wait is for the engine's own progress (a message applied, a lease
round done) under a deadline: ``until``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import trio
from coredis.tokens import PureToken

from chathack.protocol import Msg, UserLine
from rendezvous.cluster_engine import ClusterEngine
from rendezvous.cluster_store import AccountReplica, ClusterStore
from rendezvous.hub import Hub, Session
from rendezvous.redis_shared import PREFIX, RedisShared, connect
from rendezvous.store import Account, SqliteStore
from tests.redis_lab import RedisServer, clients
from tests.test_hub import FakeOutbox, take

DEADLINE = 10.0
LEASE = 0.6


@dataclass
class Node:
    engine: ClusterEngine
    hub: Hub
    shared: RedisShared
    scope: trio.CancelScope

    async def login(self, name: str) -> Session:
        account = await self.shared.get(name)
        assert isinstance(account, Account)
        session = Session(FakeOutbox(), "198.51.100.4", remote_port=40000)
        session.epoch = await self.shared.claim(name)
        self.hub.attach(session, account, 100.0)
        return session

    async def until(self, cond: Callable[[], bool]) -> None:
        with trio.fail_after(DEADLINE):
            while not cond():
                await self.engine.progress()


@pytest.fixture
async def nodes(redis: RedisServer) -> AsyncIterator[dict[str, Node]]:
    async with clients(redis, 3) as (setup, *conns), trio.open_nursery() as nursery:
        for name in ("alice", "bob"):
            await RedisShared(setup).register(name, "h", 1.0)
        made: dict[str, Node] = {}
        for instance, client in zip(("A", "B"), conns, strict=True):
            shared = RedisShared(client)
            replica = AccountReplica()
            engine = ClusterEngine(shared, instance, replica, lease=LEASE)
            store = ClusterStore(SqliteStore(":memory:"), replica, engine.write, shared)
            hub = Hub(store, cluster=engine)
            engine.bind(hub)
            await engine.load()
            scope = trio.CancelScope()

            async def run(engine: ClusterEngine = engine, scope: trio.CancelScope = scope) -> None:
                with scope:
                    await engine.run()

            nursery.start_soon(run)
            made[instance] = Node(engine, hub, shared, scope)
        yield made
        nursery.cancel_scope.cancel()


async def test_presence_and_relay_cross_instances_through_redis(nodes: dict[str, Node]) -> None:
    a, b = nodes["A"], nodes["B"]
    alice = await a.login("alice")
    bob = await b.login("bob")
    await a.until(lambda: a.hub.roster.get("bob") is not None)
    await b.until(lambda: b.hub.roster.get("alice") is not None)
    a.hub.handle(alice, Msg("bob", "through redis"), 200.0)
    await b.until(lambda: bool(bob.outbox.data))  # type: ignore[attr-defined]
    assert take(bob) == [UserLine("alice", "through redis")]


async def test_a_dead_instances_users_are_forgotten_everywhere(
    nodes: dict[str, Node], redis: RedisServer
) -> None:
    a, b = nodes["A"], nodes["B"]
    await b.login("bob")
    await a.until(lambda: a.hub.roster.get("bob") is not None)
    b.scope.cancel()  # as a SIGKILL: nothing withdrawn, the lease just stops
    await a.until(lambda: a.hub.roster.get("bob") is None)
    # The next full read finds bob's record orphaned and removes it from Redis,
    # so neither this instance nor one started later takes it for presence.
    await a.until(lambda: a.engine.counts["presence of dead instances dropped"] > 0)
    async with connect(redis.url) as client:  # (clients() would empty the database)
        assert await client.hget(PREFIX + "presence", "bob") is None
    assert a.hub.roster.get("bob") is None


async def test_a_damaged_presence_record_is_replaced_not_a_dead_end(
    nodes: dict[str, Node], redis: RedisServer
) -> None:
    a, b = nodes["A"], nodes["B"]
    async with connect(redis.url) as client:
        await client.hset(PREFIX + "presence", {"bob": "not a record"})
    await b.login("bob")
    await a.until(lambda: a.hub.roster.get("bob") is not None)
    assert a.engine.counts["faults"] == 0 and b.engine.counts["faults"] == 0


async def test_accounts_registered_while_deaf_are_learnt_after_resubscribing(
    nodes: dict[str, Node], redis: RedisServer
) -> None:
    a = nodes["A"]
    async with connect(redis.url) as client:
        # An account whose announcement this instance missed (it was deaf).
        await client.hset(PREFIX + "acct:zed", {"name": "Zed", "pw_hash": "h", "last_seen": 5})
        await client.zadd(PREFIX + "seen", {"zed": 5.0})
        assert a.hub.store.get_account("zed") is None
        await client.client_kill(type_=PureToken.PUBSUB)  # every subscriber loses its link
    await a.until(lambda: a.hub.store.get_account("zed") is not None)
    account = a.hub.store.get_account("ZED")
    assert account is not None and account.name == "Zed"
