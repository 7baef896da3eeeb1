"""Prekeys in a cluster: published on any instance, handed out by any, each
one-time prekey to one sender only across all of them (Redis).

Keys under ``chathack:`` (names lower-case): ``spk:NAME`` the signed prekey
(wire form); ``opk:NAME`` a sorted set of one-time prekey ids and
``opkw:NAME`` a hash id -> wire form. Taking is one Lua script (pop the
lowest ids and their forms together), so two instances handing out at once
never give the same prekey twice. The checks that need no store (the
signature against the registered key, the name exists) run at once in the
hub's call; the Redis work runs in :meth:`SharedPrekeys.run`, in order, and
the answer (``PREKEYS``, ``PREKEY``, or a ``FAILED``) follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import coredis
import trio

from chathack.prekeys import (
    LOW_OPKS,
    MAX_OPKS_HELD,
    Bundle,
    OneTimePrekey,
    SignedPrekey,
    format_opk,
    format_spk,
    parse_opks,
    parse_spk,
)
from chathack.server_events import PrekeyBundle, PrekeyStock, ServerFlagEvent
from rendezvous.prekeys import check_publisher, unknown_user
from rendezvous.redis_shared import PREFIX, guarded
from rendezvous.session import Session
from rendezvous.shared import SharedStoreDown
from rendezvous.store import Store

log = logging.getLogger("chathack.rendezvous")

UNAVAILABLE_NOW = "The server could not do that now (its shared store is away); try again later"

# ARGV: prefix, name, cap, then ID, WIRE pairs. Returns how many are held.
_ADD = """
local P, name, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids, forms = P .. 'opk:' .. name, P .. 'opkw:' .. name
for i = 4, #ARGV, 2 do
  if redis.call('ZCARD', ids) >= cap then break end
  if redis.call('ZADD', ids, 'NX', tonumber(ARGV[i]), ARGV[i]) == 1 then
    redis.call('HSET', forms, ARGV[i], ARGV[i + 1])
  end
end
return redis.call('ZCARD', ids)
"""

# ARGV: prefix, name, n. Returns {forms..., left}.
_TAKE = """
local P, name = ARGV[1], ARGV[2]
local ids, forms = P .. 'opk:' .. name, P .. 'opkw:' .. name
local popped = redis.call('ZPOPMIN', ids, tonumber(ARGV[3]))
local out = {}
for i = 1, #popped, 2 do
  local form = redis.call('HGET', forms, popped[i])
  redis.call('HDEL', forms, popped[i])
  if form then out[#out + 1] = form end
end
out[#out + 1] = redis.call('ZCARD', ids)
return out
"""


@dataclass(frozen=True, slots=True)
class _Publish:
    session: Session
    spk: SignedPrekey
    opks: tuple[OneTimePrekey, ...]


@dataclass(frozen=True, slots=True)
class _HandOut:
    session: Session
    name: str  # the registered spelling
    count: int


@dataclass(frozen=True, slots=True)
class _Drop:
    name: str


class RedisPrekeys:
    """The prekey rows in Redis."""

    def __init__(self, client: coredis.Redis[str], prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._add = client.register_script(_ADD)
        self._take = client.register_script(_TAKE)

    async def publish(self, name: str, spk: str, opks: list[tuple[int, str]], cap: int) -> int:
        lower = name.lower()
        await guarded(lambda: self.r.set(self.prefix + "spk:" + lower, spk))
        args: list[Any] = [self.prefix, lower, cap]
        for opk_id, form in opks:
            args += [opk_id, form]
        return int(await guarded(lambda: self._add(args=args)))

    async def signed(self, name: str) -> str | None:
        return await guarded(lambda: self.r.get(self.prefix + "spk:" + name.lower()))

    async def take(self, name: str, n: int) -> tuple[list[str], int]:
        out = await guarded(lambda: self._take(args=[self.prefix, name.lower(), n]))
        return [str(f) for f in out[:-1]], int(out[-1])

    async def drop(self, name: str) -> None:
        lower = name.lower()
        keys = [self.prefix + k + lower for k in ("spk:", "opk:", "opkw:")]
        await guarded(lambda: self.r.delete(keys))


class SharedPrekeys:
    """The cluster's :class:`~rendezvous.prekeys.PrekeyService`."""

    def __init__(
        self,
        store: RedisPrekeys,
        accounts: Store,
        tell_owner: Callable[[str, ServerFlagEvent], None],
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.tell_owner = tell_owner  # the owner wherever it is online (time to top up)
        self._jobs: list[_Publish | _HandOut | _Drop] = []
        self._wake = trio.Event()

    def publish_for(
        self, session: Session, spk: SignedPrekey, opks: tuple[OneTimePrekey, ...]
    ) -> None:
        check_publisher(session.pubkey, spk)
        self._queue(_Publish(session, spk, opks))

    def hand_out_to(self, session: Session, name: str, count: int) -> None:
        account = self.accounts.get_account(name)
        if account is None:
            raise unknown_user(name)
        self._queue(_HandOut(session, account.name, count))

    def identity_changed(self, name: str) -> None:
        self._queue(_Drop(name))  # in order: a publish after it is kept

    def _queue(self, job: _Publish | _HandOut | _Drop) -> None:
        self._jobs.append(job)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            jobs, self._jobs = self._jobs, []
            for job in jobs:
                try:
                    await self._do(job)
                except SharedStoreDown as e:
                    log.error("prekeys: %s not done: %s", type(job).__name__, e)
                    if not isinstance(job, _Drop):
                        job.session.say("ERROR", UNAVAILABLE_NOW)
                except Exception:
                    # A bug or damaged data costs this request, never the instance.
                    log.exception("prekeys: %s failed", type(job).__name__)

    async def _do(self, job: _Publish | _HandOut | _Drop) -> None:
        match job:
            case _Publish(session, spk, opks):
                assert session.name is not None
                forms = [(o.id, format_opk(o)) for o in opks]
                held = await self.store.publish(session.name, format_spk(spk), forms, MAX_OPKS_HELD)
                session.tell(PrekeyStock(held))
            case _HandOut(session, name, count):
                spk = await self.store.signed(name)
                if spk is None:
                    session.tell(PrekeyBundle(Bundle(name, None)))
                    return
                words, left = await self.store.take(name, count)
                if words and left < LOW_OPKS:
                    self.tell_owner(name, PrekeyStock(left))
                bundle = Bundle(name, parse_spk(spk), parse_opks(words, len(words)))
                session.tell(PrekeyBundle(bundle))
            case _Drop(name):
                await self.store.drop(name)
