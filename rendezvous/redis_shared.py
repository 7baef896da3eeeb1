"""The shared state of several instances in Redis (through coredis, under trio).

Keys (all under ``chathack:``; one Redis database per service):

==========================  ===============================================
``acct:NAME``               hash: name, pw_hash, created_at, last_ip,
                            last_port, last_seen, pubkey (NAME lower-case)
``skel``                    hash: look-alike skeleton -> the name that has it
``seen``                    sorted set: name -> last seen (``::users``)
``token:NAME``              hash: digest, source; expires with the token
``epoch:NAME``              counter: the fencing epoch of NAME's logins
``presence``                hash: name -> presence record (JSON)
``inst:ID``                 an instance's lease: gone when it stops renewing
==========================  ===============================================

Channels: ``chathack:presence`` (Here/Left), ``chathack:accounts`` (a name
registered or its key changed), ``chathack:inst:ID`` (operations for ID).

Every check-then-write is one Lua script, so it is atomic on the Redis
primary: a name is registered once, a token redeemed once, a presence
record replaced only by a newer epoch. A call that fails to reach Redis
raises :class:`~rendezvous.shared.SharedStoreDown`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import coredis
import coredis.exceptions

from chathack.errors import RemoteProtocolError
from rendezvous.accounts import TOKEN_TTL
from rendezvous.cluster_wire import PresenceRecord, decode_record, encode_record
from rendezvous.counts import REDIS_BOUNDS, Histogram
from rendezvous.lookalike import skeleton
from rendezvous.shared import SharedStoreDown, SharedStoreFault, Taken
from rendezvous.store import Account

PREFIX = "chathack:"
PRESENCE_CHANNEL = PREFIX + "presence"
ACCOUNTS_CHANNEL = PREFIX + "accounts"
#: Seconds a Redis command (or a connection attempt) may take before it counts as down.
COMMAND_TIMEOUT = 2.0

T = TypeVar("T")

_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'same', redis.call('HGET', KEYS[1], 'name')}
end
local other = redis.call('HGET', KEYS[2], ARGV[2])
if other and other ~= ARGV[5] then
  local spelled = redis.call('HGET', KEYS[4] .. other, 'name')
  return {'alike', spelled or other}
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'pw_hash', ARGV[3],
           'created_at', ARGV[4], 'last_seen', ARGV[4])
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('PUBLISH', KEYS[5], cjson.encode({ARGV[1], false, tonumber(ARGV[4])}))
return {'ok'}
"""

_REDEEM = """
local held = redis.call('HMGET', KEYS[1], 'digest', 'source')
if not held[1] or held[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if held[2] ~= ARGV[2] then return 0 end
return 1
"""

# Presence records are JSON arrays: [name, instance, epoch, ...].
_PRESENCE_SET = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local ok, rec = pcall(cjson.decode, cur or 'null')
-- A record that is not one (damaged) is replaced.
if ok and type(rec) == 'table' and tonumber(rec[3]) and tonumber(rec[3]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], '["here",' .. ARGV[3] .. ']')
return 1
"""

_PRESENCE_DEL = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, rec = pcall(cjson.decode, cur)
if not ok or type(rec) ~= 'table' then return 0 end
if rec[2] ~= ARGV[2] or tonumber(rec[3]) ~= tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], cjson.encode({'left', rec[1], rec[2], rec[3]}))
return 1
"""


def connect(url: str) -> coredis.Redis[str]:
    """A client for ``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS); use it
    as ``async with client:`` (coredis keeps its connection pool in a task group)."""
    return coredis.Redis.from_url(
        url,
        decode_responses=True,
        stream_timeout=COMMAND_TIMEOUT,
        connect_timeout=COMMAND_TIMEOUT,
    )


