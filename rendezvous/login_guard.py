"""The slow-downs of the login dialogue, shared by every instance.

On one instance the hash queue (:mod:`rendezvous.hashqueue`) keeps them in
memory: growing delays after wrong passwords per account and per address
(:class:`~rendezvous.accounts.FailedLogins`), one pending attempt per
account, and a cap on registrations a minute. Several instances behind one
name would each keep their own, and an attacker spreading guesses over N
instances would get N times the guesses. :class:`RedisLoginGuard` keeps the
same three rules in Redis instead, each one Lua script (atomic, with Redis's
clock, so the instances' clocks do not matter):

* ``admit(account, source)`` -- refused while another attempt at the account
  is pending anywhere; otherwise the attempt is booked and the seconds it
  must wait come back (the same delays as FailedLogins: 0.5 s doubling to
  30 s, forgotten after 15 quiet minutes; attempts sent at once are spaced a
  full delay apart).
* ``verdict(account, source, ok)`` -- a wrong password counts for the account
  and the address, a right one clears the account's count; either way the
  account is no longer pending.
* ``admit_registration()`` -- a token bucket of ``--max-new-accounts`` a minute
  for the whole service.

:class:`LocalLoginGuard` (one instance) admits everything at once: its hash
queue already does all of this in memory.
"""

from __future__ import annotations

from typing import Protocol

import coredis

from rendezvous.accounts import BASE_DELAY, FORGET_AFTER, MAX_DELAY
from rendezvous.redis_shared import PREFIX, guarded

#: Seconds an attempt may stay pending (its verdict clears it sooner); a crashed
#: instance's attempt blocks that account for no longer than this.
PENDING_FOR = 30.0

_ADMIT = """
local P, acct, src = ARGV[1], ARGV[2], ARGV[3]
local base, cap, forget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if not redis.call('SET', P .. 'pend:' .. acct, '1', 'NX', 'PX', ARGV[7]) then
  return {'pending'}
end
local keys = {P .. 'fail:a:' .. acct, P .. 'fail:s:' .. src}
local waits = {}
local start = now
for i, key in ipairs(keys) do
  local h = redis.call('HMGET', key, 'failures', 'last', 'booked')
  local failures, last = tonumber(h[1] or '0'), tonumber(h[2] or '0')
  if failures > 0 and now - last <= forget then
    local wait = math.min(cap, base * 2 ^ (failures - 1))
    waits[i] = wait
    start = math.max(start, last + wait, tonumber(h[3] or '0'))
  end
end
for i, key in ipairs(keys) do
  if waits[i] then
    local booked = tonumber(redis.call('HGET', key, 'booked') or '0')
    redis.call('HSET', key, 'booked', tostring(math.max(booked, start + waits[i])))
  end
end
return {'ok', tostring(start - now)}
"""

_VERDICT = """
local P, acct, src, ok, forget = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
redis.call('DEL', P .. 'pend:' .. acct)
if ok == '1' then
  redis.call('DEL', P .. 'fail:a:' .. acct)
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, key in ipairs({P .. 'fail:a:' .. acct, P .. 'fail:s:' .. src}) do
  local last = tonumber(redis.call('HGET', key, 'last') or '0')
  if now - last > forget then redis.call('DEL', key) end
  redis.call('HINCRBY', key, 'failures', 1)
  redis.call('HSET', key, 'last', tostring(now))
  redis.call('PEXPIRE', key, math.floor(forget * 1000))
end
return 1
"""

_BUCKET = """
local key, per_minute = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', key, 'tokens', 'at')
local burst = math.max(1, per_minute)
local tokens = tonumber(h[1] or tostring(burst))
local at = tonumber(h[2] or tostring(now))
tokens = math.min(burst, tokens + (now - at) * per_minute / 60)
local took = 0
if tokens >= 1 then tokens = tokens - 1; took = 1 end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', key, 120000)
return took
"""


class Pending:
    """Another attempt at this account is pending (on some instance)."""


class LoginGuard(Protocol):
    async def admit(self, account: str, source: str) -> float | Pending: ...
    async def verdict(self, account: str, source: str, ok: bool | None) -> None: ...
    async def admit_registration(self) -> bool: ...


class LocalLoginGuard:
    """One instance: the hash queue does it all in memory."""

    async def admit(self, account: str, source: str) -> float | Pending:
        return 0.0

    async def verdict(self, account: str, source: str, ok: bool | None) -> None:
        return None

    async def admit_registration(self) -> bool:
        return True


class RedisLoginGuard:
    def __init__(
        self,
        client: coredis.Redis[str],
        new_accounts_per_minute: float,
        prefix: str = PREFIX,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.per_minute = new_accounts_per_minute
        self._admit = client.register_script(_ADMIT)
        self._verdict = client.register_script(_VERDICT)
        self._bucket = client.register_script(_BUCKET)

    async def admit(self, account: str, source: str) -> float | Pending:
        args = [
            self.prefix, account.lower(), source, BASE_DELAY, MAX_DELAY, FORGET_AFTER,
            int(PENDING_FOR * 1000),
        ]  # fmt: skip
        answer = await guarded(lambda: self._admit(args=args))
        if answer[0] == "pending":
            return Pending()
        return max(0.0, float(answer[1]))

    async def verdict(self, account: str, source: str, ok: bool | None) -> None:
        """``ok`` None: the attempt was given up before it was judged."""
        if ok is None:
            await guarded(lambda: self.r.delete([f"{self.prefix}pend:{account.lower()}"]))
            return
        args = [self.prefix, account.lower(), source, "1" if ok else "0", FORGET_AFTER]
        await guarded(lambda: self._verdict(args=args))

    async def admit_registration(self) -> bool:
        if self.per_minute <= 0:
            return True
        args = [self.prefix + "newaccounts", self.per_minute]
        return bool(await guarded(lambda: self._bucket(args=args)))
