"""The mailbox's storage in Redis, shared by every instance (``--redis``).

The same rows as the SQLite mailbox (rendezvous/store.py), as keys under
``chathack:`` (names lower-case)::

    mailseq                counter: the store order (never reused, like AUTOINCREMENT)
    m:SEQ                  hash: recipient, sender, msg_id, stamp, size, state, body
    mid:SENDER:ID          SEQ: one message per (sender, id) -- a retried mail: stores nothing
    mq:NAME                sorted set: NAME's waiting messages, by SEQ
    mu:NAME                hash: count, bytes waiting for NAME (the quota)
    mfrom:SENDER           hash: recipient -> messages of SENDER waiting (::mailbox)
    mexp / mdone           sorted sets by stamp: waiting (expiry) / delivered (forgotten later)
    rseq, r:RSEQ, rq:NAME, rid:OWNER:PEER:ID:FLAG, rexp
                           the receipts the same way, unique per (owner, peer, id, flag)

Every change is one Lua script, atomic on the primary: a message is stored
once however often and wherever it is retried, the quota is checked and
charged in the same step, an ``ack:`` moves a message and makes its receipt
together. Durability is Redis's: with ``appendonly yes`` and ``appendfsync
always`` (docs/OPERATIONS.md) a write is on the primary's disk before Redis
answers, so ``STORED`` -- sent only after that answer -- survives a crash of
Redis. Scripts sent in one pipeline share that fsync (group commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import coredis
import coredis.exceptions
from coredis.tokens import PureToken

from rendezvous.redis_shared import PREFIX, guarded, store_error
from rendezvous.store import StoredMail, StoredReceipt

# A receipt is added by this Lua function, shared by the scripts below.
_ADD_RECEIPT = """
local function add_receipt(owner, peer, msg_id, flag, stamp)
  local rid = P .. 'rid:' .. string.lower(owner) .. ':' .. string.lower(peer) .. ':'
              .. msg_id .. ':' .. flag
  if redis.call('EXISTS', rid) == 1 then return end
  local rseq = redis.call('INCR', P .. 'rseq')
  redis.call('SET', rid, rseq)
  redis.call('HSET', P .. 'r:' .. rseq, 'owner', owner, 'peer', peer, 'msg_id', msg_id,
             'flag', flag, 'stamp', stamp)
  redis.call('ZADD', P .. 'rq:' .. string.lower(owner), rseq, rseq)
  redis.call('ZADD', P .. 'rexp', stamp, rseq)
end

local function unqueue(seq, m)
  local r = string.lower(m[1])
  redis.call('ZREM', P .. 'mq:' .. r, seq)
  redis.call('ZREM', P .. 'mexp', seq)
  redis.call('HINCRBY', P .. 'mu:' .. r, 'count', -1)
  redis.call('HINCRBY', P .. 'mu:' .. r, 'bytes', -tonumber(m[5]))
  local from = P .. 'mfrom:' .. string.lower(m[2])
  if redis.call('HINCRBY', from, r, -1) <= 0 then redis.call('HDEL', from, r) end
end
"""

# KEYS: none (all keys derive from the prefix; one Redis, not a Redis Cluster).
# ARGV: prefix, recipient, sender, msg_id, body, stamp, size, quota_count, quota_bytes
_STORE = """
local P = ARGV[1]
local rcpt, sender, msg_id = ARGV[2], ARGV[3], ARGV[4]
local idkey = P .. 'mid:' .. string.lower(sender) .. ':' .. msg_id
local seq = redis.call('GET', idkey)
if seq then
  return {'dup', redis.call('HGET', P .. 'm:' .. seq, 'recipient') or rcpt}
end
local r = string.lower(rcpt)
local usage = redis.call('HMGET', P .. 'mu:' .. r, 'count', 'bytes')
local count, bytes = tonumber(usage[1] or '0'), tonumber(usage[2] or '0')
if count >= tonumber(ARGV[8]) or bytes + tonumber(ARGV[7]) > tonumber(ARGV[9]) then
  return {'full', count, bytes}
end
seq = redis.call('INCR', P .. 'mailseq')
redis.call('HSET', P .. 'm:' .. seq, 'recipient', rcpt, 'sender', sender, 'msg_id', msg_id,
           'stamp', ARGV[6], 'size', ARGV[7], 'state', 0, 'body', ARGV[5])
redis.call('SET', idkey, seq)
redis.call('ZADD', P .. 'mq:' .. r, seq, seq)
redis.call('ZADD', P .. 'mexp', ARGV[6], seq)
redis.call('HINCRBY', P .. 'mu:' .. r, 'count', 1)
redis.call('HINCRBY', P .. 'mu:' .. r, 'bytes', tonumber(ARGV[7]))
redis.call('HINCRBY', P .. 'mfrom:' .. string.lower(sender), r, 1)
return {'ok', seq}
"""

# ARGV: prefix, me, state (1 delivered, 2 read), stamp, then ORIGIN, ID pairs.
# Returns the senders that got a receipt.
_ADVANCE = (
    "local P = ARGV[1]\n"
    + _ADD_RECEIPT
    + """