#: Replies of a Redis that cannot take writes for now (out of memory under
#: ``noeviction``, a failing disk, loading, a replica): an outage, not a fault.
_UNAVAILABLE = ("OOM", "MISCONF", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY")


def store_error(e: BaseException) -> SharedStoreDown:
    """What a failed Redis call means to the rendezvous: down (try again) or a fault."""
    text = f"Redis: {type(e).__name__}: {e}"
    if isinstance(e, coredis.exceptions.ConnectionError | OSError | TimeoutError):
        return SharedStoreDown(text)
    if isinstance(e, coredis.exceptions.ResponseError) and str(e).startswith(_UNAVAILABLE):
        return SharedStoreDown(text)
    if isinstance(e, coredis.exceptions.TimeoutError):
        return SharedStoreDown(text)
    return SharedStoreFault(text)


class RedisStats:
    """Every guarded Redis call of this process, for the operators' metrics:
    how many, how many failed (down: unreachable; fault: refused), how long."""

    __slots__ = ("calls", "errors", "seconds")

    def __init__(self) -> None:
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.seconds = Histogram(REDIS_BOUNDS)


#: One client per process (the instance's): its calls, counted in :func:`guarded`.
REDIS_STATS = RedisStats()


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Run one Redis call; a lost or unreachable Redis becomes :class:`SharedStoreDown`,
    a refused command :class:`~rendezvous.shared.SharedStoreFault`."""
    stats = REDIS_STATS
    stats.calls += 1
    started = time.perf_counter()
    try:
        return await call()
    except (coredis.exceptions.RedisError, OSError, TimeoutError) as e:
        error = store_error(e)
        stats.errors["down" if isinstance(error, SharedStoreDown) else "fault"] += 1
        raise error from e
    finally:
        stats.seconds.observe(time.perf_counter() - started)


def _digest(token: str) -> str:
    return hashlib.blake2b(token.encode(), digest_size=32).hexdigest()


def _account(fields: dict[str, Any]) -> Account | None:
    if not fields or "name" not in fields:
        return None

    def num(key: str) -> float | None:
        v = fields.get(key)
        return None if v in (None, "") else float(v)

    port = num("last_port")
    return Account(
        fields["name"],
        fields.get("pw_hash", ""),
        num("created_at") or 0.0,
        fields.get("last_ip") or None,
        None if port is None else int(port),
        num("last_seen"),
        fields.get("pubkey") or None,
    )


class RedisShared:
    """Accounts, resume tokens, login epochs and presence in one Redis."""

    def __init__(self, client: coredis.Redis[str], ttl: float = TOKEN_TTL) -> None:
        self.r = client
        self.ttl = ttl
        self._register = client.register_script(_REGISTER)
        self._redeem = client.register_script(_REDEEM)
        self._presence_set = client.register_script(_PRESENCE_SET)
        self._presence_del = client.register_script(_PRESENCE_DEL)

    async def ping(self) -> None:
        """Redis answers (or :class:`SharedStoreDown` says why not)."""
        await guarded(lambda: self.r.ping())

    # -- AccountBook ------------------------------------------------------------
    async def get(self, name: str) -> Account | None:
        return _account(await guarded(lambda: self.r.hgetall(PREFIX + "acct:" + name.lower())))

    async def lookalike(self, name: str) -> str | None:
        other = await guarded(lambda: self.r.hget(PREFIX + "skel", skeleton(name)))
        if other is None or other == name.lower():
            return None
        spelled = await guarded(lambda: self.r.hget(PREFIX + "acct:" + other, "name"))
        return spelled or other

    async def register(self, name: str, pw_hash: str, now: float) -> Account | Taken:
        lower = name.lower()
        keys = [
            PREFIX + "acct:" + lower,
            PREFIX + "skel",
            PREFIX + "seen",
            PREFIX + "acct:",
            ACCOUNTS_CHANNEL,
        ]
        args = [name, skeleton(name), pw_hash, repr(now), lower]
        answer = await guarded(lambda: self._register(keys=keys, args=args))
        if answer[0] == "same":
            return Taken(str(answer[1]), True)
        if answer[0] == "alike":
            return Taken(str(answer[1]), False)
        return Account(name, pw_hash, now, last_seen=now)

    async def set_password_hash(self, name: str, pw_hash: str) -> None:
        await guarded(lambda: self.r.hset(PREFIX + "acct:" + name.lower(), {"pw_hash": pw_hash}))

    async def set_pubkey(self, name: str, pubkey: str) -> None:
        await guarded(lambda: self.r.hset(PREFIX + "acct:" + name.lower(), {"pubkey": pubkey}))
        message = json.dumps([name, pubkey, None])
        await guarded(lambda: self.r.publish(ACCOUNTS_CHANNEL, message))

    async def record(self, name: str, fields: dict[str, str | float | int]) -> None:
        """Login metadata (last_ip, last_port, last_seen): best effort."""
        lower = name.lower()
        await guarded(lambda: self.r.hset(PREFIX + "acct:" + lower, fields))
        if "last_seen" in fields:
            seen = float(fields["last_seen"])
            await guarded(lambda: self.r.zadd(PREFIX + "seen", {lower: seen}))

    async def directory(self, batch: int = 500) -> AsyncIterator[tuple[str, str | None, float]]:
        """Every account as (name, pubkey, last_seen): the replica's first fill."""
        names = await guarded(lambda: self.r.zrange(PREFIX + "seen", 0, -1, withscores=True))
        lowers = [(str(m), float(s)) for m, s in names]
        for i in range(0, len(lowers), batch):
            chunk = lowers[i : i + batch]
            async with self._pipeline() as pipe:
                for lower, _ in chunk:
                    pipe.hmget(PREFIX + "acct:" + lower, ["name", "pubkey"])
            for (lower, seen), got in zip(chunk, pipe.results or (), strict=False):
                spelled, pubkey = got
                yield (spelled or lower), (pubkey or None), seen

    @asynccontextmanager
    async def _pipeline(self) -> AsyncIterator[Any]:
        try:
            async with self.r.pipeline(transaction=False) as pipe:
                yield pipe
        except (coredis.exceptions.RedisError, OSError, TimeoutError) as e:
            raise store_error(e) from e

    # -- TokenBook --------------------------------------------------------------
    async def issue(self, name: str, source: str, now: float) -> str:
        token = secrets.token_urlsafe(24)
        key = PREFIX + "token:" + name.lower()
        async with self._pipeline() as pipe:
            pipe.delete([key])
            pipe.hset(key, {"digest": _digest(token), "source": source})
            pipe.pexpire(key, int(self.ttl * 1000))
        return token

    async def redeem(self, name: str, token: str, source: str, now: float) -> bool:
        key = PREFIX + "token:" + name.lower()
        answer = await guarded(lambda: self._redeem(keys=[key], args=[_digest(token), source]))
        return hmac.compare_digest(str(answer), "1")

    async def revoke(self, name: str) -> None:
        await guarded(lambda: self.r.delete([PREFIX + "token:" + name.lower()]))

    # -- PresenceClaims and presence ------------------------------------------------
    async def claim(self, name: str) -> int:
        return int(await guarded(lambda: self.r.incr(PREFIX + "epoch:" + name.lower())))

    async def set_presence(self, record: PresenceRecord) -> bool:
        """Record (and announce) ``record``; False if a newer login holds the name."""
        keys = [PREFIX + "presence", PRESENCE_CHANNEL]
        args = [record.name.lower(), record.epoch, encode_record(record)]
        return bool(await guarded(lambda: self._presence_set(keys=keys, args=args)))

    async def drop_presence(self, name: str, instance: str, epoch: int) -> bool:
        """Forget (and announce) ``name``'s record if it is that session's."""
        keys = [PREFIX + "presence", PRESENCE_CHANNEL]
        args = [name.lower(), instance, epoch]
        return bool(await guarded(lambda: self._presence_del(keys=keys, args=args)))

    async def all_presence(self) -> tuple[list[PresenceRecord], int]:
        """Every record (malformed ones skipped), and how many were skipped."""
        raw = await guarded(lambda: self.r.hgetall(PREFIX + "presence"))
        records, bad = [], 0
        for text in raw.values():
            try:
                records.append(decode_record(text))
            except RemoteProtocolError:
                bad += 1
        return records, bad

    async def renew_lease(self, instance: str, lease: float) -> None:
        key = PREFIX + "inst:" + instance
        await guarded(lambda: self.r.set(key, "1", px=int(lease * 1000)))

    async def drop_lease(self, instance: str) -> None:
        await guarded(lambda: self.r.delete([PREFIX + "inst:" + instance]))

    async def live(self, instances: list[str]) -> set[str]:
        """Which of ``instances`` hold a lease now."""
        if not instances:
            return set()
        keys = [PREFIX + "inst:" + i for i in instances]
        got = await guarded(lambda: self.r.mget(keys))
        return {i for i, v in zip(instances, got, strict=True) if v is not None}

    async def count_accounts(self) -> int:
        return int(await guarded(lambda: self.r.zcard(PREFIX + "seen")))