local me, state, stamp = string.lower(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local owners = {}
for i = 5, #ARGV, 2 do
  local seq = redis.call('GET', P .. 'mid:' .. string.lower(ARGV[i]) .. ':' .. ARGV[i + 1])
  if seq then
    local m = redis.call('HMGET', P .. 'm:' .. seq,
                         'recipient', 'sender', 'msg_id', 'state', 'size')
    local was = tonumber(m[4] or '9')
    if m[1] and string.lower(m[1]) == me and was < state then
      if was == 0 then
        unqueue(seq, m)
        redis.call('HDEL', P .. 'm:' .. seq, 'body')
        redis.call('ZADD', P .. 'mdone', stamp, seq)
        add_receipt(m[2], m[1], m[3], 'DELIVERED', stamp)
      end
      if state == 2 then add_receipt(m[2], m[1], m[3], 'READ', stamp) end
      redis.call('HSET', P .. 'm:' .. seq, 'state', state)
      owners[#owners + 1] = m[2]
    end
  end
end
return owners
"""
)

# ARGV: prefix, owner, then PEER, ID, FLAG triples.
_DROP_RECEIPTS = """
local P = ARGV[1]
local owner = string.lower(ARGV[2])
for i = 3, #ARGV, 3 do
  local rid = P .. 'rid:' .. owner .. ':' .. string.lower(ARGV[i]) .. ':' .. ARGV[i + 1]
              .. ':' .. ARGV[i + 2]
  local rseq = redis.call('GET', rid)
  if rseq then
    redis.call('DEL', rid, P .. 'r:' .. rseq)
    redis.call('ZREM', P .. 'rq:' .. owner, rseq)
    redis.call('ZREM', P .. 'rexp', rseq)
  end
end
return 1
"""

# ARGV: prefix, cutoff, batch, stamp, then SEQs in flight (not expired: the ack decides).
# Expires waiting mail older than cutoff (EXPIRED to its sender) and forgets
# delivered rows and receipts older than it. Returns {expired senders..., n forgotten}.
_PURGE = (
    "local P = ARGV[1]\n"
    + _ADD_RECEIPT
    + """
local cutoff, batch, stamp = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local inflight = {}
for i = 5, #ARGV do inflight[ARGV[i]] = true end
local senders = {}
local old = redis.call('ZRANGEBYSCORE', P .. 'mexp', '-inf', '(' .. cutoff,
                       'LIMIT', 0, batch + #ARGV - 4)
local n = 0
for _, seq in ipairs(old) do
  if n < batch and not inflight[seq] then
    local m = redis.call('HMGET', P .. 'm:' .. seq, 'recipient', 'sender', 'msg_id', 'state',
                         'size')
    if m[1] then
      unqueue(seq, m)
      redis.call('DEL', P .. 'm:' .. seq, P .. 'mid:' .. string.lower(m[2]) .. ':' .. m[3])
      add_receipt(m[2], m[1], m[3], 'EXPIRED', stamp)
      senders[#senders + 1] = m[2]
    else
      redis.call('ZREM', P .. 'mexp', seq)
    end
    n = n + 1
  end
end
local forgotten = 0
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', P .. 'mdone', '-inf', '(' .. cutoff,
                                'LIMIT', 0, batch)) do
  local m = redis.call('HMGET', P .. 'm:' .. seq, 'sender', 'msg_id')
  if m[1] then redis.call('DEL', P .. 'mid:' .. string.lower(m[1]) .. ':' .. m[2]) end
  redis.call('DEL', P .. 'm:' .. seq)
  redis.call('ZREM', P .. 'mdone', seq)
  forgotten = forgotten + 1
end
for _, rseq in ipairs(redis.call('ZRANGEBYSCORE', P .. 'rexp', '-inf', '(' .. cutoff,
                                 'LIMIT', 0, batch)) do
  local r = redis.call('HMGET', P .. 'r:' .. rseq, 'owner', 'peer', 'msg_id', 'flag')
  if r[1] then
    redis.call('DEL', P .. 'rid:' .. string.lower(r[1]) .. ':' .. string.lower(r[2]) .. ':'
               .. r[3] .. ':' .. r[4])
    redis.call('ZREM', P .. 'rq:' .. string.lower(r[1]), rseq)
  end
  redis.call('DEL', P .. 'r:' .. rseq)
  redis.call('ZREM', P .. 'rexp', rseq)
  forgotten = forgotten + 1
end
senders[#senders + 1] = forgotten
return senders
"""
)


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """That (sender, id) was stored before, for ``recipient``."""

    recipient: str


@dataclass(frozen=True, slots=True)
class Full:
    count: int
    nbytes: int


StoreOutcome = Stored | Duplicate | Full


class RedisMailStore:
    """The mailbox rows in Redis (async: every call is a round trip)."""

    def __init__(self, client: coredis.Redis[str], prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._store = client.register_script(_STORE)
        self._advance = client.register_script(_ADVANCE)
        self._drop_receipts = client.register_script(_DROP_RECEIPTS)
        self._purge = client.register_script(_PURGE)

    async def store_many(
        self, rows: list[tuple[str, str, str, str, int]], quota: tuple[int, int]
    ) -> list[StoreOutcome]:
        """Store ``(recipient, sender, msg_id, body, stamp)`` rows in one round
        trip (one fsync); the outcome of each, in order."""
        if not rows:
            return []
        p = self.prefix

        async def run() -> tuple[Any, ...]:
            async with self.r.pipeline(transaction=False) as pipe:
                for recipient, sender, msg_id, body, stamp in rows:
                    size = len(body.encode("utf-8"))
                    args = [p, recipient, sender, msg_id, body, stamp, size, *quota]
                    pipe.evalsha(self._store.sha, args=args)
            return pipe.results or ()

        try:
            results = await run()
        except coredis.exceptions.NoScriptError:
            # A Redis that started since (or never saw it) has no copy: send it, once.
            await guarded(lambda: self.r.script_load(self._store.script))
            results = await guarded(run)
        except (coredis.exceptions.RedisError, OSError, TimeoutError) as e:
            raise store_error(e) from e
        return [_outcome(v) for v in results]

    async def advance(
        self, me: str, keys: list[tuple[str, str]], state: int, stamp: int
    ) -> list[str]:
        """Messages ``keys`` (origin, id) reached ``me`` (state 1) or were read
        (2); the senders who got a receipt."""
        if not keys:
            return []
        args: list[str | int] = [self.prefix, me, state, stamp]
        for origin, msg_id in keys:
            args += [origin, msg_id]
        owners = await guarded(lambda: self._advance(args=args))
        return [str(o) for o in owners]

    async def drop_receipts(self, owner: str, receipts: list[tuple[str, str, str]]) -> None:
        if not receipts:
            return
        args: list[str] = [self.prefix, owner]
        for peer, msg_id, flag in receipts:
            args += [peer, msg_id, flag]
        await guarded(lambda: self._drop_receipts(args=args))

    async def waiting(self, recipient: str, after: int, limit: int) -> list[StoredMail]:
        rows = await self._rows_after("mq:", "m:", recipient, after, limit)
        return [
            StoredMail(
                seq,
                h["recipient"],
                h["sender"],
                h["msg_id"],
                int(h["stamp"]),
                int(h["state"]),
                h.get("body"),
            )
            for seq, h in rows
            if "body" in h
        ]

    async def receipts(self, owner: str, after: int, limit: int) -> list[StoredReceipt]:
        rows = await self._rows_after("rq:", "r:", owner, after, limit)
        return [
            StoredReceipt(seq, h["owner"], h["peer"], h["msg_id"], h["flag"], int(h["stamp"]))
            for seq, h in rows
            if "flag" in h
        ]

    async def _rows_after(
        self, queue: str, kind: str, name: str, after: int, limit: int
    ) -> list[tuple[int, dict[str, str]]]:
        """The rows ``name``'s queue holds after ``after`` (store order), at most ``limit``."""
        key = self.prefix + queue + name.lower()
        seqs = await guarded(
            lambda: self.r.zrange(
                key, f"({after}", "+inf", sortby=PureToken.BYSCORE, offset=0, count=limit
            )
        )
        return await self._rows(kind, [int(s) for s in seqs])

    async def _rows(self, kind: str, seqs: list[int]) -> list[tuple[int, dict[str, str]]]:
        if not seqs:
            return []

        async def run() -> tuple[Any, ...]:
            async with self.r.pipeline(transaction=False) as pipe:
                for seq in seqs:
                    pipe.hgetall(f"{self.prefix}{kind}{seq}")
            return pipe.results or ()

        return list(zip(seqs, await guarded(run), strict=True))

    async def usage(self, recipient: str) -> tuple[int, int]:
        got = await guarded(
            lambda: self.r.hmget(self.prefix + "mu:" + recipient.lower(), ["count", "bytes"])
        )
        return int(got[0] or 0), int(got[1] or 0)

    async def waiting_from(self, sender: str) -> list[tuple[str, int]]:
        got = await guarded(lambda: self.r.hgetall(self.prefix + "mfrom:" + sender.lower()))
        pairs = [(str(k), int(v)) for k, v in got.items() if int(v) > 0]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))

    async def purge(
        self, cutoff: int, batch: int, stamp: int, inflight: list[int]
    ) -> tuple[list[str], int]:
        """Expire, and forget old rows; (senders of expired mail, rows forgotten)."""
        args: list[str | int] = [self.prefix, cutoff, batch, stamp, *inflight]
        out = await guarded(lambda: self._purge(args=args))
        return [str(s) for s in out[:-1]], int(out[-1])


def _outcome(v: Any) -> StoreOutcome:
    if isinstance(v, Exception):
        raise v
    if v[0] == "ok":
        return Stored(int(v[1]))
    if v[0] == "dup":
        return Duplicate(str(v[1]))
    return Full(int(v[1]), int(v[2]))
